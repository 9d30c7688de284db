"""Per-layer weights: presets and user strings -> one multiplier per adapter layer.

The presets are the style / composition tables of ip_core.weight_types at weight 1 (for SDXL these are
InstantStyle's blocks: style in ("output", 1) = up_blocks.0.attentions.1, composition in ("input", 8) =
down_blocks.2.attentions.1; for SD1.5 the widely used pack's SD1.5 tables). The multiplier applies on top of
the weight type's per-layer weights.
"""
from __future__ import annotations

import re

from ..ip_core import errors, layers as ip_layers, weight_types

IPAdapterError = errors.IPAdapterError

# preset -> the weight type whose table (at weight 1, composition weight 1) it is; None: every layer 1
PRESETS = {
    "all layers": None,
    "style only": "style transfer",
    "composition only": "composition",
    "style and composition": "style and composition",
}
# a layer multiplier's range: the final lambda is weight (-1..5) times this
WEIGHT_RANGE = (-5.0, 5.0)
# ASCII decimal numbers only ("1", "-0.5", ".25", "2e-1"); float() would also take "1_0", "inf", "٣"
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INDEX = re.compile(r"[0-9]+")
_HOST_INDEX = re.compile(r"t([0-9]+)")


def family_of(layers):
    """"sd15" / "sdxl" when `layers` are a released layout, else None (custom test UNets)."""
    layers = tuple(layers)
    for family in weight_types.HOST_TRANSFORMER_INDEX:
        if layers == ip_layers.layer_specs(family):
            return family
    return None


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
    for full in _block_names(spec):
        if full == name or full.startswith(name + "."):
            return True
    return False


def layer_weights(layers, preset: str = "all layers", custom: str = "", model_name: str = "") -> list:
    """One float per layer (in adapter layer order).

    custom, when not blank, wins over the preset. Forms:
      "1, 1, 0.5, ..."            exactly one number per layer;
      "output.1=1, input.8=0.5"   named blocks (ComfyUI "block.number[.transformer]", a diffusers prefix
                                  such as "up_blocks.0.attentions.1", "*" for all, "5=0.5" our layer 5,
                                  "t6:1" the host's transformer index 6, the widely used pack's numbering);
                                  layers not named get 0, later entries override earlier ones.
      "6:1, 3:0.5"                the pack's own strings: taken when both readings (host transformer index,
                                  our layer index) name the same layers, refused with both readings otherwise.
    """
    layers = tuple(layers)
    n = len(layers)
    custom = (custom or "").strip()
    if custom:
        return _parse_custom(layers, custom)
    errors.check_choice(preset, "layer weight preset", PRESETS)
    if PRESETS[preset] is None:
        return [1.0] * n
    family = family_of(layers)
    if family is None:
        raise IPAdapterError(
            f"the {preset!r} preset is defined for SD1.5 and SDXL layers; this adapter is for "
            f"{model_name or 'another model'}. Use 'all layers', or write per-layer weights in layer_weights_custom."
        )
    return [p.weight for p in weight_types.layer_plan(family, layers, PRESETS[preset], 1.0)]


def _number(text: str, where: str) -> float:
    low, high = WEIGHT_RANGE
    if not _NUMBER.fullmatch(text):
        raise IPAdapterError(
            f"layer weight {where}: {text!r} is not a number; write a decimal number from {low:g} to {high:g}, e.g. 0.5"
        )
    value = float(text)
    if not (low <= value <= high):
        raise IPAdapterError(f"layer weight {where} is {text}; layer weights must lie from {low:g} to {high:g}.")
    return value


def _describe(layers, hit) -> str:
    blocks = []
    for i in hit:
        b = layers[i].comfy_block
        name = f"{b[0]}.{b[1]}" if b else f"layer {i}"
        if name not in blocks:
            blocks.append(name)
    return ", ".join(blocks) or "nothing"


def _host_hits(layers, family, t: int, entry: str):
    if family is None:
        raise IPAdapterError(
            f"layer_weights_custom entry {entry!r} uses the host's transformer index, which exists for SD1.5 and "
            "SDXL layers only; name layers by index with '=' (e.g. '3=0.5')."
        )
    n = weight_types.BLOCK_COUNTS[family]
    if t >= n:
        raise IPAdapterError(
            f"layer_weights_custom entry {entry!r}: transformer index {t} does not exist; this model has {n} "
            f"transformer blocks (0..{n - 1})."
        )
    return [s.index for s in layers if weight_types.host_transformer_index(family, s) == t]


def _parse_custom(layers, custom: str) -> list:
    n = len(layers)
    family = family_of(layers)
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
        host_index = _HOST_INDEX.fullmatch(name)
        if host_index:
            hit = _host_hits(layers, family, int(host_index.group(1)), p)
        elif _INDEX.fullmatch(name):
            i = int(name)
            ours = [i] if i < n else []
            if sep == ":" and family is not None:
                # the widely used pack writes "index:weight" by the host's transformer index
                pack = _host_hits(layers, family, i, p) if i < weight_types.BLOCK_COUNTS[family] else []
                if pack != ours:
                    raise IPAdapterError(
                        f"layer_weights_custom entry {p!r} is ambiguous: as the widely used pack's transformer index "
                        f"{i} it means {_describe(layers, pack)}, as our layer index {i} it means "
                        f"{_describe(layers, ours)}. Write 't{i}:{value:g}' for the transformer index or "
                        f"'{i}={value:g}' for our layer index."
                    )
            if not ours:
                raise IPAdapterError(f"layer_weights_custom names layer {i}, but this adapter has layers 0..{n - 1}.")
            hit = ours
        else:
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
