"""Per-layer weights: presets (InstantStyle) and user strings -> one multiplier per adapter layer.

InstantStyle (arXiv 2404.02733; diffusers `set_ip_adapter_scale` docs and the InstantStyle README) finds
that in SDXL the image prompt's style enters through up_blocks.0.attentions.1 and its layout/composition
through down_blocks.2.attentions.1. In ComfyUI keys these are ("output", 1) and ("input", 8) (ip_core's
layer map). InstantStyle defines no such blocks for SD1.5, so the presets refuse SD1.5 instead of guessing.
"""
from __future__ import annotations

import math

from ..ip_core import errors

IPAdapterError = errors.IPAdapterError

STYLE_BLOCK = "up_blocks.0.attentions.1"
COMPOSITION_BLOCK = "down_blocks.2.attentions.1"
PRESETS = {
    "all layers": None,
    "style only": (STYLE_BLOCK,),
    "composition only": (COMPOSITION_BLOCK,),
    "style and composition": (STYLE_BLOCK, COMPOSITION_BLOCK),
}


def _block_names(spec) -> tuple:
    """Names a user may use for a layer: diffusers prefix and ComfyUI block ("output.1", "output.1.3")."""
    names = [spec.diffusers_name]
    if spec.comfy_block is not None:
        b, n = spec.comfy_block
        names += [f"{b}.{n}", f"{b}.{n}.{spec.transformer_index}"]
    return tuple(names)


def _matches(spec, name: str) -> bool:
    if name == "*":
        return True
    if name.isdigit():
        return spec.index == int(name)
    for full in _block_names(spec):
        if full == name or full.startswith(name + "."):
            return True
    return False


def layer_weights(layers, preset: str = "all layers", custom: str = "", model_name: str = "") -> list:
    """One float per layer (in adapter layer order).

    custom, when not blank, wins over the preset. Two forms:
      "1, 1, 0.5, ..."            exactly one number per layer;
      "output.1=1, input.8=0.5"   named blocks (ComfyUI "block.number[.transformer]", a diffusers prefix
                                  such as "up_blocks.0.attentions.1", a layer index, or "*" for all);
                                  layers not named get 0, later entries override earlier ones.
    """
    layers = tuple(layers)
    n = len(layers)
    custom = (custom or "").strip()
    if custom:
        return _parse_custom(layers, custom)
    if preset not in PRESETS:
        raise IPAdapterError(f"unknown layer weight preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    blocks = PRESETS[preset]
    if blocks is None:
        return [1.0] * n
    if not any(s.diffusers_name.startswith(STYLE_BLOCK) for s in layers):
        raise IPAdapterError(
            f"the {preset!r} preset follows InstantStyle, which defines style/composition blocks for SDXL only; "
            f"this adapter is for {model_name or 'another model'}. Use 'all layers', or write per-layer weights in "
            "layer_weights_custom (e.g. 'output.4=1, output.5=1')."
        )
    return [1.0 if any(s.diffusers_name.startswith(b + ".") for b in blocks) else 0.0 for s in layers]


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise IPAdapterError(f"layer weight {where}: {text!r} is not a number; write e.g. 0.5") from None
    if not math.isfinite(value):
        raise IPAdapterError(f"layer weight {where} is {text!r}; weights must be finite numbers (no NaN/inf).")
    return value


def _parse_custom(layers, custom: str) -> list:
    n = len(layers)
    parts = [p.strip() for p in custom.replace("\n", ",").replace(";", ",").split(",") if p.strip()]
    if all("=" not in p and ":" not in p for p in parts):
        if len(parts) != n:
            raise IPAdapterError(
                f"layer_weights_custom has {len(parts)} numbers but this adapter has {n} layers; give exactly {n} "
                "comma-separated numbers, or name blocks like 'output.1=1, input.8=0.5'."
            )
        return [_number(p, f"#{i}") for i, p in enumerate(parts)]
    weights = [0.0] * n
    for p in parts:
        sep = "=" if "=" in p else ":"
        name, _, value = p.partition(sep)
        name = name.strip().replace(" ", ".")
        value = _number(value.strip(), f"for {name!r}")
        hit = [s.index for s in layers if _matches(s, name)]
        if not hit:
            known = sorted({".".join(map(str, s.comfy_block)) for s in layers if s.comfy_block})
            raise IPAdapterError(
                f"layer_weights_custom names {name!r}, which is no layer of this adapter; known blocks: "
                f"{', '.join(known) or 'layer indexes 0..' + str(n - 1)} (or diffusers names, '*' for all)."
            )
        for i in hit:
            weights[i] = value
    return weights
