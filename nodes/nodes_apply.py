"""Apply IPAdapter: a patched clone of the model with the image prompt in its cross-attention layers."""
from __future__ import annotations

import torch

from ..ip_core.embeds import ImagePromptEmbeds, check_embeds_fit
from ..ip_core.errors import AdapterMismatchError, IPAdapterError
from .common import CATEGORY, LoadedAdapter, check_number, error_boundary, require
from .layer_weights import PRESETS
from .layer_weights import layer_weights as resolve_layer_weights
from .patch import AdapterBranch, SigmaWindow, patch_model

_CONTEXT_DIMS = {768: "sd15", 2048: "sdxl"}
_FAMILY_NAMES = {"sd15": "SD1.5", "sdxl": "SDXL"}


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


MASK_TOLERANCE = 1e-3  # values this far outside 0..1 are clipped (float rounding); beyond, refused


def _check_mask(mask):
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise IPAdapterError(f"attn_mask must be a MASK [height, width] or [batch, height, width], got {shape}.")
    mask = mask if mask.ndim == 3 else mask[None]
    if mask.numel() == 0:
        raise IPAdapterError(f"attn_mask is empty (shape {tuple(mask.shape)}); draw or load a mask with at least one pixel.")
    if mask.is_complex():
        raise IPAdapterError(f"attn_mask has dtype {mask.dtype}; a MASK holds float values from 0 to 1: connect a mask node's MASK output.")
    mask = mask.float().cpu()
    if not torch.isfinite(mask).all():
        raise IPAdapterError("attn_mask contains NaN or infinite values; check the node that made it (values 0..1).")
    low, high = float(mask.min()), float(mask.max())
    if low < -MASK_TOLERANCE or high > 1 + MASK_TOLERANCE:
        hint = " It looks like an 8-bit mask (0..255): divide it by 255." if high <= 255 and low >= 0 else ""
        raise IPAdapterError(
            f"attn_mask values must be between 0 and 1 (0 = no image prompt, 1 = full strength), found {low:g}..{high:g}.{hint} "
            "Use a MASK from a mask node (Load Image's mask, Solid Mask, Convert Image to Mask)."
        )
    return mask.clamp(0.0, 1.0)  # float rounding just outside 0..1 (blurred masks) is clipped


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

    @error_boundary
    def apply(self, model, ipadapter, embeds, weight, start_at, end_at, attn_mask=None, layer_weights="all layers",
              layer_weights_custom=""):
        a = require(ipadapter, "IPA_ADAPTER", "ipadapter", LoadedAdapter)
        embeds = require(embeds, "IPA_EMBEDS", "embeds", ImagePromptEmbeds)
        config = a.config
        weight = check_number(weight, "weight", -1.0, 5.0)
        start_at = check_number(start_at, "start_at", 0.0, 1.0)
        end_at = check_number(end_at, "end_at", 0.0, 1.0)
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
