"""FaceID adapters (SD1.5 / SDXL): their layouts (a face-embedding MLP, FaceID Plus's perceiver over CLIP hidden
states, portrait "unnorm"'s Resampler over the raw embedding) and face embeddings -> image prompt tokens. The
LoRA the files carry beside K'/V' is ip_core.lora's (the base adapter holds it)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch

from ..adapter import IPAdapter
from ..config import FACE_EMBEDDING_WIDTH, KOLORS_FACE_TOKEN_DIM, AdapterConfig
from ..embeds import ImagePromptEmbeds, arrange_tokens, combine_features
from ..errors import AdapterMismatchError, IPAdapterError, UnsupportedAdapterError
from ..layers import CONTEXT_DIMS
from ..state_dict import shape_of, summarize, tensor_dims, whole_number
from .sd import ProjectionLayout, is_resampler, read_plus, read_resampler_config, read_unet_adapter

NAME = "faceid"
LABEL = "FaceID"
adapter_class = IPAdapter


def read_face_projection(proj: dict, ip: dict, lora: dict, sd: dict) -> Optional[ProjectionLayout]:
    """The face MLP (proj.0 over a 512-d embedding, proj.2, norm) and FaceID Plus's perceiver; None otherwise.
    The token width is not checked here (Kolors FaceID-Plus's are 4096 wide: ip_core.families.kolors)."""
    face = shape_of(proj, "proj.0.weight")
    face_mlp = face is not None and len(face) == 2 and face[1] == FACE_EMBEDDING_WIDTH
    if not (face_mlp and "proj.2.weight" in proj and "norm.weight" in proj and "proj.3.weight" not in proj):
        return None
    (context_dim,) = tensor_dims(proj, "image_proj", "norm.weight", 1, "FaceID")
    num_tokens = whole_number(tensor_dims(proj, "image_proj", "proj.2.weight", 2, "FaceID")[0], context_dim,
                              "the FaceID projection's output width over the token width")
    if "perceiver_resampler.proj_in.weight" not in proj:
        return ProjectionLayout("faceid" if lora else "faceid-portrait", context_dim, num_tokens, FACE_EMBEDDING_WIDTH)
    dim, clip_width = tensor_dims(proj, "image_proj", "perceiver_resampler.proj_in.weight", 2, "FaceID Plus")
    resampler = read_resampler_config(proj, "perceiver_resampler.", dim, num_tokens, clip_width,
                                      tensor_dims(proj, "image_proj", "perceiver_resampler.proj_out.weight", 2, "FaceID Plus")[0])
    return ProjectionLayout("faceid-plus", context_dim, num_tokens, FACE_EMBEDDING_WIDTH, resampler, clip_width)


def is_kolors_face_layout(layout: ProjectionLayout) -> bool:
    """Kolors FaceID-Plus: a perceiver and tokens both 4096 wide (ChatGLM's width)."""
    return (layout.variant == "faceid-plus" and layout.context_dim == KOLORS_FACE_TOKEN_DIM
            and layout.resampler.dim == KOLORS_FACE_TOKEN_DIM)


def check_face_context(layout: ProjectionLayout, sd: dict) -> ProjectionLayout:
    if layout.context_dim not in CONTEXT_DIMS.values():
        raise UnsupportedAdapterError(
            f"a FaceID file with {layout.context_dim}-wide tokens (neither SD1.5's 768 nor SDXL's 2048, nor Kolors "
            f"FaceID-Plus's {KOLORS_FACE_TOKEN_DIM}-wide tokens over 2048-wide K'/V'), which is not supported: {summarize(sd)}"
        )
    return layout


def _read_projection(proj: dict, ip: dict, lora: dict, sd: dict) -> Optional[ProjectionLayout]:
    layout = read_face_projection(proj, ip, lora, sd)
    if layout is not None:
        return None if is_kolors_face_layout(layout) else check_face_context(layout, sd)
    if is_resampler(proj):
        # A Resampler over a 512-wide input is FaceID portrait "unnorm" (raw face embedding as one token);
        # CLIP hidden states are 1024 / 1280 / 1664 wide.
        num_queries, dim, context_dim, encoder_width = read_plus(proj)
        if encoder_width == FACE_EMBEDDING_WIDTH:
            resampler = read_resampler_config(proj, "", dim, num_queries, encoder_width, context_dim)
            return ProjectionLayout("faceid-portrait-unnorm", context_dim, num_queries, encoder_width, resampler)
    return None


def detect(sd: dict) -> Optional[AdapterConfig]:
    return read_unet_adapter(sd, _read_projection)


def owns(config: AdapterConfig) -> bool:
    return config.is_faceid and not config.kolors

# ---- face embeddings -> tokens ---------------------------------------------------------------------------------


def face_features(config: AdapterConfig, embeddings: torch.Tensor) -> torch.Tensor:
    """Raw 512-d face embeddings [B, 512] -> what the adapter takes: L2-normalised (insightface's
    normed_embedding, what the FaceID files were trained on) or raw for "unnorm" portrait files."""
    if not config.is_faceid:
        raise AdapterMismatchError(f"face embeddings were given to a non-FaceID adapter ({config.description}).")
    if embeddings.ndim != 2 or embeddings.shape[-1] != config.encoder_width:
        raise AdapterMismatchError(
            f"face embeddings of shape {list(embeddings.shape)}, but the adapter ({config.description}) takes "
            f"[faces, {config.encoder_width}] (InsightFace recognition output)."
        )
    if not torch.isfinite(embeddings).all():
        raise IPAdapterError("the face embedding contains NaN or infinite values; check the face analysis model.")
    embeddings = embeddings.float()
    if config.face_embedding_normalized:
        embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return embeddings


@dataclass
class FacePromptEmbeds(ImagePromptEmbeds):
    """Tokens of a FaceID adapter. For FaceID Plus the two parts are kept: x (face MLP tokens) and r (the
    resampler's output given CLIP); the tokens are r (Plus) or x + faceidv2 * r (PlusV2 shortcut)."""

    shortcut: bool = False
    parts: Optional[tuple] = None  # (x_cond, r_cond, x_uncond, r_uncond), arranged like cond / uncond

    def to(self, device=None, dtype=None) -> "FacePromptEmbeds":
        move = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
        parts = tuple(move(t) for t in self.parts) if self.parts else None
        return dataclasses.replace(self, cond=move(self.cond), uncond=move(self.uncond), parts=parts)

    def with_faceidv2(self, scale: float) -> "FacePromptEmbeds":
        """PlusV2's shortcut scale (official s_scale): x + scale * r. Other FaceID embeds are returned as they are."""
        if not (self.shortcut and self.parts):
            return self
        xc, rc, xu, ru = self.parts
        return dataclasses.replace(self, cond=xc + scale * rc, uncond=xu + scale * ru)


def build_face_prompt(adapter, face_embeddings: torch.Tensor, clip_hidden: Optional[torch.Tensor] = None,
                      uncond_clip_hidden: Optional[torch.Tensor] = None, combine: str = "concat",
                      shortcut: bool = True, encoder_name: str = "InsightFace ArcFace") -> FacePromptEmbeds:
    """Cond / uncond tokens of a FaceID adapter, as the official get_image_embeds computes them.

    face_embeddings: raw [B, 512] (normalised here when the adapter expects it). Uncond = the projection of
    a zero face embedding (and, for Plus, of the CLIP hidden states of an all-zero normalised image).
    clip_hidden: Plus only, [B, T, W] penultimate hidden states of the aligned face crops. shortcut: Plus only
    (True = PlusV2, False = Plus v1).
    """
    config = adapter.config
    if face_embeddings.shape[0] == 0:
        raise IPAdapterError("no face embeddings: give at least one face image")
    face = face_features(config, face_embeddings)
    param = next(adapter.parameters())
    face = combine_features(face, combine).to(param.device, param.dtype)
    zero = torch.zeros_like(face)
    if config.variant == "faceid-portrait-unnorm":
        face, zero = face[:, None], zero[:, None]  # the Resampler reads the embedding as a one-token sequence
    parts = None
    with torch.no_grad():
        if config.variant == "faceid-plus":
            if clip_hidden is None or uncond_clip_hidden is None:
                raise AdapterMismatchError(f"{config.description}: the CLIP hidden states of the face crops are needed.")
            if clip_hidden.shape[0] != face_embeddings.shape[0]:
                raise IPAdapterError(f"{clip_hidden.shape[0]} face crops for {face_embeddings.shape[0]} face embeddings")
            clip = combine_features(clip_hidden.float(), combine).to(param.device, param.dtype)
            uclip = uncond_clip_hidden.float().to(param.device, param.dtype).expand(clip.shape[0], *uncond_clip_hidden.shape[1:])
            xc, rc = adapter.image_proj.parts(face, clip)
            xu, ru = adapter.image_proj.parts(zero, uclip)
            xc, rc, xu, ru = (arrange_tokens(t, combine) for t in (xc, rc, xu, ru))
            parts = (xc, rc, xu, ru)
            cond, uncond = (xc + rc, xu + ru) if shortcut else (rc, ru)
        else:
            cond = arrange_tokens(adapter.project(face), combine)
            uncond = arrange_tokens(adapter.project(zero), combine)
    return FacePromptEmbeds(cond, uncond, config.signature, config.description, encoder_name, adapter.fingerprint(),
                            shortcut=bool(shortcut and parts), parts=parts)
