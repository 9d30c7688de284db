"""The adapter as a module: an image projection plus to_k_ip / to_v_ip for every cross-attention layer."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from .checkpoint import save_adapter_state_dict
from .config import AdapterConfig
from .errors import AdapterFileError
from .layers import LayerSpec
from .lora import build_lora_layers
from .projection import build_projection


class IPAttentionWeights(nn.Module):
    """K' and V' of one layer (no bias, as released)."""

    def __init__(self, context_dim: int, hidden_size: int):
        super().__init__()
        self.to_k_ip = nn.Linear(context_dim, hidden_size, bias=False)
        self.to_v_ip = nn.Linear(context_dim, hidden_size, bias=False)


class IPAdapter(nn.Module):
    """The SD-UNet adapter; another family's adapter subclasses it and overrides the hooks build_projection,
    build_layer (and project / layer_kv where its math differs), never __init__."""

    def __init__(self, config: AdapterConfig, layers: Optional[Sequence[LayerSpec]] = None):
        super().__init__()
        self.config = config
        self.layers = tuple(layers) if layers is not None else config.layer_specs()
        if len(self.layers) != config.num_layers:
            raise ValueError(f"config has {config.num_layers} layers but {len(self.layers)} layer specs were given")
        self.image_proj = self.build_projection(config)
        self._fingerprint = None
        # Keyed by the released layer number so state_dict() keys are exactly the released "{n}.to_k_ip.weight".
        self.ip_layers = nn.ModuleDict({str(s.key_number): self.build_layer(config, s) for s in self.layers})
        # FaceID: a LoRA per attention processor (self- and cross-attention), stored beside K'/V' in "ip_adapter".
        self.lora_layers = build_lora_layers(config, self.layers) if config.lora_rank else None

    @staticmethod
    def build_projection(config: AdapterConfig) -> nn.Module:
        """Hook: the module that turns encoder features into tokens (released key names under image_proj)."""
        return build_projection(config)

    @staticmethod
    def build_layer(config: AdapterConfig, spec: LayerSpec) -> nn.Module:
        """Hook: one layer's weights (released key names under ip_adapter, prefixed by the layer's key number)."""
        return IPAttentionWeights(config.context_dim, spec.hidden_size)

    @classmethod
    def from_config(cls, config: AdapterConfig, layers: Optional[Sequence[LayerSpec]] = None) -> "IPAdapter":
        return cls(config, layers)

    @classmethod
    def from_state_dict(cls, sd: dict, config: AdapterConfig, source: str = "state dict") -> "IPAdapter":
        """The adapter of `config` (ip_core.families.detect_config(sd)) holding the state dict's tensors."""
        with torch.device("meta"):
            adapter = cls(config)
        try:
            adapter.image_proj.load_state_dict(sd["image_proj"], strict=True, assign=True)
            ip = {k: v for k, v in sd["ip_adapter"].items() if "_lora." not in k}
            adapter.ip_layers.load_state_dict(ip, strict=True, assign=True)
            if adapter.lora_layers is not None:
                lora = {k: v for k, v in sd["ip_adapter"].items() if "_lora." in k}
                adapter.lora_layers.load_state_dict(lora, strict=True, assign=True)
        except RuntimeError as e:
            raise AdapterFileError(
                f"{source}: weights do not fit the detected layout ({config.description}): {str(e)[:500]}. Download the file again."
            ) from None
        # Tensors loaded from one file keep their dtype (fp16 releases stay fp16 until .to()).
        return adapter

    def released_state_dict(self) -> dict:
        ip = dict(self.ip_layers.state_dict())
        if self.lora_layers is not None:
            ip.update(self.lora_layers.state_dict())
        return {
            "image_proj": {k: v.detach().clone().contiguous() for k, v in self.image_proj.state_dict().items()},
            "ip_adapter": {k: v.detach().clone().contiguous() for k, v in ip.items()},
        }

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder features [B, E] or [B, T, E] -> image prompt tokens [B, num_tokens, projection_dim]."""
        return self.image_proj(features)

    def layer_kv(self, layer_index: int, tokens: torch.Tensor):
        w = self.ip_layers[str(self.layers[layer_index].key_number)]
        return w.to_k_ip(tokens), w.to_v_ip(tokens)

    def fingerprint(self) -> str:
        """Tells two adapters of the same layout apart (image prompt embeds belong to one projection).

        Hashes a strided sample of every projection tensor in fp32: cheap, and stable under fp16 -> fp32 moves.
        """
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=8)
            for name, t in sorted(self.image_proj.state_dict().items()):
                flat = t.detach().reshape(-1)
                sample = flat[:: max(1, flat.numel() // 4096)].float().cpu().contiguous()
                h.update(name.encode())
                h.update(sample.numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return self.config.description


def save_adapter(adapter_or_sd, path, format: Optional[str] = None) -> Path:
    sd = adapter_or_sd.released_state_dict() if isinstance(adapter_or_sd, IPAdapter) else adapter_or_sd
    return save_adapter_state_dict(sd, path, format)
