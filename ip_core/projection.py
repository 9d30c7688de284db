"""Image projections: encoder features -> context tokens. Same modules and key names as the official code
(tencent-ailab/IP-Adapter ip_adapter.py and resampler.py), so released state dicts load strictly."""
from __future__ import annotations

import math

import torch
from typing import Callable

from torch import nn

from .config import AdapterConfig
from .errors import AdapterFileError
from .state_dict import shape_differences


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


def feed_forward(dim: int, mult: int) -> nn.Sequential:
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

    def forward(self, x: torch.Tensor, latents: torch.Tensor, shift=None, scale=None) -> torch.Tensor:
        """shift / scale [B, dim]: an adaptive modulation of the normed latents (the timestep-conditioned
        resampler of ip_core.sd3); None for the official Resampler."""
        x = self.norm1(x)
        latents = self.norm2(latents)
        if scale is not None:
            latents = latents * (1 + scale[:, None]) + shift[:, None]
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
            [nn.ModuleList([PerceiverAttention(dim=dim, dim_head=dim_head, heads=heads), feed_forward(dim, ff_mult)]) for _ in range(depth)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        latents = self.latents.repeat(x.size(0), 1, 1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


class FaceIDProjModel(nn.Module):
    """FaceID / FaceID-portrait: a two-layer MLP on the 512-d face embedding, reshaped to N tokens, LayerNorm.

    Module names as the official MLPProjModel of ip_adapter_faceid.py (keys proj.0, proj.2, norm)."""

    def __init__(self, cross_attention_dim: int = 768, id_embeddings_dim: int = 512, num_tokens: int = 4):
        super().__init__()
        self.cross_attention_dim = cross_attention_dim
        self.num_tokens = num_tokens
        self.proj = nn.Sequential(
            nn.Linear(id_embeddings_dim, id_embeddings_dim * 2),
            nn.GELU(),
            nn.Linear(id_embeddings_dim * 2, cross_attention_dim * num_tokens),
        )
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, id_embeds: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(id_embeds).reshape(-1, self.num_tokens, self.cross_attention_dim)
        return self.norm(tokens)


class FacePerceiverResampler(nn.Module):
    """The Resampler without its own latents: the face tokens are the queries, CLIP hidden states the keys."""

    def __init__(self, *, dim=768, depth=4, dim_head=64, heads=12, embedding_dim=1280, output_dim=768, ff_mult=4):
        super().__init__()
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            [nn.ModuleList([PerceiverAttention(dim=dim, dim_head=dim_head, heads=heads), feed_forward(dim, ff_mult)]) for _ in range(depth)]
        )

    def forward(self, latents: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


class FaceIDPlusProjModel(FaceIDProjModel):
    """FaceID-Plus / PlusV2: face MLP tokens x (FaceIDProjModel's) refined by CLIP hidden states,
    r = resampler(x, clip). Plus uses r; PlusV2 uses the shortcut x + scale * r. Keys as the official
    ProjPlusModel (proj.*, norm.*, perceiver_resampler.*)."""

    def __init__(self, cross_attention_dim=768, id_embeddings_dim=512, clip_embeddings_dim=1280, num_tokens=4,
                 depth=4, dim_head=64, heads=None, ff_mult=4):
        super().__init__(cross_attention_dim, id_embeddings_dim, num_tokens)
        self.perceiver_resampler = FacePerceiverResampler(
            dim=cross_attention_dim, depth=depth, dim_head=dim_head,
            heads=heads if heads is not None else cross_attention_dim // dim_head,
            embedding_dim=clip_embeddings_dim, output_dim=cross_attention_dim, ff_mult=ff_mult,
        )

    def parts(self, id_embeds: torch.Tensor, clip_embeds: torch.Tensor):
        """(x, r): the face tokens and the resampler's output, kept apart so the shortcut scale can change later."""
        x = super().forward(id_embeds)
        return x, self.perceiver_resampler(x, clip_embeds)

    def forward(self, id_embeds, clip_embeds, shortcut: bool = False, scale: float = 1.0):
        x, r = self.parts(id_embeds, clip_embeds)
        return x + scale * r if shortcut else r


def build_projection(config: AdapterConfig) -> nn.Module:
    """The projection of the SD-UNet layouts (a family with a projection of its own builds it in its adapter's
    build_projection hook)."""
    if config.projection == "linear":
        return ImageProjModel(config.context_dim, config.encoder_width, config.num_tokens)
    if config.projection == "resampler":
        r = config.resampler
        return Resampler(r.dim, r.depth, r.dim_head, r.heads, r.num_queries, r.embedding_dim, r.output_dim, r.ff_mult)
    if config.projection == "mlp":
        return MLPProjModel(config.context_dim, config.encoder_width)
    if config.projection == "faceid-mlp":
        return FaceIDProjModel(config.context_dim, config.encoder_width, config.num_tokens)
    if config.projection == "faceid-plus":
        r = config.resampler
        return FaceIDPlusProjModel(config.projection_dim, config.encoder_width, config.clip_width, config.num_tokens,
                                   r.depth, r.dim_head, r.heads, r.ff_mult)
    raise ValueError(f"unknown projection {config.projection!r}")


def check_layout(sd: dict, config: AdapterConfig, build: Callable[[AdapterConfig], nn.Module] = build_projection) -> None:
    """Every image_proj tensor the layout needs, of the shape it needs, and nothing else (before any is used).
    `build`: the family's projection builder (its adapter class's build_projection)."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build(config).state_dict().items()}
    diff = shape_differences(expected, sd.get("image_proj") or {})
    problems = []
    if diff.missing:
        problems.append(f"{len(diff.missing)} tensors missing (e.g. {', '.join(diff.missing[:3])})")
    if diff.wrong:
        problems.append(f"{len(diff.wrong)} of other shapes (e.g. {'; '.join(diff.wrong[:3])})")
    if diff.unexpected:
        problems.append(f"{len(diff.unexpected)} unexpected (e.g. {', '.join(diff.unexpected[:3])})")
    if problems:
        raise AdapterFileError(
            f"weights do not fit the detected layout ({config.description}): image_proj has {'; '.join(problems)}. "
            "The file is incomplete, damaged or mixes two adapters: download it again."
        )
