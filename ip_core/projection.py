"""Image projections: encoder features -> context tokens. Same modules and key names as the official code
(tencent-ailab/IP-Adapter ip_adapter.py and resampler.py), so released state dicts load strictly."""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import AdapterConfig


class ImageProjModel(nn.Module):
    """Base / light: Linear(E -> N*ctx), reshape to N tokens, LayerNorm(ctx)."""

    def __init__(self, cross_attention_dim: int = 768, clip_embeddings_dim: int = 1024, clip_extra_context_tokens: int = 4):
        super().__init__()
        self.cross_attention_dim = cross_attention_dim
        self.clip_extra_context_tokens = clip_extra_context_tokens
        self.proj = nn.Linear(clip_embeddings_dim, clip_extra_context_tokens * cross_attention_dim)
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(image_embeds).reshape(-1, self.clip_extra_context_tokens, self.cross_attention_dim)
        return self.norm(tokens)


class MLPProjModel(nn.Module):
    """Full-face: a two-layer MLP applied to every penultimate hidden state token."""

    def __init__(self, cross_attention_dim: int = 768, clip_embeddings_dim: int = 1280):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Linear(clip_embeddings_dim, clip_embeddings_dim),
            nn.GELU(),
            nn.Linear(clip_embeddings_dim, cross_attention_dim),
            nn.LayerNorm(cross_attention_dim),
        )

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        return self.proj(image_embeds)


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    inner = int(dim * mult)
    # Indices 0, 1, 3 hold weights: the released keys are layers.{i}.1.{0,1,3}.
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(), nn.Linear(inner, dim, bias=False))


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, length, _ = x.shape
    return x.view(b, length, heads, -1).transpose(1, 2)


class PerceiverAttention(nn.Module):
    def __init__(self, *, dim: int, dim_head: int = 64, heads: int = 8):
        super().__init__()
        self.dim_head = dim_head
        self.heads = heads
        inner = dim_head * heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        latents = self.norm2(latents)
        b, length, _ = latents.shape
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat((x, latents), dim=-2)).chunk(2, dim=-1)
        q, k, v = (_heads(t, self.heads) for t in (q, k, v))
        # The official code splits the scale over q and k and does the softmax in fp32 (fp16 safety).
        scale = 1 / math.sqrt(math.sqrt(self.dim_head))
        weight = (q * scale) @ (k * scale).transpose(-2, -1)
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        out = (weight @ v).permute(0, 2, 1, 3).reshape(b, length, -1)
        return self.to_out(out)


class Resampler(nn.Module):
    """Plus / plus-face: learned queries cross-attend to the encoder's penultimate hidden states."""

    def __init__(self, dim=768, depth=4, dim_head=64, heads=12, num_queries=16, embedding_dim=1280, output_dim=768, ff_mult=4):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim**0.5)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            [nn.ModuleList([PerceiverAttention(dim=dim, dim_head=dim_head, heads=heads), _feed_forward(dim, ff_mult)]) for _ in range(depth)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        latents = self.latents.repeat(x.size(0), 1, 1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


def build_projection(config: AdapterConfig) -> nn.Module:
    if config.projection == "linear":
        return ImageProjModel(config.context_dim, config.encoder_width, config.num_tokens)
    if config.projection == "resampler":
        r = config.resampler
        return Resampler(r.dim, r.depth, r.dim_head, r.heads, r.num_queries, r.embedding_dim, r.output_dim, r.ff_mult)
    if config.projection == "mlp":
        return MLPProjModel(config.context_dim, config.encoder_width)
    raise ValueError(f"unknown projection {config.projection!r}")
