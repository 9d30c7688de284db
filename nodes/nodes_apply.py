"""Apply IPAdapter: a patched clone of the model with the image prompt in its cross-attention layers."""
from __future__ import annotations

from dataclasses import replace

import torch

from ..ip_core.embeds import ImagePromptEmbeds, check_embeds_fit
from ..ip_core.errors import AdapterMismatchError, IPAdapterError
from ..ip_core import weight_types
from ..ip_core.frames import check_frame_weights
from ..ip_core.tiles import region_mask
from .common import CATEGORY, LoadedAdapter, check_number, error_boundary, require, with_advice
from .layer_weights import PRESETS
from .layer_weights import layer_weights as resolve_layer_weights
from .families import family_for
from .patch import SigmaWindow
from . import host

_CONTEXT_DIMS = {768: "sd15", 2048: "sdxl"}
_FAMILY_NAMES = {"sd15": "SD1.5", "sdxl": "SDXL", "flux": "Flux", "sd3": "SD3 / SD3.5"}


def model_family(model):
    """"sd15" / "sdxl" / a description, from the host model's detected UNet config (supported_models.py)."""
    try:
        unet_config = model.model.model_config.unet_config
    except AttributeError:
        return None
    if unet_config.get("image_model") == "flux":  # comfy/model_detection.py (Chroma has its own name)
        return "flux"
    if host.is_sd3(model):
        return "sd3"
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


def _weight_plan(a, embeds, weight, weight_type, embeds_scaling, composition_embeds, weight_composition, expand_style,
                 style_boost, composition_boost, legacy=False):
    """Checks the weight-type inputs and returns ip_core's per-layer plan (one LayerPlan per adapter layer). The
    options the widely used pack defines for SD1.5 / SDXL layers are refused for the other families."""
    weight_types.check_weight_type(weight_type)
    weight_types.check_embeds_scaling(embeds_scaling)
    weight_composition = check_number(weight_composition, "weight_composition", -1.0, 5.0)
    style_boost = check_number(style_boost, "style_boost", -5.0, 5.0)
    composition_boost = check_number(composition_boost, "composition_boost", -5.0, 5.0)
    if not isinstance(expand_style, bool):
        raise IPAdapterError(f"expand_style must be true or false, got {expand_style!r}.")
    if composition_embeds is not None:
        composition_embeds = require(composition_embeds, "IPA_EMBEDS", "composition_embeds", ImagePromptEmbeds)
        if not weight_types.uses_composition_embeds(weight_type):
            raise IPAdapterError(
                f"composition_embeds is used by weight_type 'style and composition' only (it is {weight_type!r}); "
                "choose 'style and composition', or disconnect composition_embeds."
            )
        try:
            check_embeds_fit(a.adapter, composition_embeds)
        except AdapterMismatchError as e:
            raise AdapterMismatchError(f"composition_embeds: {e}") from None
        if not torch.isfinite(composition_embeds.cond).all():
            raise IPAdapterError("composition_embeds contain NaN or infinite values; re-encode the composition image.")
        if composition_embeds.cond.shape[0] != embeds.cond.shape[0]:
            raise IPAdapterError(
                f"composition_embeds hold {composition_embeds.cond.shape[0]} per-item references but embeds hold "
                f"{embeds.cond.shape[0]}; encode both with the same batch size, or with combine 'concat' / 'average'."
            )
    family = a.config.base_model
    if family not in weight_types.HOST_TRANSFORMER_INDEX:
        name = a.config.base_model_name
        if weight_type != "linear" or expand_style:
            raise IPAdapterError(
                f"weight_type {weight_type!r} is defined for SD1.5 and SDXL layers; {a.name} is for "
                f"{name}. Use weight_type 'linear'."
            )
        if embeds_scaling != "V only":
            raise IPAdapterError(f"embeds_scaling {embeds_scaling!r} is defined for SD1.5 and SDXL; {a.name} is for {name}. Use 'V only'.")
        if legacy:
            raise IPAdapterError(f"legacy reproduces the widely used SD1.5 / SDXL pack; {a.name} is for {name}. Turn legacy off.")
        return [weight_types.LayerPlan(weight=weight)] * len(a.adapter.layers)
    return weight_types.layer_plan(family, a.adapter.layers, weight_type, weight, weight_composition=weight_composition,
                                   expand_style=expand_style, style_boost=style_boost,
                                   composition_boost=composition_boost)


class IPAApplyAdapter:
    DESCRIPTION = (
        "Adds the image prompt to every cross-attention layer of the model (16 for SD1.5, 70 for SDXL and Kolors, "
        "middle block included): attention(text) + weight * attention(image tokens); for Flux and SD3.5, to the "
        "transformer blocks the adapter has, in its own form. Returns a patched copy; the input model is unchanged. "
        "Chain several Apply nodes to stack adapters; they add up."
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
                "model": ("MODEL", {"tooltip": "The model to patch: SD1.5, SDXL, Kolors, Flux or SD3.5 Large, matching the adapter."}),
                "ipadapter": ("IPA_ADAPTER", {"tooltip": "The adapter from Load IPAdapter."}),
                "embeds": ("IPA_EMBEDS", {"tooltip": "Image prompt tokens from Encode Image Prompt, made with this adapter."}),
                "weight": ("FLOAT", {"default": 1.0, "min": -1.0, "max": 5.0, "step": 0.05, "tooltip": "lambda: strength of the image prompt. 0 = text only (exactly the unpatched model), 1 = the paper's setting."}),
                "start_at": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip": "Fraction of the schedule where the image prompt starts (0 = first step)."}),
                "end_at": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip": "Fraction of the schedule where it stops (1 = last step). Outside the window the image branch is not computed."}),
            },
            "optional": {
                "attn_mask": ("MASK", {"tooltip": "Where the image prompt acts (1) and not (0); any size, stretched to the image. One mask, or one per batch item."}),
                "layer_weights": (list(PRESETS), {"default": "all layers", "tooltip": "Which layers get the image prompt. style only / composition only: InstantStyle's blocks (SDXL), the widely used pack's tables (SD1.5)."}),
                "layer_weights_custom": ("STRING", {"default": "", "multiline": False, "tooltip": "Overrides layer_weights when not empty: one number per layer ('1, 0, ...'), or named blocks ('output.1=1, input.8=0.5'); unnamed layers get 0."}),
                # weight types and embeds scaling (the widely used pack's options), resolved here, once
                "weight_type": (list(weight_types.WEIGHT_TYPES), {"default": "linear", "tooltip": "How weight spreads over the layers, as in the widely used IPAdapter pack (the middle block included here). 'style transfer' / 'composition' and the precise types exist for SD1.5 and SDXL."}),
                "embeds_scaling": (list(weight_types.EMBEDS_SCALINGS), {"default": "V only", "tooltip": "Where weight enters: V only = weight x image attention (the paper); K+V scales K' and V'; 'C penalty' also by layer width / 1280; K+mean(V) scales only V's mean."}),
                "composition_embeds": ("IPA_EMBEDS", {"tooltip": "A second reference for the composition layers (weight_type 'style and composition'); embeds is then the style reference."}),
                "weight_composition": ("FLOAT", {"default": 1.0, "min": -1.0, "max": 5.0, "step": 0.05, "tooltip": "Weight of the composition layers for 'style and composition' (weight is the style weight)."}),
                "expand_style": ("BOOLEAN", {"default": False, "tooltip": "'style and composition' only: style in every non-composition layer (the pack's strong style and composition)."}),
                "style_boost": ("FLOAT", {"default": 1.0, "min": -5.0, "max": 5.0, "step": 0.05, "tooltip": "'style transfer precise' only: weight of the composition layers, which get the reference as their negative."}),
                "composition_boost": ("FLOAT", {"default": 0.0, "min": -5.0, "max": 5.0, "step": 0.05, "tooltip": "'composition precise' only: weight of the style layers, which get the reference as their negative (weight drives composition)."}),
                "faceid_lora_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05, "tooltip": "FaceID adapters: strength of the LoRA stored in the adapter file, patched into the UNet (1 = official). 0 = no LoRA (e.g. when you load the separate LoRA file yourself)."}),
                "weight_faceidv2": ("FLOAT", {"default": 1.0, "min": -1.0, "max": 5.0, "step": 0.05, "tooltip": "FaceID PlusV2 only: scale of the CLIP refinement in the shortcut tokens = face + weight_faceidv2 * refinement (official s_scale)."}),
                "frame_weights": ("FLOAT", {"forceInput": True, "tooltip": "One weight per frame (from IPAdapter Frame Weights), multiplying weight; fewer weights than frames repeat the last."}),
                "legacy": ("BOOLEAN", {"default": False, "tooltip": "Reproduce ComfyUI_IPAdapter_plus: leave the middle block out (that pack registers it under a key the host never reads). Use with legacy on Encode Image Prompt. Set by python -m nodes.migrate --legacy."}),
                "weight_kolors": ("FLOAT", {"default": 1.0, "min": -1.0, "max": 5.0, "step": 0.05, "tooltip": "Kolors FaceID-Plus only: scales the Kolors UNet's encoder_hid_proj (weight and bias) that maps the 4096-wide face tokens to the context, as the widely used pack's IPAdapter FaceID Kolors (1 = the official pipeline). It scales K' and V'."}),
            },
        }

    @error_boundary
    def apply(self, model, ipadapter, embeds, weight, start_at, end_at, attn_mask=None, layer_weights="all layers",
              layer_weights_custom="", weight_type="linear", embeds_scaling="V only", composition_embeds=None,
              weight_composition=1.0, expand_style=False, style_boost=1.0, composition_boost=0.0,
              faceid_lora_strength=1.0, weight_faceidv2=1.0, frame_weights=None, legacy=False, weight_kolors=1.0):
        a = require(ipadapter, "IPA_ADAPTER", "ipadapter", LoadedAdapter)
        embeds = require(embeds, "IPA_EMBEDS", "embeds", ImagePromptEmbeds)
        config = a.config
        weight = check_number(weight, "weight", -1.0, 5.0)
        start_at = check_number(start_at, "start_at", 0.0, 1.0)
        end_at = check_number(end_at, "end_at", 0.0, 1.0)
        if start_at > end_at:
            raise IPAdapterError(f"start_at ({start_at}) is after end_at ({end_at}); make start_at <= end_at.")
        host_family = model_family(model)
        if host_family is not None and host_family != config.base_model:
            have = _FAMILY_NAMES.get(host_family, host_family)
            raise AdapterMismatchError(
                f"adapter/model mismatch: {a.name} is an adapter for {config.base_model_name} but the model is {have}. "
                f"Load an IP-Adapter made for {have}, or use a {config.base_model_name} model."
            )
        family = family_for(config)  # nodes/families: how this adapter's family checks and patches the model
        # FaceID: face embeds only with FaceID adapters; PlusV2's shortcut scale.
        faceid_lora_strength = check_number(faceid_lora_strength, "faceid_lora_strength", 0.0, 2.0)
        embeds = family.face_embeds(a, embeds, check_number(weight_faceidv2, "weight_faceidv2", -1.0, 5.0))
        try:
            check_embeds_fit(a.adapter, embeds)
        except AdapterMismatchError as e:
            raise with_advice(e, "Connect the same Load IPAdapter output to Encode Image Prompt and to Apply IPAdapter.") from None
        if config.token_dim and composition_embeds is not None:
            raise IPAdapterError(f"{a.name} ({config.description}) takes no composition_embeds; disconnect them.")
        # Kolors FaceID-Plus: 4096-wide tokens -> context through the model's encoder_hid_proj (x weight_kolors)
        embeds = family.context_embeds(model, a, embeds, check_number(weight_kolors, "weight_kolors", -1.0, 5.0))
        if not torch.isfinite(embeds.cond).all() or not torch.isfinite(embeds.uncond).all():
            raise IPAdapterError("the image prompt embeds contain NaN or infinite values; re-encode the image (check the CLIP vision model).")
        family.check_model(a, model)
        mask = _check_mask(attn_mask)
        per_layer = resolve_layer_weights(a.adapter.layers, layer_weights, layer_weights_custom, config.base_model_name)
        plan = _weight_plan(a, embeds, weight, weight_type, embeds_scaling, composition_embeds, weight_composition,
                            expand_style, style_boost, composition_boost, legacy)
        if legacy and str(layer_weights_custom).strip():
            # the widely used pack: layer weights replace the weight type's own per-layer weights (a precise type
            # keeps its cond -> uncond swap; every other type acts as linear)
            plan = [replace(p, weight=float(weight)) for p in plan]
        if legacy:  # the widely used pack's middle block never runs: weight 0 there, as if unpatched
            per_layer = [0.0 if spec.comfy_key and spec.comfy_key[0] == "middle" else w
                         for spec, w in zip(a.adapter.layers, per_layer)]
        sampling = model.get_model_object("model_sampling")
        window = SigmaWindow(sampling.percent_to_sigma(start_at), sampling.percent_to_sigma(end_at),
                             whole_schedule=start_at <= 0.0 and end_at >= 1.0)
        if frame_weights is not None:
            frame_weights = check_frame_weights(frame_weights)
        # Tiled embeds: one branch per tile, each in its region (the rows add up); otherwise one branch.
        patched = model
        for r, (part, region) in enumerate(embeds.regions()):
            part_mask = mask if region is None else region_mask(region, mask)
            name = a.name if region is None else f"{a.name}, tile {r + 1}"
            weights, label = [p.weight * w for p, w in zip(plan, per_layer)], f"Apply IPAdapter ({name})"
            patched = family.patch(patched, a, part, weights, window, part_mask, label, frame_weights, plan,
                                   composition_embeds, embeds_scaling)
        patched = family.finish(patched, a, faceid_lora_strength)  # FaceID: the file's LoRA on the UNet weights
        return (patched,)
