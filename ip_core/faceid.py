"""FaceID adapters: the per-layer LoRA the files carry, and face embeddings -> image prompt tokens.

The official FaceID attention processors (tencent-ailab/IP-Adapter attention_processor_faceid.py) add a
rank-r LoRA to to_q, to_k, to_v and to_out of every attention layer, self- and cross-attention alike:
`proj(x) + lora_scale * up(down(x))`. That is the linear layer with weight W + lora_scale * up @ down, so a
host can merge it into the UNet's weights (and unmerge it) instead of replacing the attention code; the image
branch stays the plain decoupled attention. This module says which weight each LoRA pair belongs to.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .config import AdapterConfig
from .embeds import ImagePromptEmbeds, arrange_tokens, combine_features
from .errors import AdapterMismatchError, IPAdapterError

# (LoRA module in the file, the attention's linear layer it adds to, its name in diffusers / ldm weight keys).
LORA_PROJECTIONS = (("to_q_lora", "to_q"), ("to_k_lora", "to_k"), ("to_v_lora", "to_v"), ("to_out_lora", "to_out.0"))


class LoRALinear(nn.Module):
    """diffusers' LoRALinearLayer without network_alpha (as the FaceID files were trained): up(down(x))."""

    def __init__(self, in_features: int, out_features: int, rank: int):
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))

    def delta_weight(self) -> torch.Tensor:
        """The change of the patched layer's weight: up @ down, [out, in]."""
        return self.up.weight @ self.down.weight


class FaceIDLoRALayer(nn.Module):
    """The LoRA of one attention processor (keys `{n}.to_{q,k,v,out}_lora.{down,up}.weight`)."""

    def __init__(self, hidden_size: int, kv_in: int, rank: int):
        super().__init__()
        self.to_q_lora = LoRALinear(hidden_size, hidden_size, rank)
        self.to_k_lora = LoRALinear(kv_in, hidden_size, rank)
        self.to_v_lora = LoRALinear(kv_in, hidden_size, rank)
        self.to_out_lora = LoRALinear(hidden_size, hidden_size, rank)


def build_lora_layers(config: AdapterConfig, layers) -> nn.ModuleDict:
    """Processor n - 1 is the self-attention (attn1) of cross-attention layer n's transformer block."""
    out = {}
    for spec in layers:
        out[str(spec.key_number - 1)] = FaceIDLoRALayer(spec.hidden_size, spec.hidden_size, config.lora_rank)
        out[str(spec.key_number)] = FaceIDLoRALayer(spec.hidden_size, config.context_dim, config.lora_rank)
    return nn.ModuleDict(out)


@dataclass(frozen=True)
class LoRATarget:
    """One LoRA pair and the UNet weight it patches, named both ways (host-neutral)."""

    layer_index: int
    attention: str  # "attn1" (self) or "attn2" (cross)
    projection: str  # "to_q", "to_k", "to_v", "to_out.0"
    lora: LoRALinear
    diffusers_key: str  # e.g. down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight
    ldm_key: Optional[str]  # e.g. input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight (ComfyUI's UNet), None: custom UNet

    @property
    def shape(self) -> tuple:
        return (self.lora.up.out_features, self.lora.down.in_features)


def lora_targets(adapter) -> list:
    """Every LoRA pair of a FaceID adapter with the weight it patches, from the adapter's layer table."""
    if not adapter.config.lora_rank:
        return []
    targets = []
    for spec in adapter.layers:
        for attention, number in (("attn1", spec.key_number - 1), ("attn2", spec.key_number)):
            layer = adapter.lora_layers[str(number)]
            for lora_name, projection in LORA_PROJECTIONS:
                suffix = f"{attention}.{projection}.weight"
                targets.append(LoRATarget(
                    layer_index=spec.index, attention=attention, projection=projection,
                    lora=getattr(layer, lora_name),
                    diffusers_key=f"{spec.diffusers_block}.{suffix}" if spec.diffusers_block else "",
                    ldm_key=f"{spec.ldm_block}.{suffix}" if spec.ldm_block else None,
                ))
    return targets


def merge_lora(weight: torch.Tensor, lora: LoRALinear, strength: float = 1.0) -> torch.Tensor:
    """W + strength * up @ down: the linear layer the official processor computes, as one weight."""
    return weight + strength * lora.delta_weight().to(weight.dtype)


# ---- face embeddings -> tokens ---------------------------------------------------------------------------------


def face_features(config: AdapterConfig, embeddings: torch.Tensor) -> torch.Tensor:
    """Raw 512-d face embeddings [B, 512] -> what the adapter takes: L2-normalised (insightface's
    normed_embedding, what the FaceID files were trained on) or raw for "unnorm" portrait files."""
    if not config.is_faceid:
        raise AdapterMismatchError(f"face embeddings were given to a non-FaceID adapter ({config.description}).")
    if embeddings.ndim != 2 or embeddings.shape[-1] != config.encoder_width:
        raise AdapterMismatchError(
            f"face embeddings of shape {list(embeddings.shape)}, but the adapter ({config.description}) takes "
            f"[faces, {config.encoder_width}] (InsightFace recognition output)."
        )
    if not torch.isfinite(embeddings).all():
        raise IPAdapterError("the face embedding contains NaN or infinite values; check the face analysis model.")
    embeddings = embeddings.float()
    if config.face_embedding_normalized:
        embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return embeddings


@dataclass
class FacePromptEmbeds(ImagePromptEmbeds):
    """Tokens of a FaceID adapter. For FaceID Plus the two parts are kept: x (face MLP tokens) and r (the
    resampler's output given CLIP); the tokens are r (Plus) or x + faceidv2 * r (PlusV2 shortcut)."""

    shortcut: bool = False
    parts: Optional[tuple] = None  # (x_cond, r_cond, x_uncond, r_uncond), arranged like cond / uncond

    def to(self, device=None, dtype=None) -> "FacePromptEmbeds":
        move = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
        parts = tuple(move(t) for t in self.parts) if self.parts else None
        return dataclasses.replace(self, cond=move(self.cond), uncond=move(self.uncond), parts=parts)

    def with_faceidv2(self, scale: float) -> "FacePromptEmbeds":
        """PlusV2's shortcut scale (official s_scale): x + scale * r. Other FaceID embeds are returned as they are."""
        if not (self.shortcut and self.parts):
            return self
        xc, rc, xu, ru = self.parts
        return dataclasses.replace(self, cond=xc + scale * rc, uncond=xu + scale * ru)


def build_face_prompt(adapter, face_embeddings: torch.Tensor, clip_hidden: Optional[torch.Tensor] = None,
                      uncond_clip_hidden: Optional[torch.Tensor] = None, combine: str = "concat",
                      shortcut: bool = True, encoder_name: str = "InsightFace ArcFace") -> FacePromptEmbeds:
    """Cond / uncond tokens of a FaceID adapter, as the official get_image_embeds computes them.

    face_embeddings: raw [B, 512] (normalised here when the adapter expects it). Uncond = the projection of
    a zero face embedding (and, for Plus, of the CLIP hidden states of an all-zero normalised image).
    clip_hidden: Plus only, [B, T, W] penultimate hidden states of the aligned face crops. shortcut: Plus only
    (True = PlusV2, False = Plus v1).
    """
    config = adapter.config
    if face_embeddings.shape[0] == 0:
        raise IPAdapterError("no face embeddings: give at least one face image")
    face = face_features(config, face_embeddings)
    param = next(adapter.parameters())
    face = combine_features(face, combine).to(param.device, param.dtype)
    zero = torch.zeros_like(face)
    if config.variant == "faceid-portrait-unnorm":
        face, zero = face[:, None], zero[:, None]  # the Resampler reads the embedding as a one-token sequence
    parts = None
    with torch.no_grad():
        if config.variant == "faceid-plus":
            if clip_hidden is None or uncond_clip_hidden is None:
                raise AdapterMismatchError(f"{config.description}: the CLIP hidden states of the face crops are needed.")
            if clip_hidden.shape[0] != face_embeddings.shape[0]:
                raise IPAdapterError(f"{clip_hidden.shape[0]} face crops for {face_embeddings.shape[0]} face embeddings")
            clip = combine_features(clip_hidden.float(), combine).to(param.device, param.dtype)
            uclip = uncond_clip_hidden.float().to(param.device, param.dtype).expand(clip.shape[0], *uncond_clip_hidden.shape[1:])
            xc, rc = adapter.image_proj.parts(face, clip)
            xu, ru = adapter.image_proj.parts(zero, uclip)
            xc, rc, xu, ru = (arrange_tokens(t, combine) for t in (xc, rc, xu, ru))
            parts = (xc, rc, xu, ru)
            cond, uncond = (xc + rc, xu + ru) if shortcut else (rc, ru)
        else:
            cond = arrange_tokens(adapter.project(face), combine)
            uncond = arrange_tokens(adapter.project(zero), combine)
    return FacePromptEmbeds(cond, uncond, config.signature, config.description, encoder_name, adapter.fingerprint(),
                            shortcut=bool(shortcut and parts), parts=parts)
