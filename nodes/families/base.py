"""What every model family's nodes do unless its module says otherwise: the SD UNet's way (cross-attention
layers patched through attn2 replace, CLIP image prompt embeds, the official "no image"). A family module
subclasses NodeFamily and overrides the hooks that differ; Apply and Encode call only these hooks."""
from __future__ import annotations

import torch

from ...ip_core.embeds import unconditional_features
from ...ip_core.errors import AdapterMismatchError
from ...ip_core.families.faceid import FacePromptEmbeds
from .. import host
from ..patch import AdapterBranch, patch_model


class NoImage:
    """The ways Encode can make "no image" features for one call (what a family's no_image_features picks from)."""

    def __init__(self, config, clip_vision, black_image, features, legacy: bool = False, progress=None):
        """black_image(): features of a black image; features(encoder output): the adapter's features of it."""
        self.config, self.clip_vision, self.legacy, self.progress = config, clip_vision, legacy, progress
        self._black_image, self._features = black_image, features

    @property
    def image_size(self) -> int:
        return int(getattr(self.clip_vision, "image_size", 224))

    def black_image(self) -> torch.Tensor:
        """A black image through the encoder (features [1, ...])."""
        return self._black_image()

    def official(self, cond: torch.Tensor) -> torch.Tensor:
        """The official recipe: zero features, or an all-zero normalised image through the encoder."""
        out = unconditional_features(self.config, cond, encode_pixels=lambda px: host.encode_pixels(self.clip_vision, px),
                                     image_size=self.image_size)
        self._step()
        return out

    def pack_black(self, cond: torch.Tensor) -> torch.Tensor:
        """The widely used pack's "no image" for plus / full-face: a black picture through clip_preprocess."""
        black = torch.zeros(1, self.image_size, self.image_size, 3)
        uncond = self._features(host.encode_pixels(self.clip_vision, host.clip_preprocess(black, self.image_size)))
        out = uncond.expand(cond.shape[0], *uncond.shape[1:]).clone()
        self._step()
        return out

    def _step(self):
        if self.progress is not None:
            self.progress.update(1)


class NodeFamily:
    NAME = ""
    # Apply IPAdapter's inputs that only this family's adapters read (the web extension hides them elsewhere)
    APPLY_INPUTS: tuple = ()

    def apply_inputs(self, config) -> tuple:
        """Which of APPLY_INPUTS the adapter of `config` reads."""
        return ()

    def check_model(self, a, model) -> None:
        """The host model against the adapter, beyond the base model check (block counts, widths)."""

    def check_encoder(self, config, encoded) -> None:
        """The connected encoder's output against what the adapter projects, before features are picked."""

    def no_image_features(self, config, cond: torch.Tensor, no_image: NoImage) -> torch.Tensor:
        """Features of "no image" shaped like cond (no negative image given)."""
        if no_image.legacy and not config.zero_features_uncond:
            return no_image.pack_black(cond)
        return no_image.official(cond)

    def face_embeds(self, a, embeds, weight_faceidv2: float):
        """The embeds Apply gets, checked for this adapter: face tokens belong to FaceID adapters only."""
        if isinstance(embeds, FacePromptEmbeds):
            raise AdapterMismatchError(
                f"the embeds are FaceID face tokens ({embeds.description}), but {a.name} is not a FaceID adapter "
                f"({a.config.description}). Apply them with the FaceID adapter they were encoded with, or encode a "
                "reference image with Encode Image Prompt for this adapter."
            )
        return embeds

    def context_embeds(self, model, a, embeds, weight_kolors: float):
        """The tokens K'/V' read, from the projection's tokens (Kolors FaceID maps them through the model)."""
        return embeds

    def patch(self, model, a, tokens, weights, window, mask, label, frame_weights, plan, composition_embeds,
              embeds_scaling):
        """A clone of `model` with one image prompt branch in every layer the adapter has (attn2 replace)."""
        patched, _ = patch_model(model, self.branch(a, tokens, weights, window, mask, label, frame_weights, plan,
                                                    composition_embeds, embeds_scaling), a.adapter.layers)
        return patched

    @staticmethod
    def branch(a, tokens, weights, window, mask, label, frame_weights, plan, composition_embeds, embeds_scaling):
        return AdapterBranch(a.adapter, tokens, weights, window, mask, label=label, frame_weights=frame_weights,
                             swap_layers=[i for i, p in enumerate(plan) if p.swap],
                             composition_layers=[i for i, p in enumerate(plan) if p.composition],
                             composition_embeds=composition_embeds, embeds_scaling=embeds_scaling)

    def finish(self, model, a, faceid_lora_strength: float):
        """Last change of the patched model (FaceID: the file's LoRA on the UNet weights)."""
        return model
