"""SigLIP's attention-pooling head: what turns SigLIP's token states into its pooled embedding (`pooler_output`).

InstantX's Flux IP-Adapter projects SiglipVisionModel(...).pooler_output of google/siglip-so400m-patch14-384:
head(post_layernorm(last_hidden_state)), with the head of transformers' SiglipMultiheadAttentionPoolingHead:
a learned probe attends to the tokens (torch MultiheadAttention), then x + MLP(LayerNorm(x)). ComfyUI's SigLIP
vision model returns post_layernorm(last_hidden_state) and has no head, so the head is built here from the same
file's `vision_model.head.*` weights (same module and key names, loaded strictly).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .encoder_table import ENCODERS
from .errors import AdapterFileError

HEAD_PREFIXES = ("vision_model.head.", "head.")  # transformers SiglipModel / SiglipVisionModel, bare vision tower


class _MLP(nn.Module):
    def __init__(self, width: int, mlp_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(width, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, width)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))  # gelu_pytorch_tanh, SigLIP's hidden_act


class SiglipPoolingHead(nn.Module):
    def __init__(self, width: int, heads: int, mlp_dim: int, layer_norm_eps: float = 1e-6):
        super().__init__()
        self.probe = nn.Parameter(torch.zeros(1, 1, width))
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.layernorm = nn.LayerNorm(width, eps=layer_norm_eps)
        self.mlp = _MLP(width, mlp_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: post-layernorm token states [B, L, width] -> pooled [B, width]."""
        tokens = tokens.to(self.probe.dtype)
        x = self.attention(self.probe.expand(tokens.shape[0], -1, -1), tokens, tokens, need_weights=False)[0]
        x = x + self.mlp(self.layernorm(x))
        return x[:, 0]


def _heads_for(width: int) -> int:
    for e in ENCODERS:
        if e.name.startswith("SigLIP") and e.dims.width == width:
            return e.dims.heads
    raise AdapterFileError(f"a SigLIP pooling head {width} wide: no known SigLIP model has that width (so400m: 1152).")


def pooling_head_from_state_dict(sd: dict, heads: Optional[int] = None) -> Optional[SiglipPoolingHead]:
    """The head from a SigLIP state dict (transformers key names), or None when the file has none."""
    for prefix in HEAD_PREFIXES:
        part = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if part:
            break
    else:
        return None
    try:
        width = int(part["probe"].shape[-1])
        mlp_dim = int(part["mlp.fc1.weight"].shape[0])
    except KeyError as e:
        raise AdapterFileError(f"the SigLIP pooling head is incomplete ({e.args[0]} missing); download the model again.") from None
    head = SiglipPoolingHead(width, heads or _heads_for(width), mlp_dim)
    try:
        head.load_state_dict(part, strict=True)
    except RuntimeError as e:
        raise AdapterFileError(f"the SigLIP pooling head does not fit ({str(e)[:300]}); download the model again.") from None
    return head.eval()


def read_pooling_head(path) -> Optional[SiglipPoolingHead]:
    """The head stored in a SigLIP weights file, reading only its tensors (safetensors) or safely (pickles)."""
    path = Path(path)
    from .checkpoint import read_tensor_file, sniff_format

    if sniff_format(path) == "safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as f:
            sd = {k: f.get_tensor(k) for k in f.keys() if k.startswith(HEAD_PREFIXES)}
    else:
        _, sd = read_tensor_file(path, safe_alternative="the .safetensors release of this model")
        sd = sd if isinstance(sd, dict) else {}
    return pooling_head_from_state_dict(sd)
