"""Kolors nodes: Kolors plus is an SDXL-shaped adapter (the base's hooks); Kolors FaceID-Plus takes face tokens
(as FaceID) whose 4096-wide tokens reach K'/V' through the model's own encoder_hid_proj, scaled by weight_kolors."""
from __future__ import annotations

from ...ip_core.embeds import ImagePromptEmbeds
from ...ip_core.errors import AdapterMismatchError
from ...ip_core.families.kolors import kolors_context_embeds
from .. import host
from ..common import LoadedAdapter, with_advice
from .base import NodeFamily
from .faceid import FAMILY as FACEID


class KolorsFamily(NodeFamily):
    NAME = "kolors"
    APPLY_INPUTS = ("weight_kolors",)

    def apply_inputs(self, config) -> tuple:
        """Kolors FaceID-Plus: the encoder_hid_proj scale and the PlusV2 shortcut scale (no LoRA in its files)."""
        return FACEID.apply_inputs(config) + (("weight_kolors",) if config.token_dim else ())

    def face_embeds(self, a, embeds, weight_faceidv2: float):
        if a.config.is_faceid:
            return FACEID.face_embeds(a, embeds, weight_faceidv2)
        return super().face_embeds(a, embeds, weight_faceidv2)

    def context_embeds(self, model, a, embeds, weight_kolors: float):
        return kolors_context_for(model, a, embeds, weight_kolors)

    def finish(self, model, a, faceid_lora_strength: float):
        return FACEID.finish(model, a, faceid_lora_strength)  # released Kolors FaceID files carry no LoRA


def kolors_context_for(model, a: LoadedAdapter, embeds: ImagePromptEmbeds, weight_kolors: float) -> ImagePromptEmbeds:
    """Kolors FaceID-Plus: the tokens through the model's own encoder_hid_proj, scaled by weight_kolors (the widely
    used pack's IPAdapter FaceID Kolors). Other adapters: the embeds as they are."""
    if not a.config.token_dim:
        return embeds
    weight, bias = host.encoder_hid_proj(model)
    try:
        return kolors_context_embeds(a.config, embeds, weight, bias, weight_kolors, model_label="the model's UNet")
    except AdapterMismatchError as e:
        raise with_advice(e, f"{a.name} needs a Kolors model: load the Kolors UNet with a Kolors loader that keeps "
                             "its encoder_hid_proj (e.g. ComfyUI-Kolors-MZ's Kolors UNET loader).") from None


FAMILY = KolorsFamily()
