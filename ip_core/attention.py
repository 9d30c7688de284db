"""The decoupled cross-attention of the paper, one function for the nodes and the trainer:

    Z = Attn(Q, K, V) + lambda * Attn(Q, K', V')

q, k, v arrive already projected (ComfyUI's attn2 replace patches and diffusers processors both have them
in [batch, tokens, heads * dim_head] form); the output goes through the layer's to_out afterwards.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F

AttentionFn = Callable[..., torch.Tensor]


def rms_heads(x: torch.Tensor, head_dim: int, weight: Optional[torch.Tensor] = None, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm of x [..., H*D] per head of head_dim, times weight [D] when given (diffusers RMSNorm: the mean of
    squares in fp32); the result in x's dtype. The adapters of the DiT families norm their queries / keys so."""
    h = x.reshape(*x.shape[:-1], -1, head_dim).float()
    out = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        out = out * weight.float()
    return out.to(x.dtype).reshape(x.shape)


def multihead_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Scaled dot-product attention over `heads` heads; [B, L, H*D] in and out, scale 1/sqrt(D)."""
    b, lq, inner = q.shape
    d = inner // heads
    if k.shape[0] != b:  # one set of image tokens shared by the whole batch
        k = k.expand(b, -1, -1)
        v = v.expand(b, -1, -1)
    q = q.view(b, lq, heads, d).transpose(1, 2)
    k = k.reshape(b, -1, heads, d).transpose(1, 2)
    v = v.reshape(b, -1, heads, d).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    return out.transpose(1, 2).reshape(b, lq, inner)


def image_attention(
    q: torch.Tensor,
    ip_k: torch.Tensor,
    ip_v: torch.Tensor,
    heads: int,
    weight: Union[float, torch.Tensor] = 1.0,
    spatial_mask: Optional[torch.Tensor] = None,
    attention: AttentionFn = multihead_attention,
) -> torch.Tensor:
    """The image term of the decoupled attention: weight * spatial_mask * Attn(q, K', V').

    weight: a number or one per batch item ([B]); spatial_mask: None or a tensor that broadcasts to
    [B, Lq, 1]. Stacked adapters add their image terms to the same text attention.
    """
    ip_out = attention(q, ip_k, ip_v, heads)
    if isinstance(weight, torch.Tensor):
        ip_out = ip_out * weight.to(ip_out.dtype).reshape(-1, 1, 1)
    elif weight != 1:
        ip_out = ip_out * weight
    if spatial_mask is not None:
        ip_out = ip_out * spatial_mask.to(ip_out.dtype)
    return ip_out


def decoupled_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    ip_k: Optional[torch.Tensor],
    ip_v: Optional[torch.Tensor],
    heads: int,
    weight: Union[float, torch.Tensor] = 1.0,
    spatial_mask: Optional[torch.Tensor] = None,
    attention: AttentionFn = multihead_attention,
) -> torch.Tensor:
    """Text attention plus `weight` times image attention with the same queries.

    weight: a number, or a tensor of one weight per batch item ([B]); spatial_mask: None or a tensor that
    broadcasts to [B, Lq, 1] and scales the image branch per query position (regional prompting).
    A weight of exactly 0 (a number) or no image tokens returns the text attention itself: bit for bit
    the unpatched model, and the image branch is not computed.
    """
    out = attention(q, k, v, heads)
    if ip_k is None or (not isinstance(weight, torch.Tensor) and weight == 0):
        return out
    return out + image_attention(q, ip_k, ip_v, heads, weight, spatial_mask, attention)


# embeds scaling (the widely used pack's option): where lambda enters the image term. "V only" scales the
# term's output (the paper's form); the others fold lambda into K' and V' (so into the softmax too), the
# "C penalty" ones first scale lambda by the layer width / 1280, and the last scales only V's token mean.
_C_PENALTY_WIDTH = 1280.0


def scaled_image_kv(ip_k: torch.Tensor, ip_v: torch.Tensor, weight: float, scaling: str = "V only"):
    """(K'', V'', output weight) so that image_attention(q, K'', V'', weight=output weight) is the image term
    of `scaling` at lambda `weight`. ip_k, ip_v: [B, tokens, width]. Done once per layer, not per call."""
    if scaling == "V only":
        return ip_k, ip_v, weight
    if scaling == "K+V":
        return ip_k * weight, ip_v * weight, 1.0
    s = weight * (ip_k.shape[-1] / _C_PENALTY_WIDTH)
    if scaling == "K+V w/ C penalty":
        return ip_k * s, ip_v * s, 1.0
    if scaling == "K+mean(V) w/ C penalty":
        mean = ip_v.mean(dim=1, keepdim=True)
        return ip_k * s, (ip_v - mean) + mean * s, 1.0
    raise ValueError(f"unknown embeds scaling {scaling!r}")
