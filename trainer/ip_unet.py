"""A frozen diffusers UNet plus an ip_core IPAdapter, the only trainable module.

The adapter's whole forward (features -> tokens -> per-layer K'/V') is one module, `AdapterKV`, so that
accelerate wraps exactly that for gradient sync (DDP / DeepSpeed) and never the frozen UNet. The UNet's
cross-attention processors read K'/V' from a per-call context (see attn_processor.py).
"""
from __future__ import annotations

import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from torch import nn

from ip_core.errors import AdapterMismatchError
from ip_core.layers import layer_specs_from_unet

from .attn_processor import IPAttnProcessor, IPContext


def _attention_module(unet, processor_name: str):
    return unet.get_submodule(processor_name[: -len(".processor")] if processor_name.endswith(".processor") else processor_name)


class AdapterKV(nn.Module):
    """features [B, ...] -> {key_number: (K' [B,N,hidden], V' [B,N,hidden])}: the adapter's trainable forward."""

    def __init__(self, adapter):
        super().__init__()
        self.adapter = adapter

    def forward(self, features: torch.Tensor):
        tokens = self.adapter.project(features)
        return {spec.key_number: self.adapter.layer_kv(spec.index, tokens) for spec in self.adapter.layers}


class IPAdapterUNet(nn.Module):
    """unet (frozen diffusers UNet2DConditionModel) + adapter (ip_core IPAdapter, trainable).

    init_from_unet: copy each layer's to_k / to_v into to_k_ip / to_v_ip (the official trainer's init).
    A plain UNet call (no image features) is the exact text-only model.
    """

    def __init__(self, unet, adapter, init_from_unet: bool = True):
        super().__init__()
        self.unet = unet
        self.adapter = adapter
        unet.requires_grad_(False)
        self.context = IPContext()
        self._check_layers()
        if init_from_unet:
            self.init_from_unet()
        self._install_processors()
        # Not a registered child: the adapter's parameters must appear once, under "adapter.".
        object.__setattr__(self, "_kv_module", AdapterKV(adapter))
        object.__setattr__(self, "_kv_call", self._kv_module)

    # ------------------------------------------------------------------ setup
    def _check_layers(self):
        unet_layers = layer_specs_from_unet(self.unet)
        want = [(s.key_number, s.hidden_size) for s in unet_layers]
        have = [(s.key_number, s.hidden_size) for s in self.adapter.layers]
        if want != have:
            raise AdapterMismatchError(
                f"the adapter has {len(have)} cross-attention layers {have[:4]}... but the UNet has {len(want)} "
                f"{want[:4]}...: build the adapter for this UNet (IPAdapter.from_config(config, layers=layer_specs_from_unet(unet)))"
            )
        ctx = self.unet.config.cross_attention_dim
        if self.adapter.config.context_dim != ctx:
            raise AdapterMismatchError(
                f"the adapter's context dim is {self.adapter.config.context_dim} but the UNet's cross_attention_dim is {ctx}: "
                f"use an adapter made for this base model"
            )
        self._names = {s.key_number: name for s, name in zip(self.adapter.layers, (u.diffusers_name for u in unet_layers))}

    @torch.no_grad()
    def init_from_unet(self) -> None:
        """to_k_ip / to_v_ip := the same layer's to_k / to_v (official tutorial_train.py)."""
        for n, name in self._names.items():
            attn = _attention_module(self.unet, name)
            layer = self.adapter.ip_layers[str(n)]
            layer.to_k_ip.weight.copy_(attn.to_k.weight.to(layer.to_k_ip.weight.dtype))
            layer.to_v_ip.weight.copy_(attn.to_v.weight.to(layer.to_v_ip.weight.dtype))

    def _install_processors(self) -> None:
        by_name = {name: n for n, name in self._names.items()}
        procs = {}
        for name in self.unet.attn_processors.keys():
            if name in by_name:
                n = by_name[name]
                procs[name] = IPAttnProcessor(n, self.context)
            else:
                procs[name] = AttnProcessor2_0()
        self.unet.set_attn_processor(procs)

    def set_adapter_runner(self, runner) -> None:
        """Use an accelerate-prepared (DDP / DeepSpeed) wrapper of `adapter_kv` for the adapter's forward."""
        object.__setattr__(self, "_kv_call", runner)

    @property
    def adapter_kv(self) -> AdapterKV:
        """The module to hand to accelerator.prepare (holds exactly the trainable parameters)."""
        return self._kv_module

    def trainable_parameters(self):
        return [p for p in self.adapter.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ forward
    def forward(self, noisy_latents, timesteps, text_embeds, image_features, scale=1.0, added_cond=None):
        """Noise prediction. image_features: the encoder output the adapter projects; scale: lambda (float or [B]);
        added_cond: SDXL's {"text_embeds": pooled [B, C], "time_ids": [B, 6]} (UNet added_cond_kwargs)."""
        kv = self._kv_call(image_features)
        dtype = self.unet.dtype
        self.context.kv = kv
        self.context.scale = scale
        keep = self.unet.training and getattr(self.unet, "is_gradient_checkpointing", False)
        try:
            if added_cond is not None:
                added_cond = {k: v.to(dtype) for k, v in added_cond.items()}
            return self.unet(noisy_latents.to(dtype), timesteps, text_embeds.to(dtype), added_cond_kwargs=added_cond).sample
        finally:
            # Gradient checkpointing re-runs the attention in backward and must find the same K'/V' then.
            if not keep:
                self.context.clear()
