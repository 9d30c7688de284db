"""What an adapter file is, read from its keys and shapes (never its name: users rename files)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from .encoder_table import FACE_EMBEDDING, FACE_ENCODER, IMAGE_EMBEDS, PENULTIMATE, encoder_name_for
from .errors import AdapterFileError, UnsupportedAdapterError
from .layers import BASE_MODEL_NAMES, CONTEXT_DIMS, LayerSpec, custom_layer_specs, layer_specs

VARIANTS = ("base", "plus", "full-face")
# FaceID: the prompt is a 512-d InsightFace (ArcFace) face embedding. Plus/PlusV2 share one file layout (PlusV2
# only adds a shortcut at inference); portrait files have 16 tokens and no LoRA; "unnorm" takes the raw
# (not L2-normalised) embedding through a Resampler.
FACEID_VARIANTS = ("faceid", "faceid-plus", "faceid-portrait", "faceid-portrait-unnorm")
PROJECTIONS = {"base": "linear", "plus": "resampler", "full-face": "mlp", "faceid": "faceid-mlp",
               "faceid-plus": "faceid-plus", "faceid-portrait": "faceid-mlp", "faceid-portrait-unnorm": "resampler"}
ENCODER_OUTPUTS = {"base": IMAGE_EMBEDS, "plus": PENULTIMATE, "full-face": PENULTIMATE,
                   **{v: FACE_EMBEDDING for v in FACEID_VARIANTS}}
FACE_EMBEDDING_WIDTH = FACE_ENCODER[1]
_KINDS = {
    "base": "base (linear projection)", "plus": "plus (Resampler)", "full-face": "full-face (MLP)",
    "faceid": "FaceID (face embedding MLP)", "faceid-plus": "FaceID Plus/PlusV2 (face embedding + CLIP Resampler)",
    "faceid-portrait": "FaceID portrait (face embedding MLP)",
    "faceid-portrait-unnorm": "FaceID portrait unnorm (raw face embedding Resampler)",
}

# Kwai Kolors: an SDXL-shaped UNet (2048-wide context) whose IP-Adapter-Plus has a 2048-wide Resampler over CLIP
# ViT-L/14-336 hidden states (the widely used pack's rule: SDXL and the Resampler's to_out 2048 rows).
KOLORS_NAME = "Kolors"
KOLORS_ENCODER = "ViT-L/14-336"
KOLORS_RESAMPLER_DIM = 2048
# Kolors FaceID-Plus makes 4096-wide tokens (ChatGLM's width, the widely used pack's rule: the perceiver
# resampler's to_out has 4096 rows); the Kolors UNet's own encoder_hid_proj (Linear 4096 -> 2048, the one that
# maps the text) turns them into context before to_k_ip / to_v_ip (see ip_core/kolors.py).
KOLORS_FACE_TOKEN_DIM = 4096

# A ViT/14 at 224 px has 16 x 16 patches + CLS: the full-face projection keeps all of them.
FULL_FACE_TOKENS = 257
DEFAULT_TOKENS = {"base": 4, "plus": 16, "full-face": FULL_FACE_TOKENS}


@dataclass(frozen=True)
class ResamplerConfig:
    dim: int
    depth: int
    dim_head: int
    heads: int
    num_queries: int
    embedding_dim: int
    output_dim: int
    ff_mult: int = 4


@dataclass(frozen=True)
class AdapterConfig:
    variant: str
    projection: str
    base_model: str
    context_dim: int
    num_layers: int
    num_tokens: int
    encoder_output: str
    encoder_width: int
    encoder_name: str
    resampler: Optional[ResamplerConfig] = None
    layer_key_numbers: tuple = field(default=(), repr=False)
    layer_hidden_sizes: tuple = field(default=(), repr=False)
    lora_rank: int = 0  # FaceID: rank of the per-layer LoRA on to_q/k/v/out (0: the file has none)
    clip_width: int = 0  # FaceID Plus: width of the CLIP penultimate hidden states it also takes
    kolors: bool = False  # Kwai Kolors (SDXL-shaped UNet, CLIP ViT-L/14 at 336 px): see detect_config
    # Kolors FaceID-Plus: width of the projection's tokens (4096), which the model's encoder_hid_proj maps to
    # context_dim; 0: the tokens are context_dim wide (every other adapter)
    token_dim: int = 0

    @property
    def projection_dim(self) -> int:
        """Width of the image prompt tokens the projection makes (embeds carry these)."""
        return self.token_dim or self.context_dim

    @property
    def prompt_tokens(self) -> tuple:
        """(tokens per reference, width) of the image prompt embeds this adapter makes and takes; a family whose
        embeds stay encoder features until sampling (SD3.5) says (0: any count, the features' width)."""
        return self.num_tokens, self.projection_dim

    @property
    def is_faceid(self) -> bool:
        return self.variant in FACEID_VARIANTS

    @property
    def face_embedding_normalized(self) -> bool:
        """FaceID files take the L2-normalised embedding (insightface normed_embedding), "unnorm" the raw one."""
        return self.variant != "faceid-portrait-unnorm"

    @property
    def zero_features_uncond(self) -> bool:
        """"No image" is zero encoder features before the projection (base adapters, as the official code; SD3.5,
        as diffusers' pipeline) instead of a blank image through the encoder."""
        return self.encoder_output == IMAGE_EMBEDS

    @property
    def clip_requirement(self) -> str:
        """FaceID Plus only: the CLIP output it takes besides the face embedding."""
        if not self.clip_width:
            return ""
        name = KOLORS_ENCODER if self.kolors else encoder_name_for(PENULTIMATE, self.clip_width)
        return f"{name if name != 'unknown' else 'CLIP vision'} penultimate_hidden_states (width {self.clip_width})"

    def layer_specs(self) -> tuple[LayerSpec, ...]:
        if self.base_model in ("sd15", "sdxl"):
            return layer_specs(self.base_model)
        return custom_layer_specs(self.layer_key_numbers, self.layer_hidden_sizes)

    @property
    def base_model_name(self) -> str:
        return KOLORS_NAME if self.kolors else BASE_MODEL_NAMES.get(self.base_model, self.base_model)

    @property
    def encoder_requirement(self) -> str:
        """What the adapter needs from the image encoder, in words."""
        if self.is_faceid:
            kind = "L2-normalised" if self.face_embedding_normalized else "raw, not normalised"
            face = f"an InsightFace face embedding ({self.encoder_width}-d, {kind})"
            return f"{face} and {self.clip_requirement}" if self.clip_width else face
        if self.encoder_name == "unknown":
            return f"{self.encoder_output} of width {self.encoder_width} (not a released CLIP encoder's width)"
        return f"{self.encoder_name} {self.encoder_output} (width {self.encoder_width})"

    @property
    def signature(self) -> str:
        """Identifies which adapters can share image prompt embeddings (same tokens in, same layout)."""
        clip = f"+clip:{self.clip_width}" if self.clip_width else ""
        kolors = "@kolors" if self.kolors else ""  # same widths as an SDXL ViT-L/14 plus, other encoder (336 px)
        return f"{self.base_model}/{self.variant}/{self.num_tokens}x{self.projection_dim}/{self.encoder_output}:{self.encoder_width}{clip}{kolors}"

    @property
    def description(self) -> str:
        lora = f", LoRA rank {self.lora_rank}" if self.lora_rank else ""
        hid = (f"; its {self.token_dim}-wide tokens pass the model's encoder_hid_proj ({self.token_dim} -> "
               f"{self.context_dim})" if self.token_dim else "")
        return (
            f"{self.base_model_name} {_KINDS[self.variant]}, {self.num_tokens} tokens, {self.num_layers} layers{lora}, "
            f"needs {self.encoder_requirement}{hid}"
        )


def make_config(
    variant: str,
    layers: Sequence[LayerSpec],
    context_dim: int,
    encoder_width: int,
    num_tokens: Optional[int] = None,
    resampler: Optional[ResamplerConfig] = None,
    lora_rank: int = 0,
    clip_width: int = 0,
    token_dim: int = 0,
) -> AdapterConfig:
    """A config for a new adapter (the trainer's starting point, test fixtures), for released or custom UNets.

    FaceID variants: encoder_width is the face embedding width (512); `lora_rank` for faceid / faceid-plus
    (released: 128); `clip_width` for faceid-plus (ViT-H: 1280). `token_dim`: faceid-plus only, the Kolors layout
    (released: 4096, no LoRA): tokens of that width, mapped to context_dim by the model's encoder_hid_proj."""
    if variant not in VARIANTS + FACEID_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS + FACEID_VARIANTS}")
    layers = tuple(layers)
    base_model = _base_model_for(context_dim, [(s.key_number, s.hidden_size) for s in layers])
    if variant in ("plus", "faceid-portrait-unnorm"):
        if resampler is None:
            n = DEFAULT_TOKENS["plus"] if num_tokens is None else num_tokens
            dim = context_dim if context_dim <= 1280 else 1280
            resampler = ResamplerConfig(
                dim=dim, depth=4, dim_head=64 if dim >= 64 else dim, heads=max(1, dim // 64),
                num_queries=n, embedding_dim=encoder_width, output_dim=context_dim,
            )
        num_tokens = resampler.num_queries
    elif variant == "faceid-plus":
        num_tokens = 4 if num_tokens is None else num_tokens
        width = token_dim or context_dim
        if resampler is None:
            dim_head = 64 if width >= 64 else width
            resampler = ResamplerConfig(dim=width, depth=4, dim_head=dim_head, heads=width // dim_head,
                                        num_queries=num_tokens, embedding_dim=clip_width, output_dim=width)
    elif variant == "full-face":
        num_tokens = DEFAULT_TOKENS["full-face"] if num_tokens is None else num_tokens
    else:  # base, faceid, faceid-portrait
        num_tokens = (16 if variant == "faceid-portrait" else 4) if num_tokens is None else num_tokens
    if token_dim and variant != "faceid-plus":
        raise ValueError(f"token_dim is the Kolors FaceID-Plus layout's; {variant} adapters make context_dim-wide tokens")
    if variant in ("faceid", "faceid-plus") and not lora_rank and not token_dim:
        raise ValueError(f"{variant} adapters carry a LoRA: give lora_rank (released files: 128)")
    if variant == "faceid-plus" and not clip_width:
        raise ValueError("faceid-plus needs clip_width (the CLIP hidden width, 1280 for ViT-H)")
    return _config(variant, base_model, context_dim, num_tokens, encoder_width, resampler,
                   [s.key_number for s in layers], [s.hidden_size for s in layers], lora_rank, clip_width,
                   kolors=bool(token_dim), token_dim=token_dim)


def _config(variant, base_model, context_dim, num_tokens, encoder_width, resampler, key_numbers, hidden_sizes,
            lora_rank=0, clip_width=0, kolors=False, token_dim=0) -> AdapterConfig:
    out = ENCODER_OUTPUTS[variant]
    return AdapterConfig(
        kolors=bool(kolors),
        token_dim=int(token_dim),
        variant=variant,
        projection=PROJECTIONS[variant],
        base_model=base_model,
        context_dim=int(context_dim),
        num_layers=len(key_numbers),
        num_tokens=int(num_tokens),
        encoder_output=out,
        encoder_width=int(encoder_width),
        encoder_name=KOLORS_ENCODER if kolors and out == PENULTIMATE else encoder_name_for(out, encoder_width),
        resampler=resampler,
        layer_key_numbers=tuple(int(n) for n in key_numbers),
        layer_hidden_sizes=tuple(int(h) for h in hidden_sizes),
        lora_rank=int(lora_rank),
        clip_width=int(clip_width),
    )


def _base_model_for(context_dim: int, layers: list) -> str:
    for name in ("sd15", "sdxl"):
        known = [(s.key_number, s.hidden_size) for s in layer_specs(name)]
        if context_dim == CONTEXT_DIMS[name] and layers == known:
            return name
    return "custom"


def _shape(sd: dict, key: str):
    t = sd.get(key)
    return tuple(t.shape) if isinstance(t, torch.Tensor) else None


def _dims(part: dict, part_name: str, key: str, ndim: int, variant: str) -> tuple:
    """The shape of one tensor the detected layout relies on: present, `ndim`-dimensional, no empty dimension."""
    t = part.get(key)
    if not isinstance(t, torch.Tensor):
        raise AdapterFileError(
            f"{part_name}.{key} is missing, but the other {part_name} keys look like a {variant} adapter; "
            f"the file is incomplete or damaged: download it again. {_summary({part_name: part})}"
        )
    if t.ndim != ndim or min(t.shape) < 1:
        raise AdapterFileError(
            f"{part_name}.{key} has shape {list(t.shape)}; a {variant} adapter needs a {ndim}-D tensor with no empty "
            "dimension there. The file is damaged or not an IP-Adapter: download it again."
        )
    return tuple(t.shape)


def _summary(sd: dict) -> str:
    proj = sorted(sd.get("image_proj", {}))
    ip = sorted(sd.get("ip_adapter", {}))
    shown = ", ".join(f"{k}{list(getattr(sd['image_proj'][k], 'shape', []))}" for k in proj[:6])
    return (
        f"image_proj has {len(proj)} tensors ({shown}{', ...' if len(proj) > 6 else ''}); "
        f"ip_adapter has {len(ip)} tensors (e.g. {', '.join(ip[:3])})"
    )


_IP_KEY = re.compile(r"^(\d+)\.(to_k_ip|to_v_ip)\.weight$")
_RESAMPLER_LAYER = re.compile(r"^layers\.(\d+)\.")


def _whole(numerator: int, denominator: int, what: str) -> int:
    if numerator % denominator:
        raise UnsupportedAdapterError(f"{what}: {numerator} is not a multiple of {denominator}; the file is damaged or not an IP-Adapter: download it again.")
    return numerator // denominator


def detect_config(sd: dict) -> AdapterConfig:
    """Read the variant, base model, token count and encoder needs from an adapter state dict.

    `sd` is {"image_proj": {...}, "ip_adapter": {...}} as ip_core.checkpoint loads it. Every tensor of the
    detected layout is then checked against the shapes that layout needs (check_layout), so what passes
    here builds and runs.
    """
    from .flux import detect_flux_config  # Flux layouts (XLabs, InstantX); flux builds on this module
    from .sd3 import detect_sd3_config  # SD3.5 InstantX: a Resampler too, told apart by its timestep weights

    for family in (detect_sd3_config, detect_flux_config):
        found = family(sd)
        if found is not None:
            return found
    proj = sd.get("image_proj") or {}
    ip = sd.get("ip_adapter") or {}
    lora = {k: t for k, t in ip.items() if _LORA_KEY.match(k)}
    ip = {k: t for k, t in ip.items() if k not in lora}
    if not proj or not ip:
        raise UnsupportedAdapterError(f"not a complete IP-Adapter: {_summary(sd)}. Expected both image_proj and ip_adapter weights: download the file again.")

    resampler = None
    clip_width = token_dim = 0
    face = _shape(proj, "proj.0.weight")
    face_mlp = face is not None and len(face) == 2 and face[1] == FACE_EMBEDDING_WIDTH
    if face_mlp and "proj.2.weight" in proj and "norm.weight" in proj and "proj.3.weight" not in proj:
        # FaceID: face MLP (proj.0, proj.2) + LayerNorm; Plus adds a perceiver_resampler on CLIP hidden states.
        encoder_width = FACE_EMBEDDING_WIDTH
        (context_dim,) = _dims(proj, "image_proj", "norm.weight", 1, "FaceID")
        num_tokens = _whole(_dims(proj, "image_proj", "proj.2.weight", 2, "FaceID")[0], context_dim,
                            "the FaceID projection's output width over the token width")
        if "perceiver_resampler.proj_in.weight" in proj:
            variant = "faceid-plus"
            dim, clip_width = _dims(proj, "image_proj", "perceiver_resampler.proj_in.weight", 2, "FaceID Plus")
            resampler = _resampler_config(proj, "perceiver_resampler.", dim, num_tokens, clip_width,
                                          _dims(proj, "image_proj", "perceiver_resampler.proj_out.weight", 2, "FaceID Plus")[0])
        else:
            variant = "faceid" if lora else "faceid-portrait"
        if variant == "faceid-plus" and context_dim == KOLORS_FACE_TOKEN_DIM and resampler.dim == KOLORS_FACE_TOKEN_DIM:
            # Kolors FaceID-Plus: the tokens are 4096 wide, K'/V' read the UNet's 2048-wide context
            token_dim, context_dim = context_dim, _kv_input_width(ip, sd)
        if context_dim not in CONTEXT_DIMS.values():
            raise UnsupportedAdapterError(
                f"a FaceID file with {context_dim}-wide tokens (neither SD1.5's 768 nor SDXL's 2048, nor Kolors "
                f"FaceID-Plus's {KOLORS_FACE_TOKEN_DIM}-wide tokens over 2048-wide K'/V'), which is not supported: {_summary(sd)}"
            )
    elif "proj.weight" in proj and "norm.weight" in proj:
        variant = "base"
        out_features, encoder_width = _dims(proj, "image_proj", "proj.weight", 2, variant)
        (context_dim,) = _dims(proj, "image_proj", "norm.weight", 1, variant)
        if out_features % context_dim:
            raise UnsupportedAdapterError(
                f"image_proj.proj.weight {list(_shape(proj, 'proj.weight'))} is not a whole number of "
                f"{context_dim}-wide tokens; the file is damaged or not an IP-Adapter: download it again. {_summary(sd)}"
            )
        num_tokens = out_features // context_dim
    elif "latents" in proj and "proj_in.weight" in proj:
        _, num_queries, dim = _dims(proj, "image_proj", "latents", 3, "plus")
        context_dim, _ = _dims(proj, "image_proj", "proj_out.weight", 2, "plus")
        encoder_width = _dims(proj, "image_proj", "proj_in.weight", 2, "plus")[1]
        # A Resampler over a 512-wide input is FaceID portrait "unnorm" (raw face embedding as one token);
        # CLIP hidden states are 1024 / 1280 / 1664 wide.
        variant = "faceid-portrait-unnorm" if encoder_width == FACE_EMBEDDING_WIDTH else "plus"
        resampler = _resampler_config(proj, "", dim, num_queries, encoder_width, context_dim)
        num_tokens = num_queries
    elif "proj.0.weight" in proj and "proj.2.weight" in proj and "proj.3.weight" in proj:
        variant = "full-face"
        encoder_width = _dims(proj, "image_proj", "proj.0.weight", 2, variant)[1]
        context_dim = _dims(proj, "image_proj", "proj.2.weight", 2, variant)[0]
        num_tokens = FULL_FACE_TOKENS
    else:
        raise UnsupportedAdapterError(f"unknown image projection layout: {_summary(sd)}. Use a base, plus, plus-face or full-face IP-Adapter file.")

    layers = {}
    for key, t in ip.items():
        m = _IP_KEY.match(key)
        if not m:
            raise UnsupportedAdapterError(f"unexpected ip_adapter key {key!r}: {_summary(sd)}. Use an IP-Adapter file in the released layout.")
        n = int(m.group(1))
        if not isinstance(t, torch.Tensor) or t.ndim != 2 or min(t.shape) < 1 or t.shape[1] != context_dim:
            shape = list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise UnsupportedAdapterError(
                f"ip_adapter.{key} has shape {shape} but the projection makes {context_dim}-wide tokens; "
                "the file mixes two adapters or is damaged: download it again."
            )
        layers.setdefault(n, {})[m.group(2)] = t.shape[0]
    for n, kv in sorted(layers.items()):
        if set(kv) != {"to_k_ip", "to_v_ip"} or kv["to_k_ip"] != kv["to_v_ip"]:
            raise UnsupportedAdapterError(f"ip_adapter layer {n} needs to_k_ip and to_v_ip of the same shape, found {kv}; the file is damaged: download it again.")
    numbers = sorted(layers)
    hidden = [layers[n]["to_k_ip"] for n in numbers]
    lora_rank = _lora_rank(lora, numbers, hidden, context_dim) if lora else 0
    if lora and not variant.startswith("faceid"):
        raise UnsupportedAdapterError(
            f"the file has FaceID LoRA weights ({len(lora)} tensors) but a {variant} image projection, which no "
            f"released adapter combines; the file mixes two adapters. {_summary(sd)}"
        )
    base_model = _base_model_for(context_dim, list(zip(numbers, hidden)))
    if base_model == "custom" and context_dim in (768, 2048):
        family = "SD1.5" if context_dim == 768 else "SDXL"
        expected = layer_specs("sd15" if context_dim == 768 else "sdxl")
        raise UnsupportedAdapterError(
            f"context width {context_dim} means {family}, which has {len(expected)} cross-attention layers "
            f"numbered {expected[0].key_number}..{expected[-1].key_number}, but the file has {len(numbers)} layers "
            f"({numbers[:4]}...) with widths {sorted(set(hidden))}; the file is incomplete or damaged: download it again."
        )
    kolors = (variant == "plus" and base_model == "sdxl" and resampler.dim == KOLORS_RESAMPLER_DIM
              and encoder_name_for(PENULTIMATE, encoder_width) == "ViT-L/14")
    if token_dim and (base_model != "sdxl" or lora):
        found = "a FaceID LoRA" if lora else f"{len(numbers)} K'/V' layers that do not fit Kolors' SDXL-shaped UNet (70)"
        raise UnsupportedAdapterError(
            f"a FaceID-Plus file with {token_dim}-wide tokens (Kolors FaceID-Plus's layout) but {found}, which no "
            f"released file has; the file is damaged or mixes two adapters: {_summary(sd)}"
        )
    config = _config(variant, base_model, context_dim, num_tokens, encoder_width, resampler, numbers, hidden,
                     lora_rank=lora_rank, clip_width=clip_width, kolors=kolors or bool(token_dim), token_dim=token_dim)
    check_layout(sd, config)
    return config


def _kv_input_width(ip: dict, sd: dict) -> int:
    """The width K'/V' read (to_k_ip's in-features): Kolors FaceID's tokens are wider, mapped by encoder_hid_proj."""
    widths = {int(t.shape[1]) for k, t in ip.items() if _IP_KEY.match(k) and isinstance(t, torch.Tensor) and t.ndim == 2}
    if len(widths) != 1:
        raise UnsupportedAdapterError(
            f"the to_k_ip / to_v_ip weights read {sorted(widths) or 'no'} widths; a Kolors FaceID-Plus file has one "
            f"(2048). The file is damaged or mixes two adapters: {_summary(sd)}"
        )
    return widths.pop()


def check_layout(sd: dict, config: AdapterConfig) -> None:
    """Every image_proj tensor the layout needs, of the shape it needs, and nothing else (before any is used)."""
    from .projection import build_projection  # projection builds on this module's config

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_projection(config).state_dict().items()}
    got = sd.get("image_proj") or {}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = [f"{k} {list(got[k].shape)} (expected {list(expected[k])})" for k in sorted(expected) if k in got and tuple(got[k].shape) != expected[k]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {', '.join(missing[:3])})")
    if wrong:
        problems.append(f"{len(wrong)} of other shapes (e.g. {'; '.join(wrong[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if problems:
        raise AdapterFileError(
            f"weights do not fit the detected layout ({config.description}): image_proj has {'; '.join(problems)}. "
            "The file is incomplete, damaged or mixes two adapters: download it again."
        )


def _resampler_config(proj: dict, prefix: str, dim: int, num_queries: int, embedding_dim: int, output_dim: int) -> ResamplerConfig:
    inner_dim = _dims(proj, "image_proj", f"{prefix}layers.0.0.to_q.weight", 2, "plus")[0]
    indices = {int(m.group(1)) for k in proj if k.startswith(prefix) and (m := _RESAMPLER_LAYER.match(k[len(prefix):]))}
    depth = max(indices) + 1
    ff_hidden = _dims(proj, "image_proj", f"{prefix}layers.0.1.1.weight", 2, "plus")[0]
    dim_head = 64  # every released Resampler uses 64-wide heads; heads = inner width / 64
    if inner_dim % dim_head:
        dim_head = inner_dim
    return ResamplerConfig(
        dim=dim, depth=depth, dim_head=dim_head, heads=inner_dim // dim_head, num_queries=num_queries,
        embedding_dim=embedding_dim, output_dim=output_dim,
        ff_mult=_whole(ff_hidden, dim, "the Resampler's feed-forward width over its width"),
    )


_LORA_KEY = re.compile(r"^(\d+)\.(to_q_lora|to_k_lora|to_v_lora|to_out_lora)\.(down|up)\.weight$")


def lora_shapes(cross_numbers, hidden_sizes, context_dim: int, rank: int) -> dict:
    """Every FaceID LoRA key with its shape. Processor n = cross-attention layer key number (attn2) and n - 1
    (the attn1 of the same transformer block): q, k, v, out are hidden -> hidden, except attn2's k and v, which
    read the context. down: [rank, in], up: [out, rank] (diffusers LoRALinearLayer, no alpha)."""
    shapes = {}
    for n, hidden in zip(cross_numbers, hidden_sizes):
        for number, ctx in ((n - 1, hidden), (n, context_dim)):
            for proj, in_features in (("to_q", hidden), ("to_k", ctx), ("to_v", ctx), ("to_out", hidden)):
                shapes[f"{number}.{proj}_lora.down.weight"] = (rank, in_features)
                shapes[f"{number}.{proj}_lora.up.weight"] = (hidden, rank)
    return shapes


def _lora_rank(lora: dict, numbers, hidden, context_dim) -> int:
    rank = int(lora["1.to_q_lora.down.weight"].shape[0]) if "1.to_q_lora.down.weight" in lora else int(next(iter(lora.values())).shape[0])
    expected = lora_shapes(numbers, hidden, context_dim, rank)
    missing = sorted(set(expected) - set(lora), key=_natural)
    extra = sorted(set(lora) - set(expected), key=_natural)
    wrong = [f"{k} {list(lora[k].shape)} (expected {list(expected[k])})" for k in sorted(expected, key=_natural)
             if k in lora and tuple(lora[k].shape) != expected[k]]
    if missing or extra or wrong:
        raise UnsupportedAdapterError(
            f"the FaceID LoRA weights do not fit the file's {len(numbers)} cross-attention layers (rank {rank}): "
            f"{len(missing)} missing (e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]}), "
            f"{len(wrong)} of the wrong shape (e.g. {wrong[:2]}); the file is incomplete or damaged."
        )
    return rank


def _natural(key: str):
    number, rest = key.split(".", 1)
    return int(number), rest
