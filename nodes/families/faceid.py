"""FaceID nodes: face tokens (Encode Face) only, PlusV2's shortcut scale, and the file's LoRA patched into the
UNet's weights through the host; the image prompt itself goes through the base's attn2 replace."""
from __future__ import annotations

from ...ip_core.errors import AdapterMismatchError, IPAdapterError
from ...ip_core.families.faceid import FacePromptEmbeds
from ...ip_core.lora import lora_targets
from .. import host
from ..common import LoadedAdapter
from .base import NodeFamily


class FaceIDFamily(NodeFamily):
    NAME = "faceid"
    APPLY_INPUTS = ("faceid_lora_strength", "weight_faceidv2")

    def apply_inputs(self, config) -> tuple:
        """The LoRA strength where the file has a LoRA; the shortcut scale for FaceID Plus (PlusV2)."""
        return (("faceid_lora_strength",) if config.lora_rank else ()) + (
            ("weight_faceidv2",) if config.variant == "faceid-plus" else ())

    def face_embeds(self, a, embeds, weight_faceidv2: float):
        """FaceID adapters take face tokens only; PlusV2 embeds get their shortcut scale."""
        if not isinstance(embeds, FacePromptEmbeds):
            raise AdapterMismatchError(
                f"{a.name} is a FaceID adapter ({a.config.description}), but the embeds are image prompt tokens "
                f"({embeds.description}). Encode the face with Encode Face (InsightFace) and this adapter."
            )
        return embeds.with_faceidv2(weight_faceidv2)

    def finish(self, model, a, faceid_lora_strength: float):
        return apply_faceid_lora(model, a, faceid_lora_strength)


def apply_faceid_lora(model, a: LoadedAdapter, strength: float):
    """Patch the FaceID file's LoRA into the (already cloned) model's UNet weights. Strength 0: nothing added."""
    targets = lora_targets(a.adapter)
    if not targets or strength == 0:
        return model
    shapes = host.unet_weight_shapes(model)
    wrong, absent = [], []
    for t in targets:
        if t.ldm_key is None:
            raise AdapterMismatchError(f"{a.name}: this FaceID adapter was made for a custom UNet; its LoRA has no ComfyUI weight names.")
        have = shapes.get(t.ldm_key)
        if have is None:
            absent.append(f"{t.ldm_key}: the model has no such weight")
        elif have != t.shape:
            wrong.append(f"{t.ldm_key}: model {list(have)}, LoRA {list(t.shape)}")
    wrong += absent  # shape differences first: they show the two model families best
    if wrong:
        raise AdapterMismatchError(
            f"the LoRA in {a.name} ({a.config.base_model_name}, {a.config.num_layers} layers) does not fit the model's "
            f"UNet: {len(wrong)} of {len(targets)} weights differ (e.g. {'; '.join(wrong[:2])}). Use the FaceID file "
            f"for this model family (SD1.5 files end in _sd15, SDXL files in _sdxl), or set faceid_lora_strength to 0."
        )
    pairs = {t.ldm_key: (t.lora.up.weight.detach(), t.lora.down.weight.detach()) for t in targets}
    added = host.add_unet_lora(model, pairs, strength)
    if len(added) != len(pairs):
        raise IPAdapterError(f"{a.name}: the host accepted {len(added)} of {len(pairs)} LoRA weight patches.")
    return model


FAMILY = FaceIDFamily()
