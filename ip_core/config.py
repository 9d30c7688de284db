"""What an adapter file is, read from its keys and shapes (never its name: users rename files)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from .errors import AdapterFileError, UnsupportedAdapterError
from .layers import BASE_MODEL_NAMES, CONTEXT_DIMS, LayerSpec, custom_layer_specs, layer_specs

VARIANTS = ("base", "plus", "full-face")
PROJECTIONS = {"base": "linear", "plus": "resampler", "full-face": "mlp"}
ENCODER_OUTPUTS = {"base": "image_embeds", "plus": "penultimate_hidden_states", "full-face": "penultimate_hidden_states"}

# Width of each encoder output for the encoders released adapters were trained with.
_ENCODERS_BY_EMBEDS = {1024: "ViT-H/14", 1280: "ViT-bigG/14", 768: "ViT-L/14"}
_ENCODERS_BY_HIDDEN = {1280: "ViT-H/14", 1664: "ViT-bigG/14", 1024: "ViT-L/14"}

# A ViT/14 at 224 px has 16 x 16 patches + CLS: the full-face projection keeps all of them.
FULL_FACE_TOKENS = 257


def encoder_name_for(encoder_output: str, width: int) -> str:
    table = _ENCODERS_BY_EMBEDS if encoder_output == "image_embeds" else _ENCODERS_BY_HIDDEN
    return table.get(int(width), "unknown")


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

    def layer_specs(self) -> tuple[LayerSpec, ...]:
        if self.base_model in ("sd15", "sdxl"):
            return layer_specs(self.base_model)
        return custom_layer_specs(self.layer_key_numbers, self.layer_hidden_sizes)

    @property
    def base_model_name(self) -> str:
        return BASE_MODEL_NAMES.get(self.base_model, self.base_model)

    @property
    def encoder_requirement(self) -> str:
        """What the adapter needs from the image encoder, in words."""
        if self.encoder_name == "unknown":
            return f"{self.encoder_output} of width {self.encoder_width} (not a released CLIP encoder's width)"
        return f"{self.encoder_name} {self.encoder_output} (width {self.encoder_width})"

    @property
    def signature(self) -> str:
        """Identifies which adapters can share image prompt embeddings (same tokens in, same layout)."""
        return f"{self.base_model}/{self.variant}/{self.num_tokens}x{self.context_dim}/{self.encoder_output}:{self.encoder_width}"

    @property
    def description(self) -> str:
        kind = {"base": "base (linear projection)", "plus": "plus (Resampler)", "full-face": "full-face (MLP)"}[self.variant]
        return (
            f"{self.base_model_name} {kind}, {self.num_tokens} tokens, {self.num_layers} layers, "
            f"needs {self.encoder_requirement}"
        )


def make_config(
    variant: str,
    layers: Sequence[LayerSpec],
    context_dim: int,
    encoder_width: int,
    num_tokens: Optional[int] = None,
    resampler: Optional[ResamplerConfig] = None,
) -> AdapterConfig:
    """A config for a new adapter (the trainer's starting point), for released or custom UNets."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    layers = tuple(layers)
    base_model = _base_model_for(context_dim, [(s.key_number, s.hidden_size) for s in layers])
    if variant == "base":
        num_tokens = 4 if num_tokens is None else num_tokens
    elif variant == "plus":
        if resampler is None:
            n = 16 if num_tokens is None else num_tokens
            dim = context_dim if context_dim <= 1280 else 1280
            resampler = ResamplerConfig(
                dim=dim, depth=4, dim_head=64 if dim >= 64 else dim, heads=max(1, dim // 64),
                num_queries=n, embedding_dim=encoder_width, output_dim=context_dim,
            )
        num_tokens = resampler.num_queries
    else:
        num_tokens = FULL_FACE_TOKENS if num_tokens is None else num_tokens
    return _config(variant, base_model, context_dim, num_tokens, encoder_width, resampler,
                   [s.key_number for s in layers], [s.hidden_size for s in layers])


def _config(variant, base_model, context_dim, num_tokens, encoder_width, resampler, key_numbers, hidden_sizes) -> AdapterConfig:
    out = ENCODER_OUTPUTS[variant]
    return AdapterConfig(
        variant=variant,
        projection=PROJECTIONS[variant],
        base_model=base_model,
        context_dim=int(context_dim),
        num_layers=len(key_numbers),
        num_tokens=int(num_tokens),
        encoder_output=out,
        encoder_width=int(encoder_width),
        encoder_name=encoder_name_for(out, encoder_width),
        resampler=resampler,
        layer_key_numbers=tuple(int(n) for n in key_numbers),
        layer_hidden_sizes=tuple(int(h) for h in hidden_sizes),
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
    proj = sd.get("image_proj") or {}
    ip = sd.get("ip_adapter") or {}
    face = _shape(proj, "proj.0.weight")
    if any("lora" in k for k in ip) or any(k.startswith("perceiver_resampler") for k in proj) or (
        face is not None and len(face) == 2 and face[1] == 512
    ):
        raise UnsupportedAdapterError(
            "this is an IP-Adapter FaceID file (LoRA weights / insightface 512-d face embedding input); "
            "FaceID adapters are not supported yet. Use a base, plus, plus-face or full-face adapter."
        )
    if not proj or not ip:
        raise UnsupportedAdapterError(f"not a complete IP-Adapter: {_summary(sd)}. Expected both image_proj and ip_adapter weights: download the file again.")

    resampler = None
    if "proj.weight" in proj and "norm.weight" in proj:
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
        variant = "plus"
        _, num_queries, dim = _dims(proj, "image_proj", "latents", 3, variant)
        inner_dim = _dims(proj, "image_proj", "layers.0.0.to_q.weight", 2, variant)[0]
        indices = {int(m.group(1)) for k in proj if (m := _RESAMPLER_LAYER.match(k))}
        depth = max(indices) + 1
        ff_hidden = _dims(proj, "image_proj", "layers.0.1.1.weight", 2, variant)[0]
        context_dim, _ = _dims(proj, "image_proj", "proj_out.weight", 2, variant)
        encoder_width = _dims(proj, "image_proj", "proj_in.weight", 2, variant)[1]
        dim_head = 64  # every released Resampler uses 64-wide heads; heads = inner width / 64
        if inner_dim % dim_head:
            dim_head = inner_dim
        resampler = ResamplerConfig(
            dim=dim, depth=depth, dim_head=dim_head, heads=inner_dim // dim_head, num_queries=num_queries,
            embedding_dim=encoder_width, output_dim=context_dim,
            ff_mult=_whole(ff_hidden, dim, "the Resampler's feed-forward width over its width"),
        )
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
    base_model = _base_model_for(context_dim, list(zip(numbers, hidden)))
    if base_model == "custom" and context_dim in (768, 2048):
        family = "SD1.5" if context_dim == 768 else "SDXL"
        expected = layer_specs("sd15" if context_dim == 768 else "sdxl")
        raise UnsupportedAdapterError(
            f"context width {context_dim} means {family}, which has {len(expected)} cross-attention layers "
            f"numbered {expected[0].key_number}..{expected[-1].key_number}, but the file has {len(numbers)} layers "
            f"({numbers[:4]}...) with widths {sorted(set(hidden))}; the file is incomplete or damaged: download it again."
        )
    config = _config(variant, base_model, context_dim, num_tokens, encoder_width, resampler, numbers, hidden)
    check_layout(sd, config)
    return config


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
