"""Encode Image Prompt: reference images -> the adapter's cond / uncond tokens (IPA_EMBEDS)."""
from __future__ import annotations

import torch

from . import host
from ..ip_core.embeds import (COMBINE_MODES, build_image_prompt, features_for, parse_reference_weights,
                              unconditional_features, weight_references)
from ..ip_core.encoder_mask import apply_encoder_masks, encoder_masks
from ..ip_core.encoder_table import EncoderOutput
from ..ip_core.errors import AdapterMismatchError, IPAdapterError
from ..ip_core.preprocess import MODES as CROP_MODES
from ..ip_core.preprocess import preprocess_images
from .common import CATEGORY, LoadedAdapter, check_images, error_boundary, require

ENCODE_CHUNK = 16  # references per encoder call: bounds memory, gives the progress bar steps


def _encode(clip_vision, images, crop: str, progress, masks=None):
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
        if masks is not None:  # one mask for all, or one per reference
            pixels = apply_encoder_masks(pixels, masks if masks.shape[0] == 1 else masks[start:start + ENCODE_CHUNK])
        out = host.encode_pixels(clip_vision, pixels)
        embeds.append(out.image_embeds)
        hidden.append(out.penultimate_hidden_states)
        progress.update(min(ENCODE_CHUNK, images.shape[0] - start))
    return EncoderOutput(torch.cat(embeds), torch.cat(hidden))


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
                "combine": (list(COMBINE_MODES), {"default": "concat", "tooltip": "Several references: concat = all tokens side by side; batch = reference i for batch item i; average, norm average, add, subtract (first minus the mean of the others), max, min = one merged reference (CLIP features merged before the projection, as Combine Image Prompts does)."}),
                "negative_image": ("IMAGE", {"tooltip": "Optional image(s) whose tokens replace the unconditional ones (guidance pushes away from them). One, or one per reference."}),
                "reference_weights": ("STRING", {"default": "", "tooltip": "One weight per reference image ('1, 0.5'), or one for all; empty = all 1. Scales each reference's CLIP features before the projection (the widely used pack's encoder weight), -1..3."}),
                "mask": ("MASK", {"tooltip": "Optional mask over the CLIP input: the encoder sees the reference only where the mask is 1 (it follows the crop mode). One mask, or one per reference."}),
            },
        }

    @error_boundary
    def encode(self, ipadapter, clip_vision, image, crop="center", combine="concat", negative_image=None,
               reference_weights="", mask=None):
        a = require(ipadapter, "IPA_ADAPTER", "ipadapter", LoadedAdapter)
        config = a.config
        if config.is_faceid:
            raise AdapterMismatchError(
                f"{a.name} is a FaceID adapter ({config.description}): it takes a face embedding, not CLIP image "
                "features. Use the Encode Face (InsightFace) node with it."
            )
        check_images(image, "image")
        if crop not in CROP_MODES:
            raise IPAdapterError(f"unknown crop mode {crop!r}; use one of {', '.join(CROP_MODES)}.")
        if combine not in COMBINE_MODES:
            raise IPAdapterError(f"unknown combine mode {combine!r}; use one of {', '.join(COMBINE_MODES)}.")
        weights = parse_reference_weights(reference_weights, image.shape[0])
        masks = None
        if mask is not None:
            masks = encoder_masks(mask, image.shape[0], tuple(image.shape[1:3]), crop, int(getattr(clip_vision, "image_size", 224)))
        total = image.shape[0] + (negative_image.shape[0] if isinstance(negative_image, torch.Tensor) else 1)
        progress = host.progress_bar(total)
        label = "the connected CLIP vision model"
        cond = features_for(config, _encode(clip_vision, image, crop, progress, masks), label)
        cond = weight_references(cond, weights)
        if negative_image is not None:
            check_images(negative_image, "negative_image")
            uncond = features_for(config, _encode(clip_vision, negative_image, crop, progress), label)
        else:
            uncond = unconditional_features(
                config, cond, encode_pixels=lambda px: host.encode_pixels(clip_vision, px),
                image_size=int(getattr(clip_vision, "image_size", 224)),
            )
            progress.update(1)
        host.check_interrupt()
        return (build_image_prompt(a.adapter, cond, uncond, combine=combine, encoder_name=config.encoder_name),)
