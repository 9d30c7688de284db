"""Kwai Kolors (an SDXL-shaped UNet, CLIP ViT-L/14 at 336 px): its IP-Adapter-Plus (a 2048-wide Resampler over
ViT-L/14 hidden states) and FaceID-Plus, whose 4096-wide face tokens reach K'/V' through the Kolors UNet's
encoder_hid_proj.

Kolors' UNet maps its ChatGLM text states (4096 wide) to the 2048-wide cross-attention context with a Linear
layer of its own, encoder_hid_proj. The official FaceID-Plus pipeline (Kwai-Kolors/Kolors, ipadapter_FaceID)
appends the 6 face tokens to the text states before that layer, so the adapter's to_k_ip / to_v_ip read
encoder_hid_proj(tokens). The widely used pack does the same per adapter, with the layer's weight and bias both
multiplied by its weight_kolors input (1 = the official pipeline). The host side hands this module the layer's
weight and bias; nothing here knows the host.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F

from ..adapter import IPAdapter
from ..config import KOLORS_ENCODER, KOLORS_RESAMPLER_DIM, AdapterConfig
from ..encoder_table import PENULTIMATE, encoder_file_for, encoder_name_for, encoder_spec, hidden_tokens
from ..errors import AdapterMismatchError, IPAdapterError, UnsupportedAdapterError
from ..state_dict import summarize
from .faceid import check_face_context, is_kolors_face_layout, read_face_projection
from .sd import ProjectionLayout, ip_key_widths, is_resampler, read_plus, read_resampler_config, read_unet_adapter

NAME = "kolors"
LABEL = "Kolors"
adapter_class = IPAdapter


def kv_input_width(ip: dict, sd: dict) -> int:
    """The width K'/V' read (to_k_ip's in-features): Kolors FaceID's tokens are wider, mapped by encoder_hid_proj."""
    widths = ip_key_widths(ip)
    if len(widths) != 1:
        raise UnsupportedAdapterError(
            f"the to_k_ip / to_v_ip weights read {sorted(widths) or 'no'} widths; a Kolors FaceID-Plus file has one "
            f"(2048). The file is damaged or mixes two adapters: {summarize(sd)}"
        )
    return widths.pop()


def _read_projection(proj: dict, ip: dict, lora: dict, sd: dict) -> Optional[ProjectionLayout]:
    face = read_face_projection(proj, ip, lora, sd)
    if face is not None and not is_kolors_face_layout(face):
        return None  # an SD FaceID file (ip_core.families.faceid)
    if face is not None:  # FaceID-Plus: tokens 4096 wide, K'/V' read the UNet's 2048-wide context
        return check_face_context(dataclasses.replace(face, token_dim=face.context_dim, context_dim=kv_input_width(ip, sd)), sd)
    if not is_resampler(proj):
        return None
    num_queries, dim, context_dim, encoder_width = read_plus(proj)
    resampler = read_resampler_config(proj, "", dim, num_queries, encoder_width, context_dim)
    # the widely used pack's rule: SDXL and a Resampler 2048 wide over ViT-L/14 (its 336 px sibling's widths)
    if resampler.dim != KOLORS_RESAMPLER_DIM or encoder_name_for(PENULTIMATE, encoder_width) != "ViT-L/14":
        return None
    return ProjectionLayout("plus", context_dim, num_queries, encoder_width, resampler, kolors=True)


def detect(sd: dict) -> Optional[AdapterConfig]:
    return read_unet_adapter(sd, _read_projection)


def owns(config: AdapterConfig) -> bool:
    return config.kolors

# The face crop the CLIP part sees: aligned at 336 px for Kolors' ViT-L/14-336 (224 px for the other FaceID-Plus,
# as the official code); the widely used pack crops SDXL faces at 256 px (its encoder then resizes them to 224).
KOLORS_FACE_CROP = 336
FACE_CROP = 224
PACK_SDXL_FACE_CROP = 256


def face_crop_size(config: AdapterConfig, legacy: bool = False) -> int:
    """Side of the aligned face crop an adapter's CLIP part is fed; legacy: the widely used pack's norm_crop size."""
    if config.token_dim:
        return KOLORS_FACE_CROP
    return PACK_SDXL_FACE_CROP if legacy and config.base_model == "sdxl" else FACE_CROP


def check_encoder_hid_proj(config: AdapterConfig, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                           model_label: str = "the model") -> None:
    """The model must have an encoder_hid_proj of the shape the adapter's tokens and K'/V' need."""
    want = [config.context_dim, config.token_dim]
    if weight is None:
        raise AdapterMismatchError(
            f"adapter/model mismatch: the adapter ({config.description}) needs the Kolors UNet's encoder_hid_proj "
            f"(Linear {config.token_dim} -> {config.context_dim}), but {model_label} has none: it is not a Kolors "
            "UNet. Use a Kolors model loaded with its encoder_hid_proj."
        )
    if list(weight.shape) != want or bias is None or list(bias.shape) != [config.context_dim]:
        got = f"weight {list(weight.shape)}, bias {list(bias.shape) if bias is not None else None}"
        raise AdapterMismatchError(
            f"adapter/model mismatch: the adapter ({config.description}) needs an encoder_hid_proj of weight {want} "
            f"and bias [{config.context_dim}], but {model_label}'s has {got}. Use a Kolors model."
        )


def hid_proj_tokens(tokens: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, weight_kolors: float = 1.0) -> torch.Tensor:
    """tokens [B, T, 4096] -> [B, T, 2048] through encoder_hid_proj with weight and bias scaled by weight_kolors
    (the scaled layer, then the product: the pack's order of operations), in the tokens' dtype and device."""
    weight = (weight * weight_kolors).to(tokens.device, tokens.dtype)  # scaled in the model's dtype, as the pack
    bias = (bias * weight_kolors).to(tokens.device, tokens.dtype)
    return F.linear(tokens, weight, bias)


def kolors_context_embeds(config: AdapterConfig, embeds, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                          weight_kolors: float = 1.0, model_label: str = "the model"):
    """Kolors FaceID-Plus embeds (4096-wide tokens, after the PlusV2 shortcut) -> the same embeds with 2048-wide
    context tokens for K'/V'. Other adapters' embeds are returned unchanged (weight_kolors means nothing there,
    as in the widely used pack)."""
    if not config.token_dim:
        return embeds
    check_encoder_hid_proj(config, weight, bias, model_label)
    for name, t in (("cond", embeds.cond), ("uncond", embeds.uncond)):
        if t.shape[-1] != config.token_dim:
            raise IPAdapterError(f"{name} tokens are {t.shape[-1]} wide; {config.description} makes {config.token_dim}-wide tokens.")
    with torch.no_grad():
        cond = hid_proj_tokens(embeds.cond, weight, bias, weight_kolors)
        uncond = hid_proj_tokens(embeds.uncond, weight, bias, weight_kolors)
    changes = {"cond": cond, "uncond": uncond}
    if hasattr(embeds, "parts"):
        changes["parts"] = None  # the shortcut is applied: the 4096-wide parts no longer describe these tokens
    return dataclasses.replace(embeds, **changes)


def check_face_clip_tokens(config: AdapterConfig, hidden: torch.Tensor, encoder_label: str) -> None:
    """Kolors FaceID-Plus's CLIP part is ViT-L/14 at 336 px: its 224 px sibling has the same width, not the
    same token count (577 vs 257)."""
    if not config.kolors:
        return
    spec = encoder_spec(KOLORS_ENCODER)
    want = hidden_tokens(spec.dims)
    if hidden.shape[1] != want:
        raise AdapterMismatchError(
            f"adapter/encoder mismatch: the adapter ({config.description}) needs {KOLORS_ENCODER} hidden states "
            f"({want} tokens, {spec.dims.image_size} px images), but {encoder_label} gives {hidden.shape[1]} tokens; "
            f"load {encoder_file_for(KOLORS_ENCODER)} as the CLIP vision model."
        )
