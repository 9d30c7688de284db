"""Weight types: how one Apply weight spreads over the cross-attention layers (the widely used pack's options).

The widely used ComfyUI pack defines its weight types per *host transformer index*: the running count of
transformer blocks that ComfyUI's UNet keeps in extra_options["transformer_index"] while it walks input ->
middle -> output (comfy/ldm/modules/diffusionmodules/openaimodel.py). SD1.5 has 16 such blocks (one layer
each); SDXL has 11 (each with 2 or 10 transformer layers, which share the block's weight). Our layers are
numbered as released files number them (down, up, mid): HOST_TRANSFORMER_INDEX translates, one table.

Everything here is resolved once per Apply: a LayerPlan per layer, keyed by our layer index.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .errors import IPAdapterError, check_choice

WEIGHT_TYPES = (
    "linear", "ease in", "ease out", "ease in-out", "reverse in-out", "weak input", "weak output", "weak middle",
    "strong middle", "style transfer", "composition", "strong style transfer", "style and composition",
    "style transfer precise", "composition precise",
)
EMBEDS_SCALINGS = ("V only", "K+V", "K+V w/ C penalty", "K+mean(V) w/ C penalty")

# (block, number) -> the host's transformer_index: transformer blocks counted in call order, input blocks,
# then the middle block, then output blocks.
HOST_TRANSFORMER_INDEX = {
    "sd15": {
        ("input", 1): 0, ("input", 2): 1, ("input", 4): 2, ("input", 5): 3, ("input", 7): 4, ("input", 8): 5,
        ("middle", 0): 6,
        ("output", 3): 7, ("output", 4): 8, ("output", 5): 9, ("output", 6): 10, ("output", 7): 11,
        ("output", 8): 12, ("output", 9): 13, ("output", 10): 14, ("output", 11): 15,
    },
    "sdxl": {
        ("input", 4): 0, ("input", 5): 1, ("input", 7): 2, ("input", 8): 3,
        ("middle", 0): 4,
        ("output", 0): 5, ("output", 1): 6, ("output", 2): 7, ("output", 3): 8, ("output", 4): 9, ("output", 5): 10,
    },
}
BLOCK_COUNTS = {family: len(t) for family, t in HOST_TRANSFORMER_INDEX.items()}

# Where composition (layout) lives, by host transformer index: SDXL input 8 (InstantStyle's
# down_blocks.2.attentions.1); SD1.5 input 7 and 8 (the pack's SD1.5 table). The rest of the style tables
# below are the pack's too; "style": the blocks that carry style.
COMPOSITION_INDEXES = {"sd15": (4, 5), "sdxl": (3,)}
_STYLE_INDEXES = {"sd15": (0, 1, 2, 3, 9, 10, 11, 12, 13, 14, 15), "sdxl": (6,)}
_STRONG_STYLE_INDEXES = {"sd15": (0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), "sdxl": (0, 1, 2, 4, 5, 6, 7, 8, 9, 10)}
# SD1.5 composition: input 7 gets a quarter of the composition weight, except in the expanded
# (strong) style-and-composition table, where both composition blocks get it whole.
_SD15_INPUT7_SHARE = 0.25
# composition precise: style blocks other than the main one get a tenth of the style weight
_PRECISE_MINOR_SHARE = 0.1
_PRECISE_MINOR = {"sd15": (6, 7, 8), "sdxl": (0, 1, 2, 4, 5, 7, 8, 9, 10)}
# the "ramp" types' floor: no layer goes below 5% of the weight
_RAMP_FLOOR = 0.05
_WEAK_SHARE = 0.2


@dataclass(frozen=True)
class LayerPlan:
    """One layer's part: its lambda, whether the cond tokens move to the uncond slot (the precise types:
    the cond slot then has no image term), and whether it is a composition layer."""

    weight: float
    swap: bool = False
    composition: bool = False


def host_transformer_index(family: str, spec) -> int:
    """The host's transformer_index of one of our layers (a LayerSpec with a ComfyUI block)."""
    try:
        return HOST_TRANSFORMER_INDEX[family][tuple(spec.comfy_block)]
    except (KeyError, TypeError):
        raise IPAdapterError(
            f"weight types need an SD1.5 or SDXL layer layout; layer {getattr(spec, 'index', '?')} has no "
            f"transformer block in the {family!r} table."
        ) from None


def check_weight_type(weight_type: str) -> str:
    check_choice(weight_type, "weight_type", WEIGHT_TYPES)
    return weight_type


def check_embeds_scaling(scaling: str) -> str:
    check_choice(scaling, "embeds_scaling", EMBEDS_SCALINGS)
    return scaling


def _ramp(weight_type: str, t: int, n: int, weight: float) -> float:
    half = n / 2
    if weight_type == "ease in":
        share = 1 - t / n
    elif weight_type == "ease out":
        share = t / n
    elif weight_type == "ease in-out":
        share = 1 - abs(t - half) / half
    else:  # reverse in-out
        share = abs(t - half) / half
    return weight * (_RAMP_FLOOR + (1 - _RAMP_FLOOR) * share)


def _table(family: str, weight_type: str, weight: float, weight_composition: float, expand_style: bool,
           style_boost: float, composition_boost: float) -> dict:
    """{host transformer index: lambda} for the table types; indexes not listed get 0."""
    comp = COMPOSITION_INDEXES[family]

    def composition_weights(wc, input7_share=_SD15_INPUT7_SHARE):
        if family == "sd15":
            return {comp[0]: wc * input7_share, comp[1]: wc}
        return {comp[0]: wc}

    if weight_type == "style transfer":
        return {t: weight for t in _STYLE_INDEXES[family]}
    if weight_type == "composition":
        return composition_weights(weight)
    if weight_type == "strong style transfer":
        return {t: weight for t in _STRONG_STYLE_INDEXES[family]}
    if weight_type == "style and composition" and expand_style:
        table = {t: weight for t in _STRONG_STYLE_INDEXES[family]}
        table.update(composition_weights(weight_composition, input7_share=1.0))
        return table
    if weight_type == "style and composition":
        return {**{t: weight for t in _STYLE_INDEXES[family]}, **composition_weights(weight_composition)}
    if weight_type == "style transfer precise":
        # style_boost is the composition blocks' weight (they see the image only through the uncond slot)
        return {**{t: weight for t in _STYLE_INDEXES[family]}, **composition_weights(style_boost)}
    if weight_type == "composition precise":
        # `weight` drives composition; composition_boost drives the style blocks (minor ones at a tenth)
        table = {t: composition_boost for t in _STYLE_INDEXES[family]}
        table.update({t: composition_boost * _PRECISE_MINOR_SHARE for t in _PRECISE_MINOR[family]})
        table.update(composition_weights(weight))
        return table
    raise AssertionError(weight_type)


def layer_plan(family: str, layers, weight_type: str = "linear", weight: float = 1.0, *,
               weight_composition: float = 1.0, expand_style: bool = False, style_boost: float = 1.0,
               composition_boost: float = 0.0) -> tuple:
    """One LayerPlan per layer of `layers` (our order), for a model family "sd15" or "sdxl".

    linear: weight everywhere. Ramps (ease in / out / in-out, reverse in-out): weight * (0.05 + 0.95 * s) with
    s from the block's transformer index t of n blocks (ease in: 1 - t/n; ease out: t/n; ease in-out:
    1 - |t - n/2| / (n/2); reverse: |t - n/2| / (n/2)). weak input / output / middle: that part at 0.2;
    strong middle: input and output at 0.2. Table types: the listed blocks, 0 elsewhere. The precise
    types swap at the composition blocks (style precise) or at every other block (composition precise).
    """
    check_weight_type(weight_type)
    if expand_style and weight_type != "style and composition":
        raise IPAdapterError(
            f"expand_style applies to weight_type 'style and composition' only (it is {weight_type!r}); "
            "turn expand_style off or choose 'style and composition'."
        )
    if family not in HOST_TRANSFORMER_INDEX:
        raise IPAdapterError(f"weight types are defined for SD1.5 and SDXL layers, not {family!r}.")
    n = BLOCK_COUNTS[family]
    comp = COMPOSITION_INDEXES[family]
    table: Optional[dict] = None
    if weight_type in ("style transfer", "composition", "strong style transfer", "style and composition",
                       "style transfer precise", "composition precise"):
        table = _table(family, weight_type, weight, weight_composition, expand_style, style_boost, composition_boost)
    plans = []
    for spec in layers:
        t = host_transformer_index(family, spec)
        block = spec.comfy_block[0]
        if table is not None:
            w = float(table.get(t, 0.0))
        elif weight_type in ("ease in", "ease out", "ease in-out", "reverse in-out"):
            w = _ramp(weight_type, t, n, weight)
        elif (weight_type == "weak input" and block == "input") or (weight_type == "weak output" and block == "output") \
                or (weight_type == "weak middle" and block == "middle") \
                or (weight_type == "strong middle" and block in ("input", "output")):
            w = weight * _WEAK_SHARE
        else:
            w = float(weight)
        if weight_type == "style transfer precise":
            swap = t in comp
        elif weight_type == "composition precise":
            swap = t not in comp
        else:
            swap = False
        plans.append(LayerPlan(weight=float(w), swap=swap, composition=t in comp))
    return tuple(plans)


def uses_composition_embeds(weight_type: str) -> bool:
    """The weight types for which a second (composition) reference means something."""
    return weight_type == "style and composition"
