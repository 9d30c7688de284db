"""Image encoders: the CLIP vision towers IP-Adapters were trained on, behind one small interface.

An encoder maps CLIP pixel values [B, 3, S, S] (ip_core.preprocess) to an EncoderOutput with both
features adapters use: `image_embeds` (the projected pooled embedding, not L2-normalised: base adapters)
and `penultimate_hidden_states` (transformers' `hidden_states[-2]`, i.e. the output of the second-to-last
transformer block, before the final LayerNorm: plus and full-face adapters).

Two backends give the same numbers for the same weights:
- OpenCLIPEncoder: open_clip's VisionTransformer, built from the architecture name (no download) and a local
  checkpoint in either layout.
- TransformersCLIPEncoder: transformers' CLIPVisionModelWithProjection from a local folder.
The weight conversion between the OpenCLIP layout (`visual.*`, open_clip_pytorch_model.bin) and the
transformers layout (`vision_model.*` + `visual_projection.weight`, what ComfyUI's Load CLIP Vision reads)
is exact in both directions (a split / concat of q, k, v and a transpose of the projection).

Weight files are read through ip_core.checkpoint's safe readers: safetensors, or torch.load(weights_only=True).
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from .checkpoint import check_weights, read_tensor_file
from .encoder_table import OPENCLIP_ARCHS, EncoderOutput, VisionDims, encoder_name_for_dims
from .errors import AdapterFileError, IPAdapterError, UnsupportedAdapterError
from .preprocess import preprocess_images
from .state_dict import shape_differences


# open_clip architecture name -> dims (ip_core.encoder_table is the one table of encoders).
KNOWN_ARCHS = {arch: spec.dims for arch, spec in OPENCLIP_ARCHS.items()}


class ImageEncoder(ABC):
    """A frozen CLIP vision tower. Subclasses set the four attributes and implement encode()."""

    name: str  # "ViT-H/14", "ViT-bigG/14", or "unknown"
    projection_dim: int  # width of image_embeds
    hidden_size: int  # width of penultimate_hidden_states
    image_size: int  # pixel size the tower expects (224)
    projection_trained: bool = True  # False: the weights lacked the projection, image_embeds are untrained

    @abstractmethod
    def encode(self, pixel_values: torch.Tensor) -> EncoderOutput:
        """CLIP-normalised pixel values [B, 3, S, S] -> EncoderOutput (in the encoder's dtype, on its device)."""

    @property
    @abstractmethod
    def module(self) -> nn.Module:
        """The underlying torch module (to move it, count parameters, ...)."""

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.module.parameters()).dtype

    def to(self, device=None, dtype=None) -> "ImageEncoder":
        self.module.to(device=device, dtype=dtype)
        return self

    def _check_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        expected = (3, self.image_size, self.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise IPAdapterError(
                f"{self.name} encoder expects pixel values [batch, {', '.join(map(str, expected))}], got "
                f"{list(pixel_values.shape)}; run the images through ip_core.preprocess.preprocess_images(images, size={self.image_size})."
            )
        return pixel_values.to(device=self.device, dtype=self.dtype)

    def encode_images(self, images: torch.Tensor, mode: str = "center") -> EncoderOutput:
        """ComfyUI IMAGE [B, H, W, C] 0..1 -> EncoderOutput: preprocess (center | pad | squash), then encode."""
        pixels = preprocess_images(images, mode=mode, size=self.image_size)
        with torch.no_grad():
            return self.encode(pixels)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, projection_dim={self.projection_dim}, "
                f"hidden_size={self.hidden_size}, image_size={self.image_size})")


# ----------------------------------------------------------------------------------------------------------
# OpenCLIP backend


def _check_openclip_visual(visual: nn.Module) -> None:
    needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "proj")
    missing = [n for n in needed if not hasattr(visual, n)]
    if missing:
        raise UnsupportedAdapterError(
            f"{type(visual).__name__} is not an open_clip VisionTransformer (no {', '.join(missing)}); only plain "
            "CLIP ViT towers (ViT-H-14, ViT-bigG-14, ...) are supported. Pass model.visual of a ViT CLIP model."
        )
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok" or visual.proj is None:
        raise UnsupportedAdapterError(
            "this open_clip vision tower pools with attention or averaging, or has no projection; IP-Adapters use "
            "plain CLIP ViTs (class token, linear projection) such as ViT-H-14 and ViT-bigG-14."
        )


class OpenCLIPEncoder(ImageEncoder):
    """open_clip's VisionTransformer. Use from_checkpoint() for real weights, from_model() for a built tower."""

    def __init__(self, visual: nn.Module, name: Optional[str] = None):
        _check_openclip_visual(visual)
        self.visual = visual.eval().requires_grad_(False)
        self.hidden_size = int(visual.class_embedding.shape[-1])
        self.projection_dim = int(visual.proj.shape[-1])
        image_size = getattr(visual, "image_size", None)
        if image_size is None:  # very old open_clip: infer from the positional embedding
            grid = int(round((visual.positional_embedding.shape[0] - 1) ** 0.5))
            image_size = grid * visual.conv1.kernel_size[0]
        self.image_size = int(image_size[0] if isinstance(image_size, (tuple, list)) else image_size)
        self.name = name or encoder_name_for_dims(self.hidden_size, self.projection_dim)

    @classmethod
    def from_model(cls, visual: nn.Module, name: Optional[str] = None) -> "OpenCLIPEncoder":
        """Wrap an existing open_clip vision tower (model.visual), e.g. a tiny one built in a test."""
        return cls(visual, name)

    @property
    def module(self) -> nn.Module:
        return self.visual

    @classmethod
    def from_checkpoint(cls, path, arch: Union[str, dict] = "ViT-H-14", device="cpu", dtype=torch.float32) -> "OpenCLIPEncoder":
        """Build `arch` (open_clip name or model config dict, no download) and load a local weight file into it.

        Accepted files: a full OpenCLIP state dict (open_clip_pytorch_model.bin / .safetensors, `visual.*` keys,
        the text tower is ignored), a vision-only OpenCLIP dict (`conv1.weight`, ...), or the transformers layout
        (`vision_model.*` + `visual_projection.weight`, e.g. ComfyUI's CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors).
        """
        path = Path(path)
        visual_sd = load_openclip_visual_state_dict(path)
        visual = build_openclip_visual(arch, device="meta")
        _check_shapes(visual.state_dict(), visual_sd, path, arch)
        visual.load_state_dict(visual_sd, strict=True, assign=True)
        visual.to(device=device, dtype=dtype)
        return cls(visual, OPENCLIP_ARCHS[arch].name if isinstance(arch, str) and arch in OPENCLIP_ARCHS else None)

    def _blocks_input(self, x: torch.Tensor):
        batch_first = getattr(self.visual.transformer, "batch_first", False)
        return x if batch_first else x.transpose(0, 1), batch_first

    def encode(self, pixel_values: torch.Tensor) -> EncoderOutput:
        v = self.visual
        x = v.conv1(self._check_pixels(pixel_values))  # [B, width, grid, grid]
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls_token = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls_token, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = v.ln_pre(x)  # patch dropout is the identity in eval mode, so it is skipped

        # Run the blocks one by one to keep the input of the last one: that is transformers' hidden_states[-2].
        x, batch_first = self._blocks_input(x)
        blocks = v.transformer.resblocks
        for block in blocks[:-1]:
            x = block(x, attn_mask=None)
        penultimate = x
        x = blocks[-1](x, attn_mask=None)
        if not batch_first:
            penultimate, x = penultimate.transpose(0, 1), x.transpose(0, 1)

        # Class token -> ln_post -> proj (ln_post is per token, so before or after pooling is the same).
        image_embeds = v.ln_post(x[:, 0]) @ v.proj
        return EncoderOutput(image_embeds=image_embeds, penultimate_hidden_states=penultimate)


def _arch_label(arch) -> str:
    return arch if isinstance(arch, str) else "custom"


def build_openclip_visual(arch: Union[str, dict] = "ViT-H-14", device="cpu") -> nn.Module:
    """The vision tower of an open_clip architecture, randomly initialised (device="meta": shapes only, no memory).

    arch: an open_clip model name ("ViT-H-14", "ViT-bigG-14"), or an open_clip model config dict with
    "embed_dim" and "vision_cfg" (for custom or tiny test towers). Only the vision tower is built: the
    ViT-H-14 text tower alone is 350M parameters we would throw away.
    """
    import open_clip

    if isinstance(arch, dict):
        cfg = arch
        if "embed_dim" not in cfg or "vision_cfg" not in cfg:
            raise IPAdapterError("an open_clip model config needs 'embed_dim' and 'vision_cfg' (see open_clip/model_configs/*.json).")
    else:
        if ":" in arch or "/" in arch:
            raise IPAdapterError(
                f"arch {arch!r}: give an open_clip architecture name such as 'ViT-H-14' or 'ViT-bigG-14' "
                "(hub or folder references are not accepted: nothing is downloaded)."
            )
        cfg = open_clip.get_model_config(arch)
        if cfg is None:
            raise IPAdapterError(
                f"unknown open_clip architecture {arch!r}; IP-Adapters use 'ViT-H-14' or 'ViT-bigG-14' "
                f"(open_clip knows {len(open_clip.list_models())} names, see open_clip.list_models())."
            )
    with torch.device(device):
        try:
            from open_clip.model import _build_vision_tower
        except ImportError:  # private helper moved: fall back to the public (slower) whole-model path
            if isinstance(arch, dict):
                raise IPAdapterError("this open_clip version cannot build a tower from a config dict; pass an architecture name.") from None
            return open_clip.create_model(arch, pretrained=None, device=device).visual
        return _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"], quick_gelu=cfg.get("quick_gelu", False))


# ----------------------------------------------------------------------------------------------------------
# Reading vision weight files


def _read_tensor_file(path: Path) -> dict:
    _, data = read_tensor_file(path, safe_alternative="the .safetensors file of this CLIP vision model")
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]  # open_clip training checkpoints wrap the weights
    if not isinstance(data, dict):
        raise AdapterFileError(f"{path.name}: holds a {type(data).__name__}, not a dict of weights; not a CLIP vision model.")
    if any(not isinstance(k, str) for k in data):
        raise AdapterFileError(f"{path.name}: weight names must be strings, found {next(k for k in data if not isinstance(k, str))!r}; "
                               "not a CLIP vision model. Use the image encoder's original file.")
    if data and all(k.startswith("module.") for k in data):
        data = {k[len("module."):]: v for k, v in data.items()}  # saved from DistributedDataParallel
    return data


def _not_a_vision_tower(path: Path, sd: dict) -> AdapterFileError:
    sample = ", ".join(sorted(sd)[:5]) or "no keys"
    hint = ""
    if any(k.startswith(("image_proj", "ip_adapter")) for k in sd):
        hint = " It is an IP-Adapter file, not an image encoder: load it as an adapter."
    return AdapterFileError(
        f"{path.name}: not a CLIP vision model (found {len(sd)} keys such as {sample}).{hint} Expected OpenCLIP keys "
        "(visual.conv1.weight, ...) or transformers keys (vision_model.embeddings.patch_embedding.weight, ...): "
        "use the image encoder the adapter was trained with, e.g. CLIP-ViT-H-14-laion2B-s32B-b79K."
    )


def load_openclip_visual_state_dict(path) -> dict:
    """A local CLIP vision file in either layout -> OpenCLIP visual state dict (keys without `visual.`)."""
    path = Path(path)
    sd = _read_tensor_file(path)
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise AdapterFileError(f"{path.name}: entries {bad[:5]} are not tensors; the file is not a CLIP vision model.")
    if any(k.startswith("vision_model.") for k in sd):
        try:
            sd = _strip(transformers_to_openclip(sd), "visual.")
        except IPAdapterError as e:
            raise AdapterFileError(f"{path.name}: {e}") from None
        check_weights(sd, path.name)
        return sd
    if any(k.startswith("visual.") for k in sd):
        sd = _strip(sd, "visual.")
    elif "conv1.weight" not in sd:
        raise _not_a_vision_tower(path, sd)
    if "conv1.weight" not in sd:
        # e.g. timm-based towers (visual.trunk.*) or a ResNet CLIP
        raise UnsupportedAdapterError(
            f"{path.name}: this OpenCLIP vision tower is not a plain ViT (keys such as {', '.join(sorted(sd)[:3])}); "
            "IP-Adapters use ViT-H-14 or ViT-bigG-14."
        )
    check_weights(sd, path.name)  # float, finite: the same rule as adapter weights
    return sd


def _strip(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def dims_from_openclip_state_dict(sd: dict, heads: Optional[int] = None) -> VisionDims:
    """VisionDims from an OpenCLIP visual state dict (keys without `visual.`). Heads cannot be read from shapes."""
    try:
        width, _, patch, _ = sd["conv1.weight"].shape
        layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k)))
        mlp_dim = sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
        output_dim = sd["proj"].shape[1]
        grid = int(round((sd["positional_embedding"].shape[0] - 1) ** 0.5))
    except (KeyError, ValueError) as e:
        raise IPAdapterError(f"not a plain OpenCLIP ViT vision state dict (missing or odd {e}).") from None
    if heads is None:
        known = [d for d in KNOWN_ARCHS.values() if (d.width, d.layers) == (width, layers)]
        heads = known[0].heads if known else max(1, width // 64)
    return VisionDims(width, layers, heads, mlp_dim, output_dim, patch, grid * patch)


def _arch_for(dims: VisionDims) -> Optional[str]:
    for arch, known in KNOWN_ARCHS.items():
        if (known.width, known.layers, known.output_dim) == (dims.width, dims.layers, dims.output_dim):
            return arch
    return None


def _check_shapes(expected: dict, got: dict, path: Path, arch) -> None:
    arch = _arch_label(arch)
    diff = shape_differences({k: tuple(v.shape) for k, v in expected.items()}, got)
    if not diff:
        return
    missing, unexpected, wrong = diff.missing, diff.unexpected, diff.wrong
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} tensors have other shapes, e.g. {'; '.join(wrong[:3])}")
    if missing:
        problems.append(f"{len(missing)} tensors are missing, e.g. {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"{len(unexpected)} tensors are unexpected, e.g. {', '.join(unexpected[:3])}")
    try:
        actual = _arch_for(dims_from_openclip_state_dict(got))
    except IPAdapterError:
        actual = None
    remedy = (f"the file holds a {actual} vision tower: pass arch={actual!r}." if actual and actual != arch
              else f"use a {arch} CLIP vision file, or pass the arch it was trained as.")
    raise AdapterFileError(f"{path.name}: does not fit the {arch} architecture: {'; '.join(problems)}. {remedy}")


# ----------------------------------------------------------------------------------------------------------
# Layout conversion (OpenCLIP <-> transformers)

_PAIRS = [  # (OpenCLIP key without `visual.`, transformers key) for the non-block tensors
    ("class_embedding", "vision_model.embeddings.class_embedding"),
    ("conv1.weight", "vision_model.embeddings.patch_embedding.weight"),
    ("positional_embedding", "vision_model.embeddings.position_embedding.weight"),
    ("ln_pre.weight", "vision_model.pre_layrnorm.weight"),
    ("ln_pre.bias", "vision_model.pre_layrnorm.bias"),
    ("ln_post.weight", "vision_model.post_layernorm.weight"),
    ("ln_post.bias", "vision_model.post_layernorm.bias"),
]
_BLOCK_PAIRS = [  # per block i: (transformer.resblocks.{i}. + ..., vision_model.encoder.layers.{i}. + ...)
    ("attn.out_proj.weight", "self_attn.out_proj.weight"),
    ("attn.out_proj.bias", "self_attn.out_proj.bias"),
    ("ln_1.weight", "layer_norm1.weight"),
    ("ln_1.bias", "layer_norm1.bias"),
    ("ln_2.weight", "layer_norm2.weight"),
    ("ln_2.bias", "layer_norm2.bias"),
    ("mlp.c_fc.weight", "mlp.fc1.weight"),
    ("mlp.c_fc.bias", "mlp.fc1.bias"),
    ("mlp.c_proj.weight", "mlp.fc2.weight"),
    ("mlp.c_proj.bias", "mlp.fc2.bias"),
]


def _num_blocks(keys, pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    if not found:
        return 0
    if found != set(range(max(found) + 1)):
        raise IPAdapterError(f"transformer blocks {sorted(set(range(max(found) + 1)) - found)[:5]} are missing; the file is incomplete.")
    return max(found) + 1


def _take(sd: dict, key: str, layout: str) -> torch.Tensor:
    try:
        return sd[key]
    except KeyError:
        raise IPAdapterError(f"{key} is missing from the {layout} vision weights; the file is incomplete or another model.") from None


def openclip_to_transformers(sd: dict) -> dict:
    """OpenCLIP vision weights (full model dict with `visual.*`, or vision-only keys) -> CLIPVisionModelWithProjection keys."""
    if any(k.startswith("visual.") for k in sd):
        sd = _strip(sd, "visual.")
    extra = [k for k in sd if re.search(r"\.ls_[12]\.|attn_pool|^trunk\.|ln_inner|ln_1_kv", k)]
    if extra:
        raise UnsupportedAdapterError(
            f"these OpenCLIP vision weights have parts transformers' CLIP has no place for ({', '.join(extra[:3])}); "
            "only plain CLIP ViTs (ViT-H-14, ViT-bigG-14) convert."
        )
    out = {hf: _take(sd, oc, "OpenCLIP") for oc, hf in _PAIRS}
    n = _num_blocks(sd, r"transformer\.resblocks\.(\d+)\.")
    if n == 0:
        raise IPAdapterError("no transformer.resblocks.* weights: not an OpenCLIP ViT vision tower.")
    for i in range(n):
        src, dst = f"transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}."
        w = _take(sd, src + "attn.in_proj_weight", "OpenCLIP")
        b = _take(sd, src + "attn.in_proj_bias", "OpenCLIP")
        for name, wi, bi in zip(("q_proj", "k_proj", "v_proj"), w.chunk(3, dim=0), b.chunk(3, dim=0)):
            out[f"{dst}self_attn.{name}.weight"] = wi.clone()
            out[f"{dst}self_attn.{name}.bias"] = bi.clone()
        for oc, hf in _BLOCK_PAIRS:
            out[dst + hf] = _take(sd, src + oc, "OpenCLIP")
    # OpenCLIP multiplies x @ proj [width, out]; nn.Linear stores [out, width].
    out["visual_projection.weight"] = _take(sd, "proj", "OpenCLIP").t().contiguous()
    return {k: v.contiguous() for k, v in out.items()}


def transformers_to_openclip(sd: dict, prefix: str = "visual.") -> dict:
    """CLIPVisionModelWithProjection (or CLIPModel) weights -> OpenCLIP vision keys, prefixed `visual.` by default."""
    if not any(k.startswith("vision_model.") for k in sd):
        raise IPAdapterError("no vision_model.* weights: not a transformers CLIP vision model.")
    out = {oc: _take(sd, hf, "transformers") for oc, hf in _PAIRS}
    n = _num_blocks(sd, r"vision_model\.encoder\.layers\.(\d+)\.")
    for i in range(n):
        src, dst = f"vision_model.encoder.layers.{i}.", f"transformer.resblocks.{i}."
        qkv = [_take(sd, f"{src}self_attn.{p}_proj.weight", "transformers") for p in "qkv"]
        qkv_b = [_take(sd, f"{src}self_attn.{p}_proj.bias", "transformers") for p in "qkv"]
        out[dst + "attn.in_proj_weight"] = torch.cat(qkv, dim=0)
        out[dst + "attn.in_proj_bias"] = torch.cat(qkv_b, dim=0)
        for oc, hf in _BLOCK_PAIRS:
            out[dst + oc] = _take(sd, src + hf, "transformers")
    if "visual_projection.weight" not in sd:
        raise IPAdapterError(
            "visual_projection.weight is missing: this is a CLIPVisionModel without the projection, so it cannot give "
            "image_embeds. Use a CLIPVisionModelWithProjection / full CLIP file."
        )
    out["proj"] = sd["visual_projection.weight"].t()
    return {prefix + k: v.contiguous() for k, v in out.items()}


def _as_dims(arch_or_dims) -> VisionDims:
    if isinstance(arch_or_dims, VisionDims):
        return arch_or_dims
    if isinstance(arch_or_dims, str):
        if arch_or_dims not in KNOWN_ARCHS:
            raise IPAdapterError(f"no transformers config for {arch_or_dims!r}; known: {', '.join(KNOWN_ARCHS)} (or pass VisionDims).")
        return KNOWN_ARCHS[arch_or_dims]
    if isinstance(arch_or_dims, nn.Module):  # an open_clip VisionTransformer
        _check_openclip_visual(arch_or_dims)
        heads = arch_or_dims.transformer.resblocks[0].attn.num_heads
        dims = dims_from_openclip_state_dict(arch_or_dims.state_dict(), heads=heads)
        eps = getattr(arch_or_dims.ln_pre, "eps", 1e-5)
        return VisionDims(**{**dims.__dict__, "layer_norm_eps": eps})
    raise IPAdapterError(f"expected an arch name, VisionDims or an open_clip vision tower, got {type(arch_or_dims).__name__}.")


def transformers_config_for_openclip(arch_or_dims: Union[str, VisionDims, nn.Module] = "ViT-H-14"):
    """A CLIPVisionConfig computing what the OpenCLIP tower computes (exact GELU, LayerNorm eps 1e-5)."""
    from transformers import CLIPVisionConfig

    d = _as_dims(arch_or_dims)
    return CLIPVisionConfig(
        hidden_size=d.width,
        intermediate_size=d.mlp_dim,
        projection_dim=d.output_dim,
        num_hidden_layers=d.layers,
        num_attention_heads=d.heads,
        image_size=d.image_size,
        patch_size=d.patch_size,
        hidden_act="gelu",  # OpenCLIP's nn.GELU (erf); transformers' CLIP default is quick_gelu (OpenAI weights)
        layer_norm_eps=d.layer_norm_eps,
    )


# ----------------------------------------------------------------------------------------------------------
# transformers backend


class TransformersCLIPEncoder(ImageEncoder):
    """transformers' CLIPVisionModelWithProjection."""

    def __init__(self, model: nn.Module, name: Optional[str] = None):
        if not hasattr(model, "visual_projection") or not hasattr(model, "vision_model"):
            raise UnsupportedAdapterError(
                f"{type(model).__name__} has no visual_projection: image_embeds need a CLIPVisionModelWithProjection."
            )
        self.model = model.eval().requires_grad_(False)
        cfg = model.config
        self.hidden_size = int(cfg.hidden_size)
        self.projection_dim = int(cfg.projection_dim)
        self.image_size = int(cfg.image_size)
        self.name = name or encoder_name_for_dims(self.hidden_size, self.projection_dim)
        # False when the weights had no visual_projection (a CLIPVisionModel folder): image_embeds are then random
        self.projection_trained = True

    @classmethod
    def from_model(cls, model: nn.Module, name: Optional[str] = None) -> "TransformersCLIPEncoder":
        return cls(model, name)

    @classmethod
    def from_pretrained(cls, folder, device="cpu", dtype=torch.float32) -> "TransformersCLIPEncoder":
        """Load a local transformers folder (config.json + weights). Never downloads."""
        import transformers

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise AdapterFileError(
                f"{folder}: not a transformers model folder (no config.json). Give the folder holding config.json and "
                "model.safetensors, or load a single weight file with OpenCLIPEncoder.from_checkpoint."
            )
        # transformers 5 renamed torch_dtype to dtype
        dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        try:
            model, info = transformers.CLIPVisionModelWithProjection.from_pretrained(
                str(folder), local_files_only=True, use_safetensors=None, output_loading_info=True, **{dtype_kw: dtype}
            )
        except (OSError, ValueError, RuntimeError) as e:
            raise AdapterFileError(
                f"{folder.name}: could not load it as a CLIPVisionModelWithProjection ({str(e).splitlines()[0][:300]}). "
                "Check that the folder holds a complete CLIP vision model."
            ) from None
        encoder = cls(model.to(device))
        encoder.projection_trained = not any(k.startswith("visual_projection") for k in info.get("missing_keys", ()))
        return encoder

    @property
    def module(self) -> nn.Module:
        return self.model

    def encode(self, pixel_values: torch.Tensor) -> EncoderOutput:
        out = self.model(pixel_values=self._check_pixels(pixel_values), output_hidden_states=True)
        return EncoderOutput(image_embeds=out.image_embeds, penultimate_hidden_states=out.hidden_states[-2])


def load_image_encoder(path, arch: Union[str, dict] = "ViT-H-14", device="cpu", dtype=torch.float32) -> ImageEncoder:
    """A transformers folder (config.json inside) -> TransformersCLIPEncoder; a single weight file in either
    layout -> OpenCLIPEncoder built as `arch`. Both give the same features for the same weights."""
    path = Path(path)
    if path.is_dir():
        return TransformersCLIPEncoder.from_pretrained(path, device=device, dtype=dtype)
    return OpenCLIPEncoder.from_checkpoint(path, arch=arch, device=device, dtype=dtype)


__all__ = [
    "EncoderOutput", "ImageEncoder", "KNOWN_ARCHS", "OpenCLIPEncoder", "TransformersCLIPEncoder",
    "VisionDims", "build_openclip_visual", "dims_from_openclip_state_dict", "encoder_name_for_dims",
    "load_image_encoder", "load_openclip_visual_state_dict", "openclip_to_transformers", "transformers_config_for_openclip",
    "transformers_to_openclip",
]
