"""A mask over the CLIP input: which parts of a reference image the encoder sees (the rest becomes 0 in
normalised pixel space, the CLIP mean colour, i.e. "no information").

The mask follows the image's geometry for each crop mode. For "center" it is centre-cropped to a square and
resized with antialiased bicubic, as the widely used pack's encoder mask is (torchvision CenterCrop + Resize
on a float tensor, which is torch's antialiased bicubic interpolation).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import IPAdapterError, check_choice
from .preprocess import MODES, target_size


def _resize(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if tuple(mask.shape[-2:]) == (h, w):
        return mask
    return F.interpolate(mask[:, None], size=(h, w), mode="bicubic", align_corners=False, antialias=True)[:, 0]


def _center_square(mask: torch.Tensor) -> torch.Tensor:
    h, w = mask.shape[-2:]
    s = min(h, w)
    # torchvision center_crop offsets: int(round((size - crop) / 2)) (Python rounds halves to even).
    top, left = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))
    return mask[:, top:top + s, left:left + s]


def encoder_masks(mask, references: int, image_hw: tuple, mode: str = "center", size: int = 224) -> torch.Tensor:
    """MASK [H, W] or [M, H, W] (M = 1, or one per reference) -> [M, size, size] to multiply the pixel values by."""
    check_choice(mode, "crop mode", MODES)
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise IPAdapterError(f"mask must be a MASK [height, width] or [count, height, width], got {shape}.")
    mask = (mask if mask.ndim == 3 else mask[None]).float()
    if mask.shape[0] not in (1, references) or mask.numel() == 0:
        raise IPAdapterError(
            f"mask holds {mask.shape[0]} masks of {tuple(mask.shape[1:])} for {references} reference images; give one mask "
            f"(used for every reference) or exactly {references}, one per reference.")
    if not torch.isfinite(mask).all():
        raise IPAdapterError("mask contains NaN or infinite values; check what made it (values 0..1).")
    if mode == "center":
        if tuple(mask.shape[-2:]) == (size, size):
            return mask
        return _resize(_center_square(mask), size, size)
    if mode == "squash":
        return _resize(mask, size, size)
    # pad: the mask follows the image (long side to `size`, centred); the padding is 0 in the pixels anyway.
    h, w = image_hw
    th, tw = target_size(h, w, size, mode)
    m = _resize(mask, th, tw)
    pad_h, pad_w = size - th, size - tw
    return F.pad(m, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


def apply_encoder_masks(pixel_values: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """pixel_values [B, 3, S, S] * masks [1 or B, S, S] (normalised pixels: 0 is the mean colour)."""
    return pixel_values * masks.to(pixel_values.device, pixel_values.dtype)[:, None]
