"""From encoder outputs to the image prompt tokens an adapter attends to (cond and uncond).

Unconditional features follow the official code exactly: for the base adapter, zeros of the CLIP image
embedding *before* the projection (so the uncond tokens are LayerNorm(proj bias), not zeros); for plus and
full-face, the encoder's penultimate hidden states of an all-zero image in normalised pixel space.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from .config import AdapterConfig
from .encoder_table import PENULTIMATE, encoder_file_for, encoder_name_for, encoder_spec, hidden_tokens
from .errors import AdapterMismatchError, IPAdapterError, check_choice



def _remedy(config: AdapterConfig) -> str:
    name = encoder_file_for(config.encoder_name)
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
    _check_tokens(config, features, encoder_label)
    return features


def _check_tokens(config: AdapterConfig, features: torch.Tensor, encoder_label: str) -> None:
    """An encoder named by the adapter's layout at another resolution than 224 px (Kolors: ViT-L/14-336) has
    the widths of its 224 px sibling: the token count tells them apart."""
    spec = encoder_spec(config.encoder_name)
    if spec is None or config.encoder_output != PENULTIMATE or spec.dims.image_size == 224:
        return
    want = hidden_tokens(spec.dims)
    if features.shape[1] != want:
        side = math.isqrt(max(int(features.shape[1]) - int(spec.dims.class_token), 0)) * spec.dims.patch_size
        raise AdapterMismatchError(
            f"adapter/encoder mismatch: the adapter ({config.description}) needs {spec.name} hidden states "
            f"({want} tokens, {spec.dims.image_size} px images), but {encoder_label} gives {features.shape[1]} tokens "
            f"(a {side} px encoder, e.g. {encoder_name_for(PENULTIMATE, features.shape[-1])} at {side} px); {_remedy(config)}."
        )


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
    if config.zero_features_uncond:
        return torch.zeros_like(features)
    if encode_pixels is None:
        raise ValueError(f"{config.description}: the unconditional embedding needs the image encoder (encode_pixels)")
    zeros = torch.zeros(1, 3, image_size, image_size, device=features.device, dtype=features.dtype)
    uncond = features_for(config, encode_pixels(zeros)).to(features.dtype)
    return uncond.expand(features.shape[0], *uncond.shape[1:]).clone()


def _subtract(x: torch.Tensor) -> torch.Tensor:
    if x.shape[0] < 2:
        raise IPAdapterError("'subtract' takes the first reference minus the mean of the others: give at least two references")
    return (x[0] - x[1:].mean(dim=0)).unsqueeze(0)


# How several references' features [R, ...] become one, as the widely used pack defines each method. "norm
# average" divides every feature element by its norm across the references (dim 0), then averages.
COMBINE_METHODS = {
    "concat": lambda x: x,
    "add": lambda x: x.sum(dim=0).unsqueeze(0),
    "subtract": _subtract,
    "average": lambda x: x.mean(dim=0).unsqueeze(0),
    "norm average": lambda x: (x / x.norm(dim=0, keepdim=True)).mean(dim=0).unsqueeze(0),
    "max": lambda x: x.max(dim=0).values.unsqueeze(0),
    "min": lambda x: x.min(dim=0).values.unsqueeze(0),
}
# Encode Image Prompt's choices: the methods above plus "batch" (reference i for batch item i). Order is
# public API (saved workflows store the value).
COMBINE_MODES = ("concat", "average", "norm average", "batch", "add", "subtract", "max", "min")


def combine_rows(features: torch.Tensor, method: str) -> torch.Tensor:
    """One of COMBINE_METHODS over the references (dim 0); a non-finite result is an error, not a prompt."""
    if method not in COMBINE_METHODS:
        raise ValueError(f"unknown combine mode {method!r}; choose one of {tuple(COMBINE_METHODS)}")
    if features.shape[0] == 0:
        raise IPAdapterError("nothing to combine: the image prompt holds no references")
    out = COMBINE_METHODS[method](features)
    if not torch.isfinite(out).all():
        raise IPAdapterError(
            f"combining with '{method}' gave NaN or infinite values (norm average divides by each feature's norm "
            "across the references, which is 0 where they are all 0); use 'average' for these references")
    return out


def combine_features(features: torch.Tensor, mode: str) -> torch.Tensor:
    """Encode's combine: merge several references before the projection, or keep them ("concat", "batch").
    A single reference is kept as it is, whatever the mode."""
    if mode == "batch" or (mode in COMBINE_METHODS and features.shape[0] == 1):
        return features
    if mode not in COMBINE_METHODS:
        raise ValueError(f"unknown combine mode {mode!r}; choose one of {COMBINE_MODES}")
    return combine_rows(features, mode)


def merge_uncond(uncond: torch.Tensor) -> torch.Tensor:
    """The unconditional features for merged references: the shared row when every reference has the same
    one (the official zero embedding / zero image, exactly), else the mean of the negative images."""
    if uncond.shape[0] == 1 or bool((uncond == uncond[:1]).all()):
        return uncond[:1]
    return uncond.mean(dim=0, keepdim=True)


WEIGHT_RANGE = (-1.0, 3.0)  # the range of the widely used pack's encoder weight


def parse_reference_weights(text: str, count: int) -> Optional[list]:
    """"1, 0.5" -> [1.0, 0.5]: one weight for every reference, or one per reference; "" -> None (all 1)."""
    text = (text or "").replace("\n", ",").strip()
    if not text:
        return None
    weights = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            w = float(part)
        except ValueError:
            raise IPAdapterError(f"reference_weights: {part!r} is not a number; write one number per reference, e.g. '1, 0.5'.") from None
        if not math.isfinite(w) or not WEIGHT_RANGE[0] <= w <= WEIGHT_RANGE[1]:
            raise IPAdapterError(f"reference_weights: {part} is outside {WEIGHT_RANGE[0]}..{WEIGHT_RANGE[1]}; give finite weights in that range.")
        weights.append(w)
    if len(weights) not in (1, count):
        raise IPAdapterError(
            f"reference_weights has {len(weights)} numbers for {count} reference images; give one weight (for all) "
            f"or exactly {count}, or leave it empty (all 1).")
    return weights * count if len(weights) == 1 else weights


def weight_references(features: torch.Tensor, weights: Optional[list]) -> torch.Tensor:
    """Scale each reference's features (before the projection, as the widely used pack's encoder weight)."""
    if weights is None:
        return features
    w = torch.tensor(weights, dtype=features.dtype, device=features.device)
    return features * w.reshape(-1, *([1] * (features.ndim - 1)))


def arrange_tokens(tokens: torch.Tensor, mode: str) -> torch.Tensor:
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

    cond_features / uncond_features: the encoder features that were projected ([F, ...], one row per
    reference kept), so the references can be combined again before the projection (Combine Embeds);
    None for embeds made without them.

    region_masks (tiled references): None, or [R, H, W]: then the rows are R separate image prompts, region
    by region, each acting only where its region_masks[r] is 1 (stretched over the image); they add up
    (ip_core.tiles). A region has one row, or one per batch item (cond [R * F, N, ctx], region r's rows
    r * F .. r * F + F - 1: its tile of each frame's reference).
    """

    cond: torch.Tensor
    uncond: torch.Tensor
    signature: str
    description: str
    encoder_name: str = "unknown"
    adapter_fingerprint: str = ""
    cond_features: Optional[torch.Tensor] = None
    uncond_features: Optional[torch.Tensor] = None
    region_masks: Optional[torch.Tensor] = None

    @property
    def rows_per_region(self) -> int:
        return self.cond.shape[0] // (1 if self.region_masks is None else max(1, self.region_masks.shape[0]))

    @property
    def per_batch_item(self) -> bool:
        return self.rows_per_region > 1

    def to(self, device=None, dtype=None) -> "ImagePromptEmbeds":
        def move(t):
            return None if t is None else t.to(device=device, dtype=dtype)

        return ImagePromptEmbeds(move(self.cond), move(self.uncond), self.signature, self.description, self.encoder_name,
                                 self.adapter_fingerprint, move(self.cond_features), move(self.uncond_features),
                                 self.region_masks)

    def regions(self) -> list:
        """[(embeds of one region, its mask [H, W])] for tiled embeds; [(self, None)] otherwise."""
        if self.region_masks is None:
            return [(self, None)]
        f = self.rows_per_region
        return [(ImagePromptEmbeds(self.cond[r * f:(r + 1) * f], self.uncond[r * f:(r + 1) * f], self.signature,
                                   self.description, self.encoder_name, self.adapter_fingerprint), self.region_masks[r])
                for r in range(self.region_masks.shape[0])]

    def state_dict(self) -> dict:
        sd = {"cond": self.cond, "uncond": self.uncond}
        if self.cond_features is not None:
            sd.update(cond_features=self.cond_features, uncond_features=self.uncond_features)
        if self.region_masks is not None:
            sd["region_masks"] = self.region_masks
        return sd

    def metadata(self) -> dict:
        return {"signature": self.signature, "description": self.description, "encoder_name": self.encoder_name,
                "adapter_fingerprint": self.adapter_fingerprint}


def _project(adapter, cond_features, uncond_features, combine: str, encoder_name: str) -> ImagePromptEmbeds:
    param = next(adapter.parameters())
    with torch.no_grad():
        cond = _project_rows(adapter, cond_features.to(param.device, param.dtype))
        uncond = _project_rows(adapter, uncond_features.to(param.device, param.dtype))
    cond, uncond = arrange_tokens(cond, combine), arrange_tokens(uncond, combine)
    c = adapter.config
    return ImagePromptEmbeds(cond, uncond, c.signature, c.description, encoder_name, adapter.fingerprint(),
                             cond_features, uncond_features)


def build_image_prompt(
    adapter,
    cond_features: torch.Tensor,
    uncond_features: torch.Tensor,
    combine: str = "concat",
    encoder_name: str = "unknown",
) -> ImagePromptEmbeds:
    """Project cond / uncond features into tokens; merged references share one unconditional row."""
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
    cond = combine_features(cond_features, combine)
    uncond = merge_uncond(uncond_features) if cond.shape[0] < cond_features.shape[0] else uncond_features
    return _project(adapter, cond, uncond.contiguous(), combine, encoder_name)


def combine_embeds(adapter, embeds: Sequence[ImagePromptEmbeds], method: str) -> ImagePromptEmbeds:
    """Combine several image prompts of one adapter before its projection (COMBINE_METHODS): the features of
    all references, in input order, merged with `method` and projected again."""
    check_choice(method, "combine method", COMBINE_METHODS)
    if not embeds:
        raise IPAdapterError("nothing to combine: give at least one image prompt (embeds_1).")
    for i, e in enumerate(embeds, 1):
        check_embeds_fit(adapter, e, f"embeds_{i}")
        if e.cond_features is None:
            raise IPAdapterError(
                f"embeds_{i} carries no encoder features ({e.description}), so it cannot be combined before the "
                "projection; encode the reference image again.")
        if e.per_batch_item:
            raise IPAdapterError(
                f"embeds_{i} holds one reference per batch item (combine 'batch'); combining makes one image prompt. "
                "Encode it with combine 'concat' (or another merging mode) first.")
    shapes = {tuple(e.cond_features.shape[1:]) for e in embeds}
    if len(shapes) > 1:
        listing = ", ".join(f"embeds_{i}: {list(e.cond_features.shape[1:])}" for i, e in enumerate(embeds, 1))
        raise AdapterMismatchError(
            f"the image prompts have different feature shapes per reference ({listing}); they were encoded with "
            "different CLIP vision models or token counts. Encode them all with the same CLIP vision model.")
    if method == "concat" and len(embeds) == 1:
        return embeds[0]
    cond = torch.cat([e.cond_features for e in embeds])
    uncond = torch.cat([e.uncond_features for e in embeds])
    merged = combine_rows(cond, method)
    uncond = uncond if method == "concat" else merge_uncond(uncond)
    return _project(adapter, merged, uncond.contiguous(), "concat", embeds[0].encoder_name)


def _kind(t) -> str:
    return "missing" if t is None else f"{str(t.dtype).replace('torch.', '')} {list(t.shape)}"


MASK_OVERSHOOT = 0.125  # how far a resized tile mask may leave 0..1 (see check_embeds_values)


def check_embeds_values(embeds: ImagePromptEmbeds, label: str = "the image prompt embeds") -> None:
    """What any embeds must be, whatever the adapter: float tensors of consistent shapes, finite values.

    cond / uncond: equal [R >= 1, tokens >= 1, width >= 1]; cond_features / uncond_features: both or neither,
    equal shapes after the first dim; region_masks: None or [R, H, W] within 0..1, R dividing the rows.
    """
    remedy = "encode the reference image again (a saved file was damaged or written by other code)."
    for name in ("cond", "uncond", "cond_features", "uncond_features", "region_masks"):
        t = getattr(embeds, name)
        if t is None:
            continue
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise IPAdapterError(f"{label}: {name} holds {_kind(t) if isinstance(t, torch.Tensor) else type(t).__name__} "
                                 f"values, but embeds are float numbers; {remedy}")
        if t.numel() and not bool(torch.isfinite(t).all()):
            raise IPAdapterError(f"{label}: {name} contains NaN or infinite values; {remedy}")
    cond, uncond = embeds.cond, embeds.uncond
    if cond.ndim != 3 or uncond.shape != cond.shape or 0 in cond.shape:
        raise IPAdapterError(f"{label}: cond {list(cond.shape)} and uncond {list(uncond.shape)} must be equal "
                             f"[references, tokens, width], none of them 0; {remedy}")
    cf, uf = embeds.cond_features, embeds.uncond_features
    if (cf is None) != (uf is None):
        raise IPAdapterError(f"{label}: cond_features is {_kind(cf)} but uncond_features is {_kind(uf)}; they come "
                             f"together; {remedy}")
    if cf is not None and (cf.ndim not in (2, 3) or uf.shape[1:] != cf.shape[1:] or 0 in cf.shape
                           or uf.shape[0] not in (1, cf.shape[0])):
        raise IPAdapterError(f"{label}: cond_features {list(cf.shape)} and uncond_features {list(uf.shape)} must be "
                             f"[references, width] or [references, tokens, width] of the same shape; {remedy}")
    masks = embeds.region_masks
    # Tile masks are resized bicubically, as the widely used pack resizes its own: at a mask's edge they overshoot
    # 0..1 a little (the cubic kernel's ripple, under 0.1), and a constant mask can come out 1 + rounding.
    if masks is not None and (masks.ndim != 3 or 0 in masks.shape or cond.shape[0] % masks.shape[0]
                              or float(masks.min()) < -MASK_OVERSHOOT or float(masks.max()) > 1 + MASK_OVERSHOOT):
        raise IPAdapterError(f"{label}: region_masks {list(masks.shape)} must be one [H, W] mask within 0..1 per "
                             f"region, the {cond.shape[0]} rows being the same number per region; {remedy}")


def check_embeds_fit(adapter, embeds: ImagePromptEmbeds, label: str = "these image prompt embeds") -> None:
    """Embeds must come from this adapter's projection: same layout, and (given an IPAdapter) same weights;
    then their tensors must have the shapes that layout makes (widths, token and feature counts), float and
    finite. The one check before any matmul, for Apply, Combine and a loaded file alike."""
    config = adapter if isinstance(adapter, AdapterConfig) else adapter.config
    other_weights = (
        not isinstance(adapter, AdapterConfig)
        and embeds.adapter_fingerprint
        and embeds.adapter_fingerprint != adapter.fingerprint()
    )
    if embeds.signature != config.signature or other_weights:
        same = " (same layout, other weights)" if embeds.signature == config.signature else ""
        raise AdapterMismatchError(
            f"{label} were made for another adapter{same} ({embeds.description}); this adapter is "
            f"{config.description}. Encode the image with the same adapter you apply."
        )
    check_embeds_values(embeds, label)
    _check_embeds_shapes(config, embeds, label)


def _check_embeds_shapes(config: AdapterConfig, embeds: ImagePromptEmbeds, label: str) -> None:
    """The widths and counts the adapter's layout makes, against the tensors themselves (the metadata can say one
    thing and the tensors another in an edited file)."""
    per_reference, width = config.prompt_tokens
    remedy = "encode the reference image again with this adapter (the embeds were changed or written by other code)."
    cond = embeds.cond
    tokens = cond.shape[1]
    if cond.shape[-1] != width or (per_reference and tokens % per_reference):
        count = f"a multiple of {per_reference}" if per_reference else "any number of"
        raise AdapterMismatchError(
            f"{label} hold tokens {list(cond.shape)} ([references, tokens, width]), but this adapter "
            f"({config.description}) makes {count} tokens of width {width}; {remedy}")
    cf = embeds.cond_features
    if cf is None:
        return
    want_ndim = 2 if config.encoder_output == "image_embeds" else 3
    if cf.shape[-1] != config.encoder_width or cf.ndim != want_ndim:
        actual = encoder_name_for(config.encoder_output, int(cf.shape[-1]))
        raise AdapterMismatchError(
            f"{label} carry encoder features {list(cf.shape)} ({actual if actual != 'unknown' else 'no known encoder'}), "
            f"but this adapter ({config.description}) projects {config.encoder_output} of width "
            f"{config.encoder_width} ({want_ndim} dims); {remedy}")
    if per_reference and cf.shape[0] * per_reference != cond.shape[0] * tokens:
        raise AdapterMismatchError(
            f"{label} carry encoder features of {cf.shape[0]} references but tokens {list(cond.shape)}, which this "
            f"adapter ({config.description}) makes from {cond.shape[0] * tokens // per_reference}; {remedy}")
