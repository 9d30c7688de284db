"""The per-layer LoRA some adapter files carry beside K'/V' (FaceID): its modules, its keys and shapes, and the
weight each pair patches.

The official FaceID attention processors (tencent-ailab/IP-Adapter attention_processor_faceid.py) add a
rank-r LoRA to to_q, to_k, to_v and to_out of every attention layer, self- and cross-attention alike:
`proj(x) + lora_scale * up(down(x))`. That is the linear layer with weight W + lora_scale * up @ down, so a
host can merge it into the UNet's weights (and unmerge it) instead of replacing the attention code; the image
branch stays the plain decoupled attention. This module says which weight each LoRA pair belongs to.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .config import AdapterConfig
from .errors import UnsupportedAdapterError
from .state_dict import shape_differences

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


LORA_KEY = re.compile(r"^(\d+)\.(to_q_lora|to_k_lora|to_v_lora|to_out_lora)\.(down|up)\.weight$")


def lora_shapes(cross_numbers, hidden_sizes, context_dim: int, rank: int) -> dict:
    """Every FaceID LoRA key with its shape. Processor n = cross-attention layer key number (attn2) and n - 1
    (the attn1 of the same transformer block): q, k, v, out are hidden -> hidden, except attn2's k and v, which
    read the context. down: [rank, in], up: [out, rank] (diffusers LoRALinearLayer, no alpha)."""
    shapes = {}
    for n, hidden in zip(cross_numbers, hidden_sizes):
        for number, ctx in ((n - 1, hidden), (n, context_dim)):
            for proj, in_features in (("to_q", hidden), ("to_k", ctx), ("to_v", ctx), ("to_out", hidden)):
                shapes[f"{number}.{proj}_lora.down.weight"] = (rank, in_features)
                shapes[f"{number}.{proj}_lora.up.weight"] = (hidden, rank)
    return shapes


def read_lora_rank(lora: dict, numbers, hidden, context_dim) -> int:
    """The rank of a file's FaceID LoRA, once every LoRA tensor is checked against the layers it patches."""
    rank = int(lora["1.to_q_lora.down.weight"].shape[0]) if "1.to_q_lora.down.weight" in lora else int(next(iter(lora.values())).shape[0])
    expected = lora_shapes(numbers, hidden, context_dim, rank)
    diff = shape_differences(expected, lora, sort_key=_natural)
    missing, extra, wrong = diff.missing, diff.unexpected, diff.wrong
    if diff:
        raise UnsupportedAdapterError(
            f"the FaceID LoRA weights do not fit the file's {len(numbers)} cross-attention layers (rank {rank}): "
            f"{len(missing)} missing (e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]}), "
            f"{len(wrong)} of the wrong shape (e.g. {wrong[:2]}); the file is incomplete or damaged."
        )
    return rank


def _natural(key: str):
    number, rest = key.split(".", 1)
    return int(number), rest
