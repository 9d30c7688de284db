"""Encode Image Prompt: reference images -> the adapter's cond / uncond tokens (IPA_EMBEDS)."""
from __future__ import annotations

import torch

from . import host
from ..ip_core.embeds import COMBINE_MODES, build_image_prompt, features_for, unconditional_features
from ..ip_core.errors import IPAdapterError
from ..ip_core.preprocess import MODES as CROP_MODES
from ..ip_core.preprocess import preprocess_images
from .common import CATEGORY, LoadedAdapter, check_images, require

ENCODE_CHUNK = 16  # references per encoder call: bounds memory, gives the progress bar steps


def _preprocess(images, crop: str, size: int, legacy: bool):
    if legacy and crop != "pad":  # the widely used pack's preprocessing: the host's clip_preprocess
        return host.clip_preprocess(images, size, crop=crop == "center")
    return preprocess_images(images, mode=crop, size=size)


def _encode(clip_vision, images, crop: str, progress, legacy: bool = False):
    """IMAGE batch -> encoder output with image_embeds and penultimate_hidden_states (concatenated chunks)."""
    if not host.can_encode_pixels(clip_vision):
        raise IPAdapterError(
            f"clip_vision is a {type(clip_vision).__name__}, not ComfyUI's CLIP vision model; connect a Load CLIP Vision node."
        )
    size = int(getattr(clip_vision, "image_size", 224))
    embeds, hidden = [], []
    for start in range(0, images.shape[0], ENCODE_CHUNK):
        host.check_interrupt()
        pixels = _preprocess(images[start:start + ENCODE_CHUNK], crop, size, legacy)
        out = host.encode_pixels(clip_vision, pixels)
        embeds.append(out.image_embeds)
        hidden.append(out.penultimate_hidden_states)
        progress.update(min(ENCODE_CHUNK, images.shape[0] - start))
    return _Output(torch.cat(embeds), torch.cat(hidden))


class _Output:
    def __init__(self, image_embeds, penultimate_hidden_states):
        self.image_embeds = image_embeds
        self.penultimate_hidden_states = penultimate_hidden_states


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
                "legacy": ("BOOLEAN", {"default": False, "tooltip": "Reproduce ComfyUI_IPAdapter_plus: the host's clip_preprocess instead of the exact official preprocessing (crop center / squash), and for plus / full-face adapters a black image as the unconditional input instead of the official zero (normalised) image. Set by the workflow converter (python -m nodes.migrate --legacy)."}),
            },
        }

    def encode(self, ipadapter, clip_vision, image, crop="center", combine="concat", negative_image=None, legacy=False):
        a = require(ipadapter, "IPA_ADAPTER", "ipadapter", LoadedAdapter)
        config = a.config
        check_images(image, "image")
        if crop not in CROP_MODES:
            raise IPAdapterError(f"unknown crop mode {crop!r}; use one of {', '.join(CROP_MODES)}.")
        if combine not in COMBINE_MODES:
            raise IPAdapterError(f"unknown combine mode {combine!r}; use one of {', '.join(COMBINE_MODES)}.")
        total = image.shape[0] + (negative_image.shape[0] if isinstance(negative_image, torch.Tensor) else 1)
        progress = host.progress_bar(total)
        label = "the connected CLIP vision model"
        cond = features_for(config, _encode(clip_vision, image, crop, progress, legacy), label)
        if negative_image is not None:
            check_images(negative_image, "negative_image")
            uncond = features_for(config, _encode(clip_vision, negative_image, crop, progress, legacy), label)
        elif legacy and config.encoder_output != "image_embeds":
            # the widely used pack's "no image" for plus / full-face: a black picture through clip_preprocess
            size = int(getattr(clip_vision, "image_size", 224))
            black = torch.zeros(1, size, size, 3)
            uncond = features_for(config, host.encode_pixels(clip_vision, host.clip_preprocess(black, size)), label)
            uncond = uncond.expand(cond.shape[0], *uncond.shape[1:]).clone()
            progress.update(1)
        else:
            uncond = unconditional_features(
                config, cond, encode_pixels=lambda px: host.encode_pixels(clip_vision, px),
                image_size=int(getattr(clip_vision, "image_size", 224)),
            )
            progress.update(1)
        host.check_interrupt()
        return (build_image_prompt(a.adapter, cond, uncond, combine=combine, encoder_name=config.encoder_name),)
