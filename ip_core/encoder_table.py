"""The CLIP vision encoders IP-Adapters are trained with: one table of names, widths and outputs.

ip_core.config names an adapter's encoder from these widths, ip_core.encoders builds open_clip towers and
names loaded encoders from it, ip_core.embeds points users to the weights' file, and the trainer lists the
architectures it can build. `EncoderOutput` is the one type every encoder backend (and the nodes' host
adapter) returns.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

# Which encoder output each kind of adapter projects (the trainer's --variant, ip_core.config's variants).
IMAGE_EMBEDS = "image_embeds"  # projected pooled embedding [B, projection_dim]: base adapters
PENULTIMATE = "penultimate_hidden_states"  # hidden_states[-2] [B, tokens, hidden_size]: plus and full-face
FACE_EMBEDDING = "face_embedding"  # InsightFace (ArcFace) identity embedding [B, 512]: FaceID adapters
FACE_ENCODER = ("InsightFace ArcFace", 512)  # the one face encoder released FaceID adapters use: (name, width)


@dataclass
class EncoderOutput:
    image_embeds: torch.Tensor  # [B, projection_dim]
    penultimate_hidden_states: torch.Tensor  # [B, 1 + (S/patch)^2, hidden_size]


@dataclass(frozen=True)
class VisionDims:
    """What fixes a plain CLIP ViT's weight shapes (plus heads, which no shape reveals)."""

    width: int  # hidden_size: width of penultimate_hidden_states
    layers: int
    heads: int
    mlp_dim: int
    output_dim: int  # projection_dim: width of image_embeds
    patch_size: int = 14
    image_size: int = 224
    layer_norm_eps: float = 1e-5
    class_token: bool = True  # CLIP prepends a CLS token to the patches; SigLIP has none


@dataclass(frozen=True)
class EncoderSpec:
    name: str  # how adapter descriptions and messages name it
    dims: VisionDims
    openclip_arch: Optional[str] = None  # open_clip architecture name we build (None: not built here)
    file_name: Optional[str] = None  # the weights' familiar name (ComfyUI's models/clip_vision)

    def width(self, output: str) -> int:
        return self.dims.output_dim if output == IMAGE_EMBEDS else self.dims.width


ENCODERS = (
    EncoderSpec("ViT-H/14", VisionDims(width=1280, layers=32, heads=16, mlp_dim=5120, output_dim=1024),
                "ViT-H-14", "CLIP-ViT-H-14-laion2B-s32B-b79K"),
    EncoderSpec("ViT-bigG/14", VisionDims(width=1664, layers=48, heads=16, mlp_dim=8192, output_dim=1280),
                "ViT-bigG-14", "CLIP-ViT-bigG-14-laion2B-39B-b160k"),
    # OpenAI's ViT-L/14 (quick GELU) is recognised by its widths only: no released adapter needs it built here.
    EncoderSpec("ViT-L/14", VisionDims(width=1024, layers=24, heads=16, mlp_dim=4096, output_dim=768)),
    # The same widths at 336 px (577 tokens): Kolors' adapters. Named by the adapter's layout, never by width alone.
    EncoderSpec("ViT-L/14-336", VisionDims(width=1024, layers=24, heads=16, mlp_dim=4096, output_dim=768, image_size=336),
                file_name="clip-vit-large-patch14-336"),
    EncoderSpec("SigLIP so400m-patch14-384", VisionDims(width=1152, layers=27, heads=16, mlp_dim=4304, output_dim=1152, image_size=384, layer_norm_eps=1e-6, class_token=False)),
)

OPENCLIP_ARCHS = {e.openclip_arch: e for e in ENCODERS if e.openclip_arch}


def encoder_name_for(output: str, width: int) -> str:
    """"ViT-H/14" for (image_embeds, 1024) etc.; "unknown" for a width no listed encoder has."""
    if output == FACE_EMBEDDING:
        return FACE_ENCODER[0] if int(width) == FACE_ENCODER[1] else "unknown"
    for e in ENCODERS:
        if e.width(output) == int(width):
            return e.name
    return "unknown"


def encoder_name_for_dims(hidden_size: int, projection_dim: int) -> str:
    """"ViT-H/14" for (1280, 1024) etc.; "unknown" otherwise (e.g. tiny test towers)."""
    for e in ENCODERS:
        if (e.dims.width, e.dims.output_dim) == (int(hidden_size), int(projection_dim)):
            return e.name
    return "unknown"


def encoder_spec(name: str) -> Optional[EncoderSpec]:
    return next((e for e in ENCODERS if e.name == name), None)


def hidden_tokens(dims: VisionDims) -> int:
    """Tokens of penultimate_hidden_states: the patches plus CLS where there is one (CLIP ViT/14: 257 at 224 px,
    577 at 336 px; SigLIP so400m at 384 px: 729)."""
    return (dims.image_size // dims.patch_size) ** 2 + int(dims.class_token)


def encoder_file_for(name: str) -> Optional[str]:
    """The familiar weights file name of encoder `name`, or None."""
    return next((e.file_name for e in ENCODERS if e.name == name), None)
