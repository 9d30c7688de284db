"""IP-Adapters for Flux (FLUX.1 dev / schnell): the XLabs and InstantX layouts, their projections and image term.

Flux is a DiT: 19 double-stream blocks (image and text tokens in separate streams, one joint attention) and 38
single-stream blocks (one stream, text tokens first). Both adapters attend from the image queries of a block
(after the block's QK RMSNorm, before RoPE) to K'/V' made from the image prompt tokens; they differ in where the
term lands:

- XLabs flux-ip-adapter v1 / v2 (19 double blocks, K'/V' with bias): added to the block's image output after its
  MLP, ungated (x-flux IPDoubleStreamBlockProcessor; diffusers FluxIPAdapterAttnProcessor returns it as a third
  output that FluxTransformerBlock adds after the feed-forward).
- InstantX FLUX.1-dev IP-Adapter (19 double + 38 single blocks, no bias, RMSNorm on K' per head): added to the
  block's attention output before its output projection (so it goes through the block's gate); in single blocks
  to every row of the joint sequence, text rows included (InstantX IPAFluxAttnProcessor2_0).

Files in the wild:
- XLabs (`ip_adapter.safetensors` of XLabs-AI/flux-ip-adapter and -v2): flat keys `ip_adapter_proj_model.proj`
  [N*4096, 768] (N = 4 in v1, 16 in v2) + `.norm` [4096], `double_blocks.{i}.processor.ip_adapter_double_stream_
  {k,v}_proj.{weight,bias}` [3072, 4096]; encoder CLIP ViT-L/14 image_embeds (768). ip_core.checkpoint renames the
  block keys to `{i}.to_{k,v}_ip.{weight,bias}`, as diffusers' loader does.
- InstantX (`ip-adapter.bin`): image_proj `proj.0` [2304, 1152], `proj.2` [128*4096, 2304], `norm` [4096] (an MLP,
  the module of ip_core.projection.FaceIDProjModel); ip_adapter `{0..56}.to_{k,v}_ip.weight` [3072, 4096]
  (0..18 double blocks, 19..56 single blocks); encoder SigLIP so400m-patch14-384 pooler_output (1152).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ..adapter import IPAdapter
from ..attention import AttentionFn, image_attention, multihead_attention, rms_heads
from ..config import AdapterConfig
from ..encoder_table import IMAGE_EMBEDS, encoder_name_for
from ..errors import UnsupportedAdapterError
from ..layers import LayerSpec
from ..projection import check_layout
from ..state_dict import shapes_by_block, summarize, tensor_dims

NAME = "flux"
LABEL = "Flux"

FLUX_CONTEXT_DIM = 4096  # T5-XXL width: what the projections make and K'/V' read
FLUX_HIDDEN = 3072
FLUX_HEAD_DIM = 128  # 24 heads of 128 in every released Flux
KEY_NORM_EPS = 1e-5  # InstantX: RMSNorm(128, eps=1e-5, no affine) on K'

# Where the image term lands: the block's image output after its MLP (XLabs), or the attention output (InstantX).
BLOCK_OUTPUT, ATTENTION_OUTPUT = "block output", "attention output"
# variant -> (what users call it, where the term lands, K'/V' bias, RMSNorm on K')
FLUX_VARIANTS = {
    "flux-xlabs": ("XLabs flux-ip-adapter", BLOCK_OUTPUT, True, False),
    "flux-instantx": ("InstantX FLUX.1-dev IP-Adapter", ATTENTION_OUTPUT, False, True),
}


@dataclass(frozen=True)
class FluxAdapterConfig(AdapterConfig):
    """An AdapterConfig whose layers are Flux blocks: layers 0..double_blocks-1 are double blocks, the rest single."""

    double_blocks: int = 0
    single_blocks: int = 0
    head_dim: int = FLUX_HEAD_DIM

    @property
    def placement(self) -> str:
        return FLUX_VARIANTS[self.variant][1]

    @property
    def kv_bias(self) -> bool:
        return FLUX_VARIANTS[self.variant][2]

    @property
    def key_norm(self) -> bool:
        return FLUX_VARIANTS[self.variant][3]

    @property
    def base_model_name(self) -> str:
        return "Flux"

    @property
    def hidden_size(self) -> int:
        return self.layer_hidden_sizes[0]

    def layer_specs(self) -> tuple:
        return flux_layer_specs(self.double_blocks, self.single_blocks, self.hidden_size)

    @property
    def description(self) -> str:
        name = FLUX_VARIANTS[self.variant][0]
        if self.variant == "flux-xlabs":
            name += " v2" if self.num_tokens == 16 else " v1" if self.num_tokens == 4 else ""
        blocks = f"{self.double_blocks} double" + (f" + {self.single_blocks} single" if self.single_blocks else "")
        plural = "s" if self.double_blocks + self.single_blocks > 1 else ""
        return f"Flux {name}, {self.num_tokens} tokens, {blocks} block{plural}, needs {self.encoder_requirement}"


def flux_layer_specs(double_blocks: int, single_blocks: int, hidden_size: int) -> tuple:
    """One LayerSpec per patched block; comfy_block is the host's patches_replace["dit"] key."""
    specs = []
    for kind, count in (("double_block", double_blocks), ("single_block", single_blocks)):
        for i in range(count):
            n = len(specs)
            prefix = "transformer_blocks" if kind == "double_block" else "single_transformer_blocks"
            specs.append(LayerSpec(index=n, key_number=n, diffusers_name=f"{prefix}.{i}.attn.processor",
                                   comfy_block=(kind, i), transformer_index=0, hidden_size=hidden_size))
    return tuple(specs)


def make_flux_config(variant: str, double_blocks: int, single_blocks: int = 0, hidden_size: int = FLUX_HIDDEN,
                     context_dim: int = FLUX_CONTEXT_DIM, encoder_width: Optional[int] = None,
                     num_tokens: Optional[int] = None, head_dim: int = FLUX_HEAD_DIM) -> FluxAdapterConfig:
    """A Flux adapter config (detection's result, and test fixtures with fewer blocks or smaller widths)."""
    if variant not in FLUX_VARIANTS:
        raise ValueError(f"unknown Flux variant {variant!r}; choose one of {tuple(FLUX_VARIANTS)}")
    if variant == "flux-xlabs" and single_blocks:
        raise ValueError("XLabs adapters patch double blocks only")
    xlabs = variant == "flux-xlabs"
    encoder_width = (768 if xlabs else 1152) if encoder_width is None else encoder_width
    num_tokens = (4 if xlabs else 128) if num_tokens is None else num_tokens
    n = double_blocks + single_blocks
    return FluxAdapterConfig(
        variant=variant, projection="linear" if xlabs else "faceid-mlp", base_model="flux", context_dim=int(context_dim),
        num_layers=n, num_tokens=int(num_tokens), encoder_output=IMAGE_EMBEDS, encoder_width=int(encoder_width),
        encoder_name=encoder_name_for(IMAGE_EMBEDS, encoder_width), layer_key_numbers=tuple(range(n)),
        layer_hidden_sizes=(int(hidden_size),) * n, double_blocks=int(double_blocks),
        single_blocks=int(single_blocks), head_dim=int(head_dim),
    )


_FLUX_KEY = re.compile(r"^(\d+)\.(to_k_ip|to_v_ip)\.(weight|bias)$")


def looks_like_flux(sd: dict) -> bool:
    """XLabs block keys (renamed by ip_core.checkpoint, they keep their bias), or InstantX's two-layer MLP + norm
    over an image embedding (the SD MLPs with that shape take a 512-d face embedding; full-face has proj.3)."""
    proj = sd.get("image_proj") or {}
    ip = sd.get("ip_adapter") or {}
    if any(k.endswith("_ip.bias") for k in ip):
        return True
    w = proj.get("proj.0.weight")
    norm = proj.get("norm.weight")
    return (isinstance(w, torch.Tensor) and w.ndim == 2 and isinstance(norm, torch.Tensor) and norm.ndim == 1
            and "proj.3.weight" not in proj and "proj.2.weight" in proj
            and int(w.shape[1]) != 512)  # 512: an InsightFace embedding (FaceID, Kolors FaceID); no SD MLP else


def detect_flux_config(sd: dict) -> Optional[FluxAdapterConfig]:
    """The Flux layout of a loaded state dict, None when it is not one; a damaged Flux file is refused."""
    if not looks_like_flux(sd):
        return None
    proj, ip = sd.get("image_proj") or {}, sd.get("ip_adapter") or {}
    xlabs = any(k.endswith("_ip.bias") for k in ip)
    variant = "flux-xlabs" if xlabs else "flux-instantx"
    name = FLUX_VARIANTS[variant][0]
    if xlabs:
        out, encoder_width = tensor_dims(proj, "image_proj", "proj.weight", 2, name)
    else:
        encoder_width = tensor_dims(proj, "image_proj", "proj.0.weight", 2, name)[1]
        out = tensor_dims(proj, "image_proj", "proj.2.weight", 2, name)[0]
    (context_dim,) = tensor_dims(proj, "image_proj", "norm.weight", 1, name)
    if out % context_dim:
        raise UnsupportedAdapterError(
            f"a {name} file whose projection makes {out} values, not a whole number of {context_dim}-wide tokens; "
            f"the file is damaged: download it again. {summarize(sd)}")
    blocks = shapes_by_block(ip, _FLUX_KEY, f"a {name}", sd)
    parts = {"to_k_ip.weight", "to_v_ip.weight"} | ({"to_k_ip.bias", "to_v_ip.bias"} if xlabs else set())
    numbers = sorted(blocks)
    hidden = None
    for n in numbers:
        got = blocks[n]
        w = got.get("to_k_ip.weight")
        if set(got) != parts or w is None or len(w) != 2 or got.get("to_v_ip.weight") != w or w[1] != context_dim:
            raise UnsupportedAdapterError(
                f"{name}: block {n} needs {sorted(parts)} of shape [hidden, {context_dim}], found {got}; the file is "
                "incomplete or damaged: download it again.")
        hidden = w[0] if hidden is None else hidden
        if w[0] != hidden:
            raise UnsupportedAdapterError(f"{name}: block {n} is {w[0]} wide, block {numbers[0]} {hidden}; the file mixes two adapters.")
    if numbers != list(range(len(numbers))) or not numbers:
        raise UnsupportedAdapterError(
            f"{name}: the blocks must be numbered 0..N-1, found {numbers[:5]}... ({len(numbers)}); the file is "
            "incomplete or damaged: download it again.")
    if not xlabs and hidden % FLUX_HEAD_DIM:  # InstantX's K' RMSNorm works per 128-wide head (Flux's)
        raise UnsupportedAdapterError(
            f"{name}: blocks {hidden} wide are not a whole number of Flux's {FLUX_HEAD_DIM}-wide heads; the file is "
            "damaged or for another model: download it again.")
    count = len(numbers)
    if xlabs:
        double, single = count, 0
    else:  # InstantX numbers the double blocks first, then the single blocks (Flux: 19 + 38)
        double = count // 3
        single = count - double
        if single != 2 * double:
            raise UnsupportedAdapterError(
                f"{name}: {count} blocks of K'/V' do not split into double and single blocks as Flux's 19 + 38 (1:2); "
                "the file is incomplete or for another model: download it again.")
    config = make_flux_config(variant, double, single, hidden, context_dim, encoder_width, out // context_dim)
    check_layout(sd, config)
    return config


class FluxKV(nn.Module):
    def __init__(self, context_dim: int, hidden_size: int, bias: bool):
        super().__init__()
        self.to_k_ip = nn.Linear(context_dim, hidden_size, bias=bias)
        self.to_v_ip = nn.Linear(context_dim, hidden_size, bias=bias)


def undo_rope(x: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
    """x [B, H, L, D] before the rotation the host applied with `pe` [B, 1, L, D/2, 2, 2] (comfy/ldm/flux/math.py:
    out_i = pe[..., i, 0] x_0 + pe[..., i, 1] x_1). Each 2x2 block is a rotation, so its transpose undoes it; the
    result equals the pre-RoPE queries to float rounding (the adapters attend with those)."""
    r = x.to(pe.dtype).reshape(*x.shape[:-1], -1, 1, 2)
    back = pe[..., 0, :] * r[..., 0] + pe[..., 1, :] * r[..., 1]
    return back.reshape(*x.shape).to(x.dtype)


def flux_image_term(q: torch.Tensor, ip_k: torch.Tensor, ip_v: torch.Tensor, weight=1.0,
                    spatial_mask: Optional[torch.Tensor] = None, attention: AttentionFn = multihead_attention) -> torch.Tensor:
    """weight * mask * Attn(q, K', V') for Flux queries q [B, H, L, D] (pre-RoPE); K'/V' [B, T, H*D]
    (InstantX's K' already RMS-normed). Returns [B, L, H*D], the layout of the block's attention output."""
    b, heads, length, d = q.shape
    q = q.transpose(1, 2).reshape(b, length, heads * d)
    return image_attention(q, ip_k, ip_v, heads, weight, spatial_mask, attention)


class FluxIPAdapter(IPAdapter):
    """Projection + K'/V' per Flux block; loading, projection, fingerprint and export are IPAdapter's."""

    @staticmethod
    def build_layer(config: FluxAdapterConfig, spec: LayerSpec) -> nn.Module:
        return FluxKV(config.context_dim, spec.hidden_size, config.kv_bias)  # XLabs' K'/V' have a bias

    def layer_kv(self, layer_index: int, tokens: torch.Tensor):
        w = self.ip_layers[str(self.layers[layer_index].key_number)]
        k, v = w.to_k_ip(tokens), w.to_v_ip(tokens)
        if self.config.key_norm:  # depends on K' alone: done once per apply, not per step
            k = rms_heads(k, self.config.head_dim, eps=KEY_NORM_EPS)  # InstantX: no weight
        return k, v



adapter_class = FluxIPAdapter
detect = detect_flux_config


def owns(config: AdapterConfig) -> bool:
    return isinstance(config, FluxAdapterConfig)
