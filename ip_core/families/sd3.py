"""The InstantX SD3.5-Large IP-Adapter: a timestep-conditioned Resampler and its own attention form.

SD3.5 is an MMDiT: 38 joint blocks, each one attention over the text and image tokens together (2432 wide, 38
heads of 64, RMSNorm on Q and K per head). InstantX's adapter differs from the decoupled attention of the paper in
three ways (diffusers SD3IPAdapterJointAttnProcessor2_0 and IPAdapterTimeImageProjection, which we follow):

- The projection depends on the timestep: a Resampler whose queries are modulated (adaptive LayerNorm) by a
  timestep embedding, 64 tokens of 2432 from SigLIP so400m-patch14-384's penultimate hidden states (729 x 1152).
  It runs at every step, not once per image; the embedding it makes also modulates each block's K'/V' input.
- Each block's image term attends from the image tokens' queries (the block's raw Q through the adapter's own
  RMSNorm) to the image tokens' own keys and values *plus* the image prompt's: Attn(q', [k'; K'], [v; V']),
  where k' is the block's raw K through another adapter RMSNorm and K' = RMSNorm(to_k_ip(AdaLN(tokens, t))).
- lambda times that term is added to the image part of the joint attention output, before the block's output
  projection (so through its gate).

"No image" is zero features before the projection (diffusers' SD3 pipeline), not a blank image.

File (InstantX/SD3.5-Large-IP-Adapter `ip-adapter.bin`): image_proj `latents` [1, 64, 1280], `proj_in` [1280,
1152], `proj_out` [2432, 1280], `norm_out`, `time_embedding.linear_{1,2}` (320 -> 1280), `layers.{0..3}.{0,1,2}`
(attention, feed-forward, modulation); ip_adapter `{0..37}.norm_ip.linear` [4864, 1280] (+ bias),
`{i}.to_{k,v}_ip.weight` [2432, 2432], `{i}.norm_{q,k,ip_k}.weight` [64].
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..adapter import IPAdapter
from ..attention import AttentionFn, image_attention, multihead_attention, rms_heads
from ..config import AdapterConfig, ResamplerConfig
from ..encoder_table import PENULTIMATE, encoder_name_for
from ..errors import UnsupportedAdapterError
from ..layers import LayerSpec
from ..projection import PerceiverAttention, check_layout, feed_forward
from ..state_dict import shapes_by_block, summarize, tensor_dims

NAME = "sd3"
LABEL = "SD3.5"

SD3_NAME = "SD3.5"
SD3_VARIANT = "sd35-instantx"
SD3_HIDDEN = 2432  # SD3.5 Large: 38 heads of 64
SD3_HEAD_DIM = 64
NORM_EPS = 1e-6  # the adapter's RMSNorms and the AdaLN's LayerNorm
TIMESTEP_IN_DIM = 320


@dataclass(frozen=True)
class SD3AdapterConfig(AdapterConfig):
    """Layers are the MMDiT's joint blocks; the resampler config's dim is also the timestep embedding's width."""

    blocks: int = 0
    head_dim: int = SD3_HEAD_DIM
    timestep_in_dim: int = TIMESTEP_IN_DIM

    @property
    def base_model_name(self) -> str:
        return SD3_NAME

    @property
    def hidden_size(self) -> int:
        return self.context_dim

    @property
    def time_dim(self) -> int:
        return self.resampler.dim

    @property
    def zero_features_uncond(self) -> bool:
        return True

    @property
    def prompt_tokens(self) -> tuple:
        return 0, self.encoder_width  # the embeds are encoder features; tokens are made per step (step_tokens)

    def layer_specs(self) -> tuple:
        return sd3_layer_specs(self.blocks, self.hidden_size)

    @property
    def description(self) -> str:
        plural = "s" if self.blocks > 1 else ""
        return (f"SD3.5 InstantX IP-Adapter (timestep-conditioned Resampler), {self.num_tokens} tokens, "
                f"{self.blocks} joint block{plural}, needs {self.encoder_requirement}")


def sd3_layer_specs(blocks: int, hidden_size: int) -> tuple:
    """One LayerSpec per joint block; comfy_block is the host's patches_replace["dit"] key for it."""
    return tuple(LayerSpec(index=i, key_number=i, diffusers_name=f"transformer_blocks.{i}.attn.processor",
                           comfy_block=("double_block", i), transformer_index=0, hidden_size=int(hidden_size))
                 for i in range(blocks))


def make_sd3_config(blocks: int, hidden_size: int = SD3_HIDDEN, encoder_width: int = 1152, num_tokens: int = 64,
                    resampler_dim: int = 1280, depth: int = 4, heads: int = 20, dim_head: int = 64, ff_mult: int = 4,
                    timestep_in_dim: int = TIMESTEP_IN_DIM, head_dim: int = SD3_HEAD_DIM) -> SD3AdapterConfig:
    """An SD3.5 adapter config (detection's result, and test fixtures with fewer blocks and smaller widths)."""
    resampler = ResamplerConfig(dim=int(resampler_dim), depth=int(depth), dim_head=int(dim_head), heads=int(heads),
                                num_queries=int(num_tokens), embedding_dim=int(encoder_width),
                                output_dim=int(hidden_size), ff_mult=int(ff_mult))
    return SD3AdapterConfig(
        variant=SD3_VARIANT, projection="time-resampler", base_model="sd3", context_dim=int(hidden_size),
        num_layers=int(blocks), num_tokens=int(num_tokens), encoder_output=PENULTIMATE, encoder_width=int(encoder_width),
        encoder_name=encoder_name_for(PENULTIMATE, encoder_width), resampler=resampler,
        layer_key_numbers=tuple(range(blocks)), layer_hidden_sizes=(int(hidden_size),) * int(blocks),
        blocks=int(blocks), head_dim=int(head_dim), timestep_in_dim=int(timestep_in_dim),
    )


_PARTS = ("norm_ip.linear.weight", "norm_ip.linear.bias", "to_k_ip.weight", "to_v_ip.weight", "norm_q.weight",
          "norm_k.weight", "norm_ip_k.weight")
_BLOCK_KEY = re.compile(r"^(\d+)\.(" + "|".join(re.escape(p) for p in _PARTS) + r")$")
_LAYER = re.compile(r"^layers\.(\d+)\.")


def looks_like_sd3(sd: dict) -> bool:
    """The timestep embedding of the projection, or the per-block AdaLN on the image tokens: no other layout has them."""
    proj, ip = sd.get("image_proj") or {}, sd.get("ip_adapter") or {}
    return "time_embedding.linear_1.weight" in proj or any(k.endswith(".norm_ip.linear.weight") for k in ip)


def detect_sd3_config(sd: dict) -> Optional[SD3AdapterConfig]:
    """The SD3.5 InstantX layout of a loaded state dict, None when it is not one; a damaged file is refused."""
    if not looks_like_sd3(sd):
        return None
    name = "SD3.5 InstantX IP-Adapter"
    proj, ip = sd.get("image_proj") or {}, sd.get("ip_adapter") or {}
    _, num_tokens, dim = tensor_dims(proj, "image_proj", "latents", 3, name)
    encoder_width = tensor_dims(proj, "image_proj", "proj_in.weight", 2, name)[1]
    hidden = tensor_dims(proj, "image_proj", "proj_out.weight", 2, name)[0]
    timestep_in = tensor_dims(proj, "image_proj", "time_embedding.linear_1.weight", 2, name)[1]
    inner = tensor_dims(proj, "image_proj", "layers.0.0.to_q.weight", 2, name)[0]
    ff_hidden = tensor_dims(proj, "image_proj", "layers.0.1.1.weight", 2, name)[0]
    depth = 1 + max(int(m.group(1)) for k in proj if (m := _LAYER.match(k)))
    blocks = shapes_by_block(ip, _BLOCK_KEY, f"an {name}", sd)
    numbers = sorted(blocks)
    if not numbers or numbers != list(range(len(numbers))):
        raise UnsupportedAdapterError(
            f"{name}: the joint blocks must be numbered 0..N-1, found {numbers[:5]} ({len(numbers)}); the file is "
            "incomplete or damaged: download it again.")
    head_dim = (blocks[0].get("norm_q.weight") or (0,))[0]
    expected = {"norm_ip.linear.weight": (2 * hidden, dim), "norm_ip.linear.bias": (2 * hidden,),
                "to_k_ip.weight": (hidden, hidden), "to_v_ip.weight": (hidden, hidden), "norm_q.weight": (head_dim,),
                "norm_k.weight": (head_dim,), "norm_ip_k.weight": (head_dim,)}
    for n in numbers:
        if blocks[n] != expected:
            raise UnsupportedAdapterError(
                f"{name}: joint block {n} needs {expected}, found {blocks[n]}; the file is incomplete, damaged or "
                "mixes two adapters: download it again.")
    if not head_dim or hidden % head_dim or inner % 64 or ff_hidden % dim:
        raise UnsupportedAdapterError(
            f"{name}: widths that do not split into heads (hidden {hidden}, heads of {head_dim}; resampler {inner} / 64, "
            f"feed-forward {ff_hidden} / {dim}); the file is damaged: download it again.")
    config = make_sd3_config(len(numbers), hidden, encoder_width, num_tokens, dim, depth, inner // 64, 64,
                             ff_hidden // dim, timestep_in, head_dim)
    check_layout(sd, config, TimeResampler.from_config)
    return config


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim], cosines first (diffusers Timesteps(dim, flip_sin_to_cos=True, shift 0))."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    angles = timesteps.reshape(-1, 1).float() * torch.exp(exponent)[None]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class _TimeEmbedding(nn.Module):
    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class TimeResampler(nn.Module):
    """The Resampler with a timestep: x = proj_in(features) + t_emb; in each layer the latents' normed input to
    the attention and to the feed-forward are modulated by t_emb (shift, scale). Returns (tokens, t_emb)."""

    def __init__(self, embed_dim: int, output_dim: int, dim: int, depth: int, dim_head: int, heads: int,
                 num_queries: int, ff_mult: int, timestep_in_dim: int):
        super().__init__()
        self.timestep_in_dim = timestep_in_dim
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim ** 0.5)
        self.proj_in = nn.Linear(embed_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        # Released keys: layers.{i}.0 attention, .1 feed-forward (LayerNorm at 0), .2 modulation (Linear at 1)
        self.layers = nn.ModuleList([
            nn.ModuleList([PerceiverAttention(dim=dim, dim_head=dim_head, heads=heads), feed_forward(dim, ff_mult),
                           nn.Sequential(nn.SiLU(), nn.Linear(dim, 4 * dim))])
            for _ in range(depth)])
        self.time_embedding = _TimeEmbedding(timestep_in_dim, dim)

    @classmethod
    def from_config(cls, config: SD3AdapterConfig) -> "TimeResampler":
        r = config.resampler
        return cls(r.embedding_dim, r.output_dim, r.dim, r.depth, r.dim_head, r.heads, r.num_queries, r.ff_mult,
                   config.timestep_in_dim)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor):
        t_emb = self.time_embedding(timestep_embedding(timestep, self.timestep_in_dim).to(x.dtype))
        latents = self.latents.repeat(x.shape[0], 1, 1)
        x = self.proj_in(x) + t_emb[:, None]
        for attn, ff, modulation in self.layers:
            shift_msa, scale_msa, shift_mlp, scale_mlp = modulation(t_emb).chunk(4, dim=1)
            latents = attn(x, latents, shift_msa, scale_msa) + latents
            h = ff[0](latents) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
            latents = ff[3](ff[2](ff[1](h))) + latents
        return self.norm_out(self.proj_out(latents)), t_emb


class _Linear(nn.Module):
    """A holder whose `linear` is the AdaLN's projection (released key norm_ip.linear)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)


class _Scale(nn.Module):
    """An RMSNorm's weight (released keys norm_q / norm_k / norm_ip_k .weight)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))


class SD3BlockWeights(nn.Module):
    def __init__(self, hidden: int, time_dim: int, head_dim: int):
        super().__init__()
        self.norm_ip = _Linear(time_dim, 2 * hidden)
        self.to_k_ip = nn.Linear(hidden, hidden, bias=False)
        self.to_v_ip = nn.Linear(hidden, hidden, bias=False)
        self.norm_q = _Scale(head_dim)
        self.norm_k = _Scale(head_dim)
        self.norm_ip_k = _Scale(head_dim)


def renorm_heads(x: torch.Tensor, weight: torch.Tensor, head_dim: int, host_weight: Optional[torch.Tensor] = None,
                 eps: float = NORM_EPS) -> torch.Tensor:
    """The adapter's RMSNorm (weight) of a block's raw Q or K, from what the host's attention receives: the raw
    values (host_weight None: the host has no QK norm) or their RMSNorm with host_weight (SD3.5: the same eps, so
    dividing by host_weight gives the raw values' unit-RMS form exactly; host_weight must have no zero)."""
    if host_weight is None:
        return rms_heads(x, head_dim, weight, eps)
    h = x.reshape(*x.shape[:-1], -1, head_dim).float()
    out = h / host_weight.float() * weight.float()
    return out.to(x.dtype).reshape(x.shape)


def sd3_image_term(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ip_k: torch.Tensor, ip_v: torch.Tensor,
                   heads: int, weight=1.0, spatial_mask: Optional[torch.Tensor] = None,
                   attention: AttentionFn = multihead_attention) -> torch.Tensor:
    """weight * mask * Attn(q, [k; K'], [v; V']): the image tokens' queries (q [B, L, H*D], in the adapter's
    norm) over their own keys / values (k in the adapter's norm) and the image prompt's K'/V' [B, T, H*D]."""
    keys = torch.cat([k, ip_k.to(k.dtype).expand(k.shape[0], -1, -1)], dim=1)
    values = torch.cat([v, ip_v.to(v.dtype).expand(v.shape[0], -1, -1)], dim=1)
    return image_attention(q, keys, values, heads, weight, spatial_mask, attention)


class SD3IPAdapter(IPAdapter):
    """The time resampler plus each joint block's AdaLN, K'/V' and RMSNorm weights. The projection needs the
    timestep, so `project` keeps the encoder features as they are and the sampler calls `step_tokens`."""

    @staticmethod
    def build_projection(config: SD3AdapterConfig) -> nn.Module:
        return TimeResampler.from_config(config)

    @staticmethod
    def build_layer(config: SD3AdapterConfig, spec: LayerSpec) -> nn.Module:
        return SD3BlockWeights(config.hidden_size, config.time_dim, config.head_dim)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """The image prompt of SD3.5 stays encoder features until a step gives the timestep (step_tokens)."""
        return features

    def step_tokens(self, features: torch.Tensor, timestep: torch.Tensor):
        """(tokens [B, N, hidden], timestep embedding [B, time_dim]) for features [B, T, E] at timesteps [B]."""
        return self.image_proj(features, timestep)

    def block(self, layer_index: int) -> SD3BlockWeights:
        return self.ip_layers[str(self.layers[layer_index].key_number)]

    def layer_kv(self, layer_index: int, tokens: torch.Tensor, t_emb: Optional[torch.Tensor] = None):
        """K' (RMS-normed per head) and V' of one block from the step's tokens and timestep embedding."""
        if t_emb is None:
            raise ValueError("SD3.5 adapters need the step's timestep embedding (step_tokens) for K'/V'")
        w = self.block(layer_index)
        shift, scale = w.norm_ip.linear(F.silu(t_emb)).chunk(2, dim=1)
        h = F.layer_norm(tokens, tokens.shape[-1:], eps=NORM_EPS) * (1 + scale[:, None]) + shift[:, None]
        return rms_heads(w.to_k_ip(h), self.config.head_dim, w.norm_ip_k.weight, NORM_EPS), w.to_v_ip(h)


adapter_class = SD3IPAdapter
detect = detect_sd3_config


def owns(config: AdapterConfig) -> bool:
    return isinstance(config, SD3AdapterConfig)
