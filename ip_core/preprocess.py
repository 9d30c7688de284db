"""Reference images -> CLIP pixel values, reproducing the official preprocessing bit for bit.

The official IP-Adapter code runs `CLIPImageProcessor()` (transformers' PIL implementation; in
transformers >= 5 it is called `CLIPImageProcessorPil`) on 8-bit PIL images: shortest side to 224 with
PIL's bicubic filter, centre crop 224, x/255, (x - mean) / std. The adapter weights were trained on
exactly that, so "center" mode reproduces it exactly instead of approximating it with a float resize:

- the 0..1 float image is rounded to 8 bits first (lossless for images loaded from 8-bit files, which is
  what ComfyUI's LoadImage gives, and what ComfyUI's own clip_preprocess also does);
- PIL's bicubic resize is rebuilt from its C source (libImaging/Resample.c): the same filter (a = -0.5,
  support widened by the downscale factor, i.e. antialiased), the same 22-bit fixed-point coefficients,
  horizontal pass then vertical pass, each rounded and clipped to 8 bits.
  The integer sums are exact in float64 (< 2**53), so a float64 matmul gives PIL's integers.

"pad" and "squash" use the same resize so that all modes agree on what one pixel means:
- "pad": the longer side is resized to `size` (aspect kept) and the rest is filled with the CLIP mean
  colour, which is exactly 0 after normalisation, i.e. "no information" for the encoder. Nothing of the
  image is cut away (a wide reference keeps its left and right edges).
- "squash": resized to size x size, aspect ratio ignored.
"""
from __future__ import annotations

import math

import torch

from .errors import IPAdapterError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MODES = ("center", "pad", "squash")

_PRECISION_BITS = 32 - 8 - 2  # PIL's fixed-point precision for 8-bit resampling (Resample.c)


def _bicubic(x: torch.Tensor) -> torch.Tensor:
    # PIL's bicubic kernel, a = -0.5 (Keys); torch's non-antialiased bicubic uses a = -0.75 instead.
    a = -0.5
    x = x.abs()
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def _pil_coefficients(in_size: int, out_size: int, device) -> torch.Tensor:
    """[out_size, in_size] matrix of PIL's integer bicubic coefficients (precompute_coeffs + normalize_coeffs_8bpc)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = (torch.arange(out_size, dtype=torch.float64) + 0.5) * scale
    # C's (int) cast truncates towards zero; negatives are clamped to 0 right after, so trunc == PIL here.
    xmin = torch.trunc(center - support + 0.5).clamp(min=0)
    xmax = torch.trunc(center + support + 0.5).clamp(max=in_size)
    taps = xmin[:, None] + torch.arange(ksize, dtype=torch.float64)[None]
    valid = taps < xmax[:, None]
    w = _bicubic((taps - center[:, None] + 0.5) / filterscale) * valid
    total = w.sum(dim=1, keepdim=True)
    w = torch.where(total != 0, w / torch.where(total != 0, total, torch.ones_like(total)), w)
    scaled = w * float(1 << _PRECISION_BITS)
    # C's (int)(v +- 0.5): round half away from zero.
    scaled = torch.where(scaled < 0, torch.ceil(scaled - 0.5), torch.floor(scaled + 0.5))
    matrix = torch.zeros(out_size, in_size + ksize, dtype=torch.float64)
    matrix.scatter_(1, taps.long(), scaled)
    return matrix[:, :in_size].to(device)


def _pil_pass(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    # x [..., n_in] of integers 0..255 (float64); PIL adds 2**(bits-1) then shifts right: floor division by 2**bits.
    acc = x @ coeffs.T + float(1 << (_PRECISION_BITS - 1))
    return torch.floor(acc / float(1 << _PRECISION_BITS)).clamp_(0, 255)


def pil_bicubic_resize(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """PIL `Image.resize((width, height), BICUBIC)` on 8-bit values: pixels [B, C, H, W] float64 holding integers 0..255."""
    if pixels.shape[-1] != width:  # PIL skips a pass whose size does not change
        pixels = _pil_pass(pixels, _pil_coefficients(pixels.shape[-1], width, pixels.device))
    if pixels.shape[-2] != height:
        coeffs = _pil_coefficients(pixels.shape[-2], height, pixels.device)
        pixels = _pil_pass(pixels.transpose(-1, -2), coeffs).transpose(-1, -2)
    return pixels


def _check_images(images) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise IPAdapterError(
            f"preprocess_images expects a torch tensor [batch, height, width, channels], got a {type(images).__name__}. "
            "Convert PIL images with torch.from_numpy(numpy.asarray(img)).float()[None] / 255."
        )
    if images.ndim == 3:
        images = images[None]  # a single image [H, W, C]
    if images.ndim != 4:
        raise IPAdapterError(
            f"preprocess_images expects images shaped [batch, height, width, channels], got shape {tuple(images.shape)}. "
            "Pass images channels last, values 0..1."
        )
    b, h, w, c = images.shape
    if b == 0:
        raise IPAdapterError("preprocess_images got an empty batch (0 images); give at least one reference image.")
    if h == 0 or w == 0:
        raise IPAdapterError(f"preprocess_images got images of size {h}x{w} pixels; a reference image needs at least 1x1 pixel.")
    if c == 1:
        images = images.expand(b, h, w, 3)
    elif c != 3:
        hint = (
            " It looks channels-first ([B, 3, H, W]): permute it with images.permute(0, 2, 3, 1)."
            if h == 3
            else " Drop or composite the alpha channel first."
            if c == 4
            else ""
        )
        raise IPAdapterError(
            f"preprocess_images expects RGB images [batch, height, width, 3] (channels last), got {c} channels in shape "
            f"{tuple(images.shape)}.{hint}"
        )
    if images.dtype == torch.uint8:
        return images.to(torch.float64)
    if not images.is_floating_point():
        raise IPAdapterError(f"preprocess_images expects float images with values 0..1 (or uint8 0..255), got dtype {images.dtype}.")
    if torch.isnan(images).any():
        raise IPAdapterError("the reference image contains NaN values; check what produced it (values must be 0..1).")
    # 8-bit first, as CLIPImageProcessor (PIL) and ComfyUI's clip_preprocess do; out-of-range values are clipped.
    return torch.round(images.to(torch.float64) * 255.0).clamp_(0, 255)


def _target_size(h: int, w: int, size: int, mode: str) -> tuple[int, int]:
    if mode == "squash":
        return size, size
    if mode == "center":
        # transformers get_resize_output_image_size(default_to_square=False): int() truncates the long side.
        if w <= h:
            return int(size * h / w), size
        return size, int(size * w / h)
    # pad: the long side becomes `size`; the short side is rounded, at least one pixel.
    if w >= h:
        return max(1, round(size * h / w)), size
    return size, max(1, round(size * w / h))


def preprocess_images(images, mode: str = "center", size: int = 224) -> torch.Tensor:
    """ComfyUI IMAGE [B, H, W, C] (float 0..1, C = 3 or 1) -> CLIP pixel values [B, 3, size, size] float32.

    mode "center" equals CLIPImageProcessor() (PIL) on the 8-bit image exactly (up to float32 rounding of the
    normalisation); "pad" keeps the whole image and fills with the mean colour; "squash" ignores the aspect.
    The result is on the input's device (computed on the CPU for devices without float64).
    """
    if mode not in MODES:
        raise IPAdapterError(f"unknown crop mode {mode!r}; use one of {', '.join(MODES)}.")
    if not isinstance(size, int) or size < 1:
        raise IPAdapterError(f"size must be a positive number of pixels (224 for ViT-H/14 and ViT-bigG/14), got {size!r}.")
    pixels = _check_images(images)
    out_device = pixels.device
    if pixels.device.type not in ("cpu", "cuda"):
        pixels = pixels.cpu()  # e.g. MPS has no float64, and exact integer sums need it
    pixels = pixels.permute(0, 3, 1, 2)
    _, _, h, w = pixels.shape
    th, tw = _target_size(h, w, size, mode)
    pixels = pil_bicubic_resize(pixels, th, tw)

    if mode == "center":
        # transformers center_crop: top/left offsets floor((resized - crop) / 2).
        top, left = (th - size) // 2, (tw - size) // 2
        pixels = pixels[:, :, top : top + size, left : left + size]

    # Same arithmetic as transformers: x * (1/255) in float64, then float32 (x - mean) / std.
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    out = ((pixels * (1.0 / 255.0)).to(torch.float32) - mean) / std

    if mode == "pad":
        # Normalised mean colour is 0, so zero padding = padding with the CLIP mean colour.
        pad_h, pad_w = size - th, size - tw
        out = torch.nn.functional.pad(out, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    return out.contiguous().to(out_device)


__all__ = ["CLIP_MEAN", "CLIP_STD", "MODES", "preprocess_images", "pil_bicubic_resize"]
