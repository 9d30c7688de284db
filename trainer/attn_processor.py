"""diffusers attention processor for the decoupled cross-attention, computed by ip_core's one function.

Z = Attn(Q, K, V) + scale * Attn(Q, K', V'), then the layer's to_out (REFERENCE.md section 1). The math is
ip_core.attention.decoupled_attention: text attention plus ip_core.attention.image_attention, the image term
the ComfyUI nodes add in every patched layer, so what is trained is what is run.

The image side comes from an `IPContext` the owning IPAdapterUNet sets before each UNet call: per-layer
K'/V', computed once through the (possibly DDP-wrapped) adapter; encoder_hidden_states stays the text.
No context set -> the exact text-only model.

The processor is deliberately not an nn.Module: diffusers registers Module processors as UNet submodules,
which would put the adapter's weights inside the frozen UNet (frozen by requires_grad_(False), cast by
unet.to(dtype), and saved twice with shared storage - the accelerate save_state bug users hit).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ip_core.attention import decoupled_attention


@dataclass
class IPContext:
    """Per-call image side, shared by all processors of one IPAdapterUNet.

    kv: {key_number: (k', v')} per layer ([B, N, hidden]); scale: float or tensor [B] (per-sample lambda).
    """

    kv: Optional[dict] = None
    scale: object = 1.0

    def clear(self) -> None:
        self.kv = None
        self.scale = 1.0


class IPAttnProcessor:
    """Cross-attention processor: text attention + scale * image attention (ip_core.decoupled_attention).

    key_number: the released-file number of this layer ("{n}.to_k_ip.weight"), which selects its K'/V' in
    the shared IPContext.
    """

    def __init__(self, key_number: int, context: IPContext):
        self.key_number = int(key_number)
        self.context = context

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size = hidden_states.shape[0]
        if attention_mask is not None:
            raise NotImplementedError(
                "IPAttnProcessor: attention masks on cross-attention are not supported (SD1.5 passes none); "
                "remove encoder_attention_mask from the UNet call"
            )
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states

        ctx = self.context
        ip_k = ip_v = None
        if ctx.kv is not None:
            # the adapter's weights stay fp32 (trainable); its K'/V' meet the UNet's dtype here
            ip_k, ip_v = ctx.kv[self.key_number]
            ip_k, ip_v = ip_k.to(query.dtype), ip_v.to(query.dtype)

        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        if attn.norm_q is not None or attn.norm_k is not None:
            raise NotImplementedError("IPAttnProcessor: attention layers with norm_q/norm_k (qk-norm) are not SD1.5 layers")

        if ip_k is None:
            weight = 0.0  # exact text-only path: ip_core skips the image branch
            ip_k, ip_v = key, value
        else:
            weight = ctx.scale
            # one set of tokens for the whole batch broadcasts; otherwise one per sample (cond/uncond halves
            # of a guidance batch are the caller's to arrange: repeat vs interleave is not guessable)
            if ip_k.shape[0] not in (1, batch_size):
                raise ValueError(
                    f"image features for {ip_k.shape[0]} samples but the UNet batch is {batch_size}: give one set "
                    f"(shared) or one per sample, in the order of the latents"
                )
        if isinstance(weight, torch.Tensor):
            weight = weight.to(device=query.device, dtype=query.dtype)
        hidden_states = decoupled_attention(query, key, value, ip_k, ip_v, attn.heads, weight=weight)
        hidden_states = hidden_states.to(query.dtype)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor
