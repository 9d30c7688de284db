"""The ComfyUI nodes (classic V1 node API, which every ComfyUI version loads).

Node ids, input names and output types are public API: saved workflows refer to them. Add, never rename.
"""
from __future__ import annotations

import math
import os

import torch

from . import host
from .core import adapter as _adapter
from .core import embeds as _embeds
from .core import encoder_table as _encoder_table
from .core import errors as _errors
from .core import preprocess as _preprocess
from .layer_weights import PRESETS
from .layer_weights import layer_weights as resolve_layer_weights
from .patch import AdapterBranch, SigmaWindow, patch_model

load_adapter = _adapter.load_adapter
COMBINE_MODES, ImagePromptEmbeds = _embeds.COMBINE_MODES, _embeds.ImagePromptEmbeds
build_image_prompt, check_embeds_fit = _embeds.build_image_prompt, _embeds.check_embeds_fit
features_for, unconditional_features = _embeds.features_for, _embeds.unconditional_features
AdapterFileError, AdapterMismatchError, IPAdapterError = _errors.AdapterFileError, _errors.AdapterMismatchError, _errors.IPAdapterError
CROP_MODES, preprocess_images = _preprocess.MODES, _preprocess.preprocess_images

CATEGORY = "ipadapter"
ENCODE_CHUNK = 16  # references per encoder call: bounds memory, gives the progress bar steps
_CONTEXT_DIMS = {768: "sd15", 2048: "sdxl"}
_FAMILY_NAMES = {"sd15": "SD1.5", "sdxl": "SDXL"}


class LoadedAdapter:
    """The IPA_ADAPTER value: the ip_core adapter plus where it came from. repr shows the detected variant."""

    def __init__(self, adapter, name: str):
        self.adapter = adapter
        self.name = name

    @property
    def config(self):
        return self.adapter.config

    @property
    def description(self) -> str:
        return f"{self.name}: {self.config.description}"

    def __repr__(self) -> str:
        return f"IPAdapter({self.description})"


def _require(value, type_name: str, input_name: str, cls):
    if not isinstance(value, cls):
        raise IPAdapterError(
            f"input '{input_name}' must be a {type_name} from this pack's nodes, got {type(value).__name__}; "
            f"connect the output of the matching node (Load IPAdapter / Encode Image Prompt)."
        )
    return value


class IPALoadAdapter:
    DESCRIPTION = (
        "Loads an IP-Adapter file from the models/ipadapter folder (and ipadapter paths in extra_model_paths.yaml). "
        "The variant (base/plus/full-face, SD1.5/SDXL, tokens, which CLIP vision it needs) is read from the file's "
        "contents, so any file name works. .safetensors, and .bin/.pt/.pth read without running pickled code."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IPA_ADAPTER",)
    RETURN_NAMES = ("ipadapter",)
    OUTPUT_TOOLTIPS = ("The loaded adapter; its detected variant is shown on the node after it runs.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        try:
            files = host.adapter_files()
        except Exception:  # listing must never break the node menu
            files = []
        return {
            "required": {
                "adapter_name": (files, {"tooltip": "An IP-Adapter weight file from models/ipadapter (any name)."}),
            }
        }

    def load(self, adapter_name):
        path, folders = host.adapter_path(adapter_name)
        if path is None:
            raise AdapterFileError(
                f"IP-Adapter file '{adapter_name}' was not found in the ipadapter folders ({', '.join(folders)}). "
                "Put the file in models/ipadapter (or a folder listed under 'ipadapter:' in extra_model_paths.yaml) "
                "and refresh (press R)."
            )
        adapter = load_adapter(path, device="cpu", dtype=torch.float32)
        loaded = LoadedAdapter(adapter, os.path.basename(path))
        return {"ui": {"text": [loaded.description]}, "result": (loaded,)}


class IPAInspectAdapter:
    DESCRIPTION = "Describes a loaded IP-Adapter: variant, base model, tokens, layers, parameters and the CLIP vision model it needs."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("info",)
    OUTPUT_TOOLTIPS = ("One line of text describing the adapter.",)
    FUNCTION = "inspect"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ipadapter": ("IPA_ADAPTER", {"tooltip": "The adapter from Load IPAdapter."})}}

    def inspect(self, ipadapter):
        a = _require(ipadapter, "IPA_ADAPTER", "ipadapter", LoadedAdapter)
        text = f"{a.description}; {a.adapter.num_parameters():,} parameters"
        return {"ui": {"text": [text]}, "result": (text,)}


def _encode(clip_vision, images, crop: str, progress):
    """IMAGE batch -> encoder output with image_embeds and penultimate_hidden_states (concatenated chunks)."""
    if not host.can_encode_pixels(clip_vision):
        raise IPAdapterError(
            f"clip_vision is a {type(clip_vision).__name__}, not ComfyUI's CLIP vision model; connect a Load CLIP Vision node."
        )
    size = int(getattr(clip_vision, "image_size", 224))
    embeds, hidden = [], []
    for start in range(0, images.shape[0], ENCODE_CHUNK):
        host.check_interrupt()
        pixels = preprocess_images(images[start:start + ENCODE_CHUNK], mode=crop, size=size)
        out = host.encode_pixels(clip_vision, pixels)
        embeds.append(out.image_embeds)
        hidden.append(out.penultimate_hidden_states)
        progress.update(min(ENCODE_CHUNK, images.shape[0] - start))
    return _encoder_table.EncoderOutput(torch.cat(embeds), torch.cat(hidden))


def _check_images(images, name: str):
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise IPAdapterError(f"'{name}' must be an IMAGE batch [batch, height, width, channels], got {shape}; connect a Load Image node.")
    if images.shape[0] == 0:
        raise IPAdapterError(f"'{name}' is an empty batch (0 images); give at least one image.")


class IPAEncodeImagePrompt:
    DESCRIPTION = (
        "Turns reference images into image prompt tokens for one IP-Adapter: preprocesses them (crop mode), runs "
        "the CLIP vision model, checks that it is the encoder the adapter needs, and projects them. The "
        "unconditional tokens follow the official recipe (zero embedding, or a zero image through the encoder for "
        "plus/full-face), or come from negative_image."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IPA_EMBEDS",)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = ("Image prompt tokens (cond and uncond) for the adapter they were made with.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ipadapter": ("IPA_ADAPTER", {"tooltip": "The adapter the tokens are for (from Load IPAdapter)."}),
                "clip_vision": ("CLIP_VISION", {"tooltip": "The CLIP vision model the adapter was trained with (usually ViT-H/14; some SDXL adapters need ViT-bigG/14)."}),
                "image": ("IMAGE", {"tooltip": "One or more reference images (a batch)."}),
            },
            "optional": {
                "crop": (list(CROP_MODES), {"default": "center", "tooltip": "center: the official centre crop; pad: keep the whole image, pad to square with the CLIP mean colour; squash: resize to square ignoring aspect."}),
                "combine": (list(COMBINE_MODES), {"default": "concat", "tooltip": "Several references: concat = all tokens side by side; average / norm average = one blended reference; batch = reference i for batch item i."}),
                "negative_image": ("IMAGE", {"tooltip": "Optional image(s) whose tokens replace the unconditional ones (guidance pushes away from them). One, or one per reference."}),
            },
        }

    def encode(self, ipadapter, clip_vision, image, crop="center", combine="concat", negative_image=None):
        a = _require(ipadapter, "IPA_ADAPTER", "ipadapter", LoadedAdapter)
        config = a.config
        _check_images(image, "image")
        if crop not in CROP_MODES:
            raise IPAdapterError(f"unknown crop mode {crop!r}; use one of {', '.join(CROP_MODES)}.")
        if combine not in COMBINE_MODES:
            raise IPAdapterError(f"unknown combine mode {combine!r}; use one of {', '.join(COMBINE_MODES)}.")
        total = image.shape[0] + (negative_image.shape[0] if isinstance(negative_image, torch.Tensor) else 1)
        progress = host.progress_bar(total)
        label = "the connected CLIP vision model"
        cond = features_for(config, _encode(clip_vision, image, crop, progress), label)
        if negative_image is not None:
            _check_images(negative_image, "negative_image")
            uncond = features_for(config, _encode(clip_vision, negative_image, crop, progress), label)
        else:
            uncond = unconditional_features(
                config, cond, encode_pixels=lambda px: host.encode_pixels(clip_vision, px),
                image_size=int(getattr(clip_vision, "image_size", 224)),
            )
            progress.update(1)
        host.check_interrupt()
        return (build_image_prompt(a.adapter, cond, uncond, combine=combine, encoder_name=config.encoder_name),)


def _model_family(model):
    """"sd15" / "sdxl" / a description, from the host model's detected UNet config (supported_models.py)."""
    try:
        unet_config = model.model.model_config.unet_config
    except AttributeError:
        return None
    ctx = unet_config.get("context_dim")
    if ctx is None:
        return "a model without UNet cross-attention (neither SD1.5 nor SDXL)"
    return _CONTEXT_DIMS.get(ctx, f"a model with {ctx}-wide text context (neither SD1.5 nor SDXL)")


def _check_number(value, name: str, low: float, high: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise IPAdapterError(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(value):
        raise IPAdapterError(f"{name} is {value}; give a finite number between {low} and {high}.")
    if not low <= value <= high:
        raise IPAdapterError(f"{name} is {value}, outside {low}..{high}; set it within that range.")
    return value


def _check_mask(mask):
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise IPAdapterError(f"attn_mask must be a MASK [height, width] or [batch, height, width], got {shape}.")
    mask = mask if mask.ndim == 3 else mask[None]
    if mask.numel() == 0:
        raise IPAdapterError(f"attn_mask is empty (shape {tuple(mask.shape)}); draw or load a mask with at least one pixel.")
    if not torch.isfinite(mask).all():
        raise IPAdapterError("attn_mask contains NaN or infinite values; check the node that made it (values 0..1).")
    return mask.float().cpu()


class IPAApplyAdapter:
    DESCRIPTION = (
        "Adds the image prompt to every cross-attention layer of the model (16 for SD1.5, 70 for SDXL, middle block "
        "included): attention(text) + weight * attention(image tokens). Returns a patched copy; the input model is "
        "unchanged. Chain several Apply nodes to stack adapters; they add up."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with the adapter applied (a clone).",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The SD1.5 or SDXL model to patch (matching the adapter)."}),
                "ipadapter": ("IPA_ADAPTER", {"tooltip": "The adapter from Load IPAdapter."}),
                "embeds": ("IPA_EMBEDS", {"tooltip": "Image prompt tokens from Encode Image Prompt, made with this adapter."}),
                "weight": ("FLOAT", {"default": 1.0, "min": -1.0, "max": 5.0, "step": 0.05, "tooltip": "lambda: strength of the image prompt. 0 = text only (exactly the unpatched model), 1 = the paper's setting."}),
                "start_at": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip": "Fraction of the schedule where the image prompt starts (0 = first step)."}),
                "end_at": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip": "Fraction of the schedule where it stops (1 = last step). Outside the window the image branch is not computed."}),
            },
            "optional": {
                "attn_mask": ("MASK", {"tooltip": "Where the image prompt acts (1) and not (0); any size, stretched to the image. One mask, or one per batch item."}),
                "layer_weights": (list(PRESETS), {"default": "all layers", "tooltip": "Which layers get the image prompt. style only / composition only follow InstantStyle (SDXL)."}),
                "layer_weights_custom": ("STRING", {"default": "", "multiline": False, "tooltip": "Overrides layer_weights when not empty: one number per layer ('1, 0, ...'), or named blocks ('output.1=1, input.8=0.5'); unnamed layers get 0."}),
            },
        }

    def apply(self, model, ipadapter, embeds, weight, start_at, end_at, attn_mask=None, layer_weights="all layers",
              layer_weights_custom=""):
        a = _require(ipadapter, "IPA_ADAPTER", "ipadapter", LoadedAdapter)
        embeds = _require(embeds, "IPA_EMBEDS", "embeds", ImagePromptEmbeds)
        config = a.config
        weight = _check_number(weight, "weight", -1.0, 5.0)
        start_at = _check_number(start_at, "start_at", 0.0, 1.0)
        end_at = _check_number(end_at, "end_at", 0.0, 1.0)
        if start_at > end_at:
            raise IPAdapterError(f"start_at ({start_at}) is after end_at ({end_at}); make start_at <= end_at.")
        family = _model_family(model)
        if family is not None and family != config.base_model:
            have = _FAMILY_NAMES.get(family, family)
            raise AdapterMismatchError(
                f"adapter/model mismatch: {a.name} is an {config.base_model_name} adapter but the model is {have}. "
                f"Load an {have} IP-Adapter, or use an {config.base_model_name} checkpoint."
            )
        check_embeds_fit(a.adapter, embeds)
        if not torch.isfinite(embeds.cond).all() or not torch.isfinite(embeds.uncond).all():
            raise IPAdapterError("the image prompt embeds contain NaN or infinite values; re-encode the image (check the CLIP vision model).")
        mask = _check_mask(attn_mask)
        per_layer = resolve_layer_weights(a.adapter.layers, layer_weights, layer_weights_custom, config.base_model_name)
        sampling = model.get_model_object("model_sampling")
        window = SigmaWindow(sampling.percent_to_sigma(start_at), sampling.percent_to_sigma(end_at),
                             whole_schedule=start_at <= 0.0 and end_at >= 1.0)
        branch = AdapterBranch(a.adapter, embeds, [weight * w for w in per_layer], window, mask,
                               label=f"Apply IPAdapter ({a.name})")
        patched, _ = patch_model(model, branch, a.adapter.layers)
        return (patched,)


NODE_CLASS_MAPPINGS = {
    "IPALoadAdapter": IPALoadAdapter,
    "IPAEncodeImagePrompt": IPAEncodeImagePrompt,
    "IPAApplyAdapter": IPAApplyAdapter,
    "IPAInspectAdapter": IPAInspectAdapter,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "IPALoadAdapter": "Load IPAdapter",
    "IPAEncodeImagePrompt": "Encode Image Prompt",
    "IPAApplyAdapter": "Apply IPAdapter",
    "IPAInspectAdapter": "Inspect IPAdapter",
}
