"""Where the adapter's per-layer weights go.

Released files number the cross-attention layers by their position n in diffusers' `unet.attn_processors`
(self-attention processors included, so cross-attention layers are the odd n). ComfyUI addresses the same
layers by (block, number, transformer_index). Both orders are "down, up, mid" for diffusers and
"input, output, middle" for ComfyUI, so layer i of one is layer i of the other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

SD15_CONTEXT_DIM = 768
SDXL_CONTEXT_DIM = 2048


@dataclass(frozen=True)
class LayerSpec:
    index: int
    key_number: int
    diffusers_name: str
    comfy_block: Optional[tuple]
    transformer_index: int
    hidden_size: int

    @property
    def comfy_key(self) -> Optional[tuple]:
        """The (block, number, transformer_index) key ComfyUI looks up first for attn2 replace patches."""
        if self.comfy_block is None:
            return None
        return (self.comfy_block[0], self.comfy_block[1], self.transformer_index)

    @property
    def diffusers_block(self) -> str:
        """The diffusers transformer block holding this layer (its attn1 is the self-attention before it)."""
        return self.diffusers_name[: -len(".attn2.processor")] if self.diffusers_name else ""

    @property
    def ldm_block(self) -> Optional[str]:
        """The same transformer block in the original SD/SGM UNet naming, which ComfyUI's UNet keeps.

        The SpatialTransformer is module 1 of its input/output/middle block (module 0 is the ResBlock).
        """
        if self.comfy_block is None:
            return None
        kind, number = self.comfy_block
        block = "middle_block.1" if kind == "middle" else f"{kind}_blocks.{number}.1"
        return f"{block}.transformer_blocks.{self.transformer_index}"


def _build(groups) -> tuple[LayerSpec, ...]:
    """groups: (diffusers attention prefix, comfy block, transformer count, hidden size), in processor order."""
    specs = []
    for prefix, comfy_block, depth, hidden in groups:
        for t in range(depth):
            i = len(specs)
            specs.append(
                LayerSpec(
                    index=i,
                    key_number=2 * i + 1,
                    diffusers_name=f"{prefix}.transformer_blocks.{t}.attn2.processor",
                    comfy_block=comfy_block,
                    transformer_index=t,
                    hidden_size=hidden,
                )
            )
    return tuple(specs)


# diffusers registers down_blocks, then up_blocks, then mid_block, so the middle layer is last (n = 31).
# ComfyUI: SpatialTransformers sit in input blocks 1,2,4,5,7,8, output blocks 3..11 and the middle block,
# which the host addresses as ("middle", 0) (comfy/ldm/modules/diffusionmodules/openaimodel.py).
_SD15 = _build(
    [
        ("down_blocks.0.attentions.0", ("input", 1), 1, 320),
        ("down_blocks.0.attentions.1", ("input", 2), 1, 320),
        ("down_blocks.1.attentions.0", ("input", 4), 1, 640),
        ("down_blocks.1.attentions.1", ("input", 5), 1, 640),
        ("down_blocks.2.attentions.0", ("input", 7), 1, 1280),
        ("down_blocks.2.attentions.1", ("input", 8), 1, 1280),
        ("up_blocks.1.attentions.0", ("output", 3), 1, 1280),
        ("up_blocks.1.attentions.1", ("output", 4), 1, 1280),
        ("up_blocks.1.attentions.2", ("output", 5), 1, 1280),
        ("up_blocks.2.attentions.0", ("output", 6), 1, 640),
        ("up_blocks.2.attentions.1", ("output", 7), 1, 640),
        ("up_blocks.2.attentions.2", ("output", 8), 1, 640),
        ("up_blocks.3.attentions.0", ("output", 9), 1, 320),
        ("up_blocks.3.attentions.1", ("output", 10), 1, 320),
        ("up_blocks.3.attentions.2", ("output", 11), 1, 320),
        ("mid_block.attentions.0", ("middle", 0), 1, 1280),
    ]
)

_SDXL = _build(
    [
        ("down_blocks.1.attentions.0", ("input", 4), 2, 640),
        ("down_blocks.1.attentions.1", ("input", 5), 2, 640),
        ("down_blocks.2.attentions.0", ("input", 7), 10, 1280),
        ("down_blocks.2.attentions.1", ("input", 8), 10, 1280),
        ("up_blocks.0.attentions.0", ("output", 0), 10, 1280),
        ("up_blocks.0.attentions.1", ("output", 1), 10, 1280),
        ("up_blocks.0.attentions.2", ("output", 2), 10, 1280),
        ("up_blocks.1.attentions.0", ("output", 3), 2, 640),
        ("up_blocks.1.attentions.1", ("output", 4), 2, 640),
        ("up_blocks.1.attentions.2", ("output", 5), 2, 640),
        ("mid_block.attentions.0", ("middle", 0), 10, 1280),
    ]
)

_BY_MODEL = {"sd15": _SD15, "sdxl": _SDXL}
BASE_MODEL_NAMES = {"sd15": "SD1.5", "sdxl": "SDXL", "custom": "custom UNet"}
CONTEXT_DIMS = {"sd15": SD15_CONTEXT_DIM, "sdxl": SDXL_CONTEXT_DIM}


def layer_specs(base_model: str) -> tuple[LayerSpec, ...]:
    """The cross-attention layers of a released base model family ("sd15": 16 layers, "sdxl": 70)."""
    try:
        return _BY_MODEL[base_model]
    except KeyError:
        raise ValueError(f"unknown base model {base_model!r}; known: {sorted(_BY_MODEL)}") from None


def custom_layer_specs(key_numbers, hidden_sizes) -> tuple[LayerSpec, ...]:
    """Layers of a UNet that is neither SD1.5 nor SDXL (tiny test and demo models): no host names."""
    return tuple(
        LayerSpec(index=i, key_number=int(n), diffusers_name="", comfy_block=None, transformer_index=0, hidden_size=int(h))
        for i, (n, h) in enumerate(zip(key_numbers, hidden_sizes))
    )


def layer_specs_from_unet(unet) -> tuple[LayerSpec, ...]:
    """Cross-attention layers of a diffusers UNet, numbered as released files number them.

    Duck-typed (no diffusers import): attention modules are the ones diffusers lists in `attn_processors`,
    found in the same pre-order walk; cross-attention ones are named `...attn2`.
    """
    specs = []
    position = 0
    for name, module in unet.named_modules():
        if not hasattr(module, "get_processor"):
            continue
        if name.endswith("attn2"):
            hidden = module.to_k.out_features
            specs.append(
                LayerSpec(
                    index=len(specs),
                    key_number=position,
                    diffusers_name=f"{name}.processor",
                    comfy_block=None,
                    transformer_index=0,
                    hidden_size=hidden,
                )
            )
        position += 1
    if not specs:
        raise ValueError("the UNet has no cross-attention (attn2) layers: an IP-Adapter needs cross-attention")
    # A real SD1.5/SDXL UNet gets the released tables, which also carry the ComfyUI keys.
    for known in _BY_MODEL.values():
        if [(s.key_number, s.hidden_size, s.diffusers_name) for s in specs] == [
            (k.key_number, k.hidden_size, k.diffusers_name) for k in known
        ]:
            return known
    return tuple(specs)
