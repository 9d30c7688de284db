"""SD1.5 and SDXL (and custom UNets of that shape): the base, plus (Resampler, ViT-H or ViT-bigG), plus-face and
full-face (MLP) layouts, and the reading every SD-UNet family shares (FaceID and Kolors build on it): the
ip_adapter part's K'/V' per cross-attention layer, the FaceID LoRA beside them, and the base model they fit."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..adapter import IPAdapter
from ..config import FULL_FACE_TOKENS, AdapterConfig, ResamplerConfig, base_model_for, config_from_layout
from ..errors import UnsupportedAdapterError
from ..layers import layer_specs
from ..lora import LORA_KEY, read_lora_rank
from ..projection import check_layout
from ..state_dict import shape_of, summarize, tensor_dims, whole_number

NAME = "sd"
LABEL = "SD1.5 / SDXL"
adapter_class = IPAdapter

_IP_KEY = re.compile(r"^(\d+)\.(to_k_ip|to_v_ip)\.weight$")
_RESAMPLER_LAYER = re.compile(r"^layers\.(\d+)\.")


@dataclass(frozen=True)
class ProjectionLayout:
    """What a family reads from image_proj; the layers, LoRA and base model are read alike for every SD UNet.
    kolors: the Kolors layout when the UNet is SDXL-shaped (the tokens' width decides it when token_dim is set)."""

    variant: str
    context_dim: int
    num_tokens: int
    encoder_width: int
    resampler: Optional[ResamplerConfig] = None
    clip_width: int = 0
    token_dim: int = 0
    kolors: bool = False


# A reader: (image_proj, ip_adapter without LoRA, LoRA tensors, whole state dict) -> its layout, or None.
ProjectionReader = Callable[[dict, dict, dict, dict], Optional[ProjectionLayout]]


def read_resampler_config(proj: dict, prefix: str, dim: int, num_queries: int, embedding_dim: int,
                          output_dim: int) -> ResamplerConfig:
    """A Resampler's config from its tensors under `prefix` (plus, FaceID Plus's perceiver)."""
    inner_dim = tensor_dims(proj, "image_proj", f"{prefix}layers.0.0.to_q.weight", 2, "plus")[0]
    indices = {int(m.group(1)) for k in proj if k.startswith(prefix) and (m := _RESAMPLER_LAYER.match(k[len(prefix):]))}
    depth = max(indices) + 1
    ff_hidden = tensor_dims(proj, "image_proj", f"{prefix}layers.0.1.1.weight", 2, "plus")[0]
    dim_head = 64  # every released Resampler uses 64-wide heads; heads = inner width / 64
    if inner_dim % dim_head:
        dim_head = inner_dim
    return ResamplerConfig(
        dim=dim, depth=depth, dim_head=dim_head, heads=inner_dim // dim_head, num_queries=num_queries,
        embedding_dim=embedding_dim, output_dim=output_dim,
        ff_mult=whole_number(ff_hidden, dim, "the Resampler's feed-forward width over its width"),
    )


def read_unet_adapter(sd: dict, read_projection: ProjectionReader) -> Optional[AdapterConfig]:
    """The config of an SD-UNet adapter whose image_proj `read_projection` knows (None: it does not); every
    tensor of the layout is checked (check_layout), so what passes here builds and runs."""
    proj = sd.get("image_proj") or {}
    ip = sd.get("ip_adapter") or {}
    lora = {k: t for k, t in ip.items() if LORA_KEY.match(k)}
    ip = {k: t for k, t in ip.items() if k not in lora}
    if not proj or not ip:
        raise UnsupportedAdapterError(f"not a complete IP-Adapter: {summarize(sd)}. Expected both image_proj and ip_adapter weights: download the file again.")
    layout = read_projection(proj, ip, lora, sd)
    if layout is None:
        return None
    variant, context_dim, token_dim = layout.variant, layout.context_dim, layout.token_dim
    layers = {}
    for key, t in ip.items():
        m = _IP_KEY.match(key)
        if not m:
            raise UnsupportedAdapterError(f"unexpected ip_adapter key {key!r}: {summarize(sd)}. Use an IP-Adapter file in the released layout.")
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
    lora_rank = read_lora_rank(lora, numbers, hidden, context_dim) if lora else 0
    if lora and not variant.startswith("faceid"):
        raise UnsupportedAdapterError(
            f"the file has FaceID LoRA weights ({len(lora)} tensors) but a {variant} image projection, which no "
            f"released adapter combines; the file mixes two adapters. {summarize(sd)}"
        )
    base_model = base_model_for(context_dim, list(zip(numbers, hidden)))
    if base_model == "custom" and context_dim in (768, 2048):
        family = "SD1.5" if context_dim == 768 else "SDXL"
        expected = layer_specs("sd15" if context_dim == 768 else "sdxl")
        raise UnsupportedAdapterError(
            f"context width {context_dim} means {family}, which has {len(expected)} cross-attention layers "
            f"numbered {expected[0].key_number}..{expected[-1].key_number}, but the file has {len(numbers)} layers "
            f"({numbers[:4]}...) with widths {sorted(set(hidden))}; the file is incomplete or damaged: download it again."
        )
    if token_dim and (base_model != "sdxl" or lora):
        found = "a FaceID LoRA" if lora else f"{len(numbers)} K'/V' layers that do not fit Kolors' SDXL-shaped UNet (70)"
        raise UnsupportedAdapterError(
            f"a FaceID-Plus file with {token_dim}-wide tokens (Kolors FaceID-Plus's layout) but {found}, which no "
            f"released file has; the file is damaged or mixes two adapters: {summarize(sd)}"
        )
    kolors = bool(token_dim) or (layout.kolors and base_model == "sdxl")
    config = config_from_layout(variant, base_model, context_dim, layout.num_tokens, layout.encoder_width,
                                layout.resampler, numbers, hidden, lora_rank=lora_rank, clip_width=layout.clip_width,
                                kolors=kolors, token_dim=token_dim)
    check_layout(sd, config)
    return config


def ip_key_widths(ip: dict) -> set:
    """The widths the K'/V' weights read (their in-features)."""
    return {int(t.shape[1]) for k, t in ip.items() if _IP_KEY.match(k) and isinstance(t, torch.Tensor) and t.ndim == 2}


def read_plus(proj: dict) -> tuple:
    """(queries, width, context width, encoder width) of a Resampler projection (plus, FaceID portrait unnorm)."""
    _, num_queries, dim = tensor_dims(proj, "image_proj", "latents", 3, "plus")
    context_dim, _ = tensor_dims(proj, "image_proj", "proj_out.weight", 2, "plus")
    encoder_width = tensor_dims(proj, "image_proj", "proj_in.weight", 2, "plus")[1]
    return num_queries, dim, context_dim, encoder_width


def is_resampler(proj: dict) -> bool:
    """A Resampler with its own queries (plus, Kolors plus, FaceID portrait unnorm); a linear projection wins."""
    return "latents" in proj and "proj_in.weight" in proj and not ("proj.weight" in proj and "norm.weight" in proj)


def _read_projection(proj: dict, ip: dict, lora: dict, sd: dict) -> Optional[ProjectionLayout]:
    if "proj.weight" in proj and "norm.weight" in proj:
        variant = "base"
        out_features, encoder_width = tensor_dims(proj, "image_proj", "proj.weight", 2, variant)
        (context_dim,) = tensor_dims(proj, "image_proj", "norm.weight", 1, variant)
        if out_features % context_dim:
            raise UnsupportedAdapterError(
                f"image_proj.proj.weight {list(shape_of(proj, 'proj.weight'))} is not a whole number of "
                f"{context_dim}-wide tokens; the file is damaged or not an IP-Adapter: download it again. {summarize(sd)}"
            )
        return ProjectionLayout(variant, context_dim, out_features // context_dim, encoder_width)
    if is_resampler(proj):
        num_queries, dim, context_dim, encoder_width = read_plus(proj)
        resampler = read_resampler_config(proj, "", dim, num_queries, encoder_width, context_dim)
        return ProjectionLayout("plus", context_dim, num_queries, encoder_width, resampler)
    if "proj.0.weight" in proj and "proj.2.weight" in proj and "proj.3.weight" in proj:
        variant = "full-face"
        encoder_width = tensor_dims(proj, "image_proj", "proj.0.weight", 2, variant)[1]
        context_dim = tensor_dims(proj, "image_proj", "proj.2.weight", 2, variant)[0]
        return ProjectionLayout(variant, context_dim, FULL_FACE_TOKENS, encoder_width)
    raise UnsupportedAdapterError(f"unknown image projection layout: {summarize(sd)}. Use a base, plus, plus-face or full-face IP-Adapter file.")


def detect(sd: dict) -> Optional[AdapterConfig]:
    """The last family the registry asks: an SD layout, or a refusal naming the layouts it knows."""
    return read_unet_adapter(sd, _read_projection)


def owns(config: AdapterConfig) -> bool:
    return config.base_model in ("sd15", "sdxl", "custom") and not config.kolors and not config.is_faceid
