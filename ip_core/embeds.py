"""From encoder outputs to the image prompt tokens an adapter attends to (cond and uncond).

Unconditional features follow the official code exactly: for the base adapter, zeros of the CLIP image
embedding *before* the projection (so the uncond tokens are LayerNorm(proj bias), not zeros); for plus and
full-face, the encoder's penultimate hidden states of an all-zero image in normalised pixel space.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .config import AdapterConfig, encoder_name_for
from .errors import AdapterMismatchError, IPAdapterError

COMBINE_MODES = ("concat", "average", "norm average", "batch")
# Encoders for which released adapters exist, by their weights' familiar file names.
ENCODER_FILES = {
    "ViT-H/14": "CLIP-ViT-H-14-laion2B-s32B-b79K",
    "ViT-bigG/14": "CLIP-ViT-bigG-14-laion2B-39B-b160k",
}


def _remedy(config: AdapterConfig) -> str:
    name = ENCODER_FILES.get(config.encoder_name)
    return f"load {name} as the CLIP vision model" if name else "load the image encoder this adapter was trained with"


def features_for(config: AdapterConfig, encoder_output, encoder_label: str = "the image encoder") -> torch.Tensor:
    """Pick the encoder output the adapter was trained on and check its width.

    `encoder_output` has `image_embeds` [B, E] and `penultimate_hidden_states` [B, T, H] (ip_core.encoders
    EncoderOutput, or the host's equivalent).
    """
    features = getattr(encoder_output, config.encoder_output, None)
    if features is None:
        raise AdapterMismatchError(
            f"{config.description}, but {encoder_label} gives no {config.encoder_output}; {_remedy(config)}."
        )
    width = features.shape[-1]
    if width != config.encoder_width:
        actual = encoder_name_for(config.encoder_output, width)
        raise AdapterMismatchError(
            f"adapter/encoder mismatch: the adapter ({config.description}) gets {config.encoder_output} of width "
            f"{width} from {encoder_label} ({actual if actual != 'unknown' else 'an unknown encoder'}); "
            f"{_remedy(config)}."
        )
    expected_ndim = 2 if config.encoder_output == "image_embeds" else 3
    if features.ndim != expected_ndim:
        raise AdapterMismatchError(f"{config.encoder_output} from {encoder_label} has shape {list(features.shape)}, expected {expected_ndim} dims")
    return features


def unconditional_features(
    config: AdapterConfig,
    features: torch.Tensor,
    encode_pixels: Optional[Callable[[torch.Tensor], object]] = None,
    image_size: int = 224,
) -> torch.Tensor:
    """The features of "no image", shaped like `features`, as the official code computes them.

    encode_pixels: maps normalised pixel values [B, 3, S, S] to an encoder output; needed for plus and
    full-face adapters, whose uncond goes through the encoder.
    """
    if config.encoder_output == "image_embeds":
        return torch.zeros_like(features)
    if encode_pixels is None:
        raise ValueError(f"{config.description}: the unconditional embedding needs the image encoder (encode_pixels)")
    zeros = torch.zeros(1, 3, image_size, image_size, device=features.device, dtype=features.dtype)
    uncond = features_for(config, encode_pixels(zeros)).to(features.dtype)
    return uncond.expand(features.shape[0], *uncond.shape[1:]).clone()


def combine_features(features: torch.Tensor, mode: str) -> torch.Tensor:
    """Merge several references before the projection ("average", "norm average") or keep them."""
    if mode in ("concat", "batch"):
        return features
    if mode == "average":
        return features.mean(dim=0, keepdim=True)
    if mode == "norm average":
        # Average directions, keep the typical length: one strong reference cannot dominate.
        norms = features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return (features / norms).mean(dim=0, keepdim=True) * norms.mean(dim=0, keepdim=True)
    raise ValueError(f"unknown combine mode {mode!r}; choose one of {COMBINE_MODES}")


def _arrange_tokens(tokens: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "concat" and tokens.shape[0] > 1:
        # All references side by side as one longer prompt: [1, R * N, ctx].
        return tokens.reshape(1, -1, tokens.shape[-1])
    return tokens


def _project_rows(adapter, features: torch.Tensor) -> torch.Tensor:
    """Each reference projected on its own: its tokens are the same numbers whatever else is in the batch
    (a batched matmul may round differently), so one reference per frame equals a shared reference exactly."""
    if features.shape[0] == 1:
        return adapter.project(features)
    return torch.cat([adapter.project(features[r:r + 1]) for r in range(features.shape[0])])


@dataclass
class ImagePromptEmbeds:
    """Image prompt tokens for one adapter. cond / uncond: [R, N, ctx]; R = 1, or one per batch item.

    region_masks (tiled references): None, or [R, H, W]: then row r is a separate image prompt that acts
    only where region_masks[r] is 1 (stretched over the image); the rows add up (ip_core.tiles).
    """

    cond: torch.Tensor
    uncond: torch.Tensor
    signature: str
    description: str
    encoder_name: str = "unknown"
    adapter_fingerprint: str = ""
    region_masks: Optional[torch.Tensor] = None

    @property
    def per_batch_item(self) -> bool:
        return self.cond.shape[0] > 1

    def to(self, device=None, dtype=None) -> "ImagePromptEmbeds":
        return ImagePromptEmbeds(self.cond.to(device=device, dtype=dtype), self.uncond.to(device=device, dtype=dtype),
                                 self.signature, self.description, self.encoder_name, self.adapter_fingerprint,
                                 self.region_masks)

    def regions(self) -> list:
        """[(embeds of one region, its mask [H, W])] for tiled embeds; [(self, None)] otherwise."""
        if self.region_masks is None:
            return [(self, None)]
        return [(ImagePromptEmbeds(self.cond[r:r + 1], self.uncond[r:r + 1], self.signature, self.description,
                                   self.encoder_name, self.adapter_fingerprint), self.region_masks[r])
                for r in range(self.cond.shape[0])]

    def state_dict(self) -> dict:
        d = {"cond": self.cond, "uncond": self.uncond}
        if self.region_masks is not None:
            d["region_masks"] = self.region_masks
        return d

    def metadata(self) -> dict:
        return {"signature": self.signature, "description": self.description, "encoder_name": self.encoder_name,
                "adapter_fingerprint": self.adapter_fingerprint}


def build_image_prompt(
    adapter,
    cond_features: torch.Tensor,
    uncond_features: torch.Tensor,
    combine: str = "concat",
    encoder_name: str = "unknown",
) -> ImagePromptEmbeds:
    """Project cond / uncond features into tokens, merging references the same way for both."""
    if cond_features.shape[0] == 0:
        raise IPAdapterError("the image prompt is an empty batch: give at least one reference image")
    if not torch.isfinite(cond_features).all():
        raise IPAdapterError("the image encoder returned NaN or infinite features; check the input image and the CLIP vision model")
    if uncond_features.shape[0] == 1 and cond_features.shape[0] > 1:
        uncond_features = uncond_features.expand(cond_features.shape[0], *uncond_features.shape[1:])
    if uncond_features.shape[0] != cond_features.shape[0]:
        raise IPAdapterError(
            f"{uncond_features.shape[0]} negative images for {cond_features.shape[0]} reference images; "
            "give one negative image, or one per reference"
        )
    param = next(adapter.parameters())
    with torch.no_grad():
        cond = _project_rows(adapter, combine_features(cond_features, combine).to(param.device, param.dtype))
        uncond = _project_rows(adapter, combine_features(uncond_features, combine).to(param.device, param.dtype))
    cond, uncond = _arrange_tokens(cond, combine), _arrange_tokens(uncond, combine)
    c = adapter.config
    return ImagePromptEmbeds(cond, uncond, c.signature, c.description, encoder_name, adapter.fingerprint())


def check_embeds_fit(adapter, embeds: ImagePromptEmbeds) -> None:
    """Embeds must come from this adapter's projection: same layout, and (given an IPAdapter) same weights."""
    config = adapter if isinstance(adapter, AdapterConfig) else adapter.config
    other_weights = (
        not isinstance(adapter, AdapterConfig)
        and embeds.adapter_fingerprint
        and embeds.adapter_fingerprint != adapter.fingerprint()
    )
    if embeds.signature != config.signature or other_weights:
        same = " (same layout, other weights)" if embeds.signature == config.signature else ""
        raise AdapterMismatchError(
            f"these image prompt embeds were made for another adapter{same} ({embeds.description}); this adapter is "
            f"{config.description}. Encode the image with the same Load IPAdapter output you apply."
        )
