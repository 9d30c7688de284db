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
from typing import Optional

import torch

from .errors import IPAdapterError, check_choice

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


def _pil_coefficients(in_size: int, out_size: int, device, first: int = 0, count: Optional[int] = None):
    """PIL's integer bicubic coefficients (precompute_coeffs + normalize_coeffs_8bpc) for outputs
    first..first+count-1 of an in_size -> out_size resize, as (taps, weights, lo, hi): output i reads input
    lo + taps[i, k] with weight weights[i, k] ([count, ksize] each; padding taps have weight 0), and lo..hi
    spans every input these outputs read. Each output's coefficients depend only on its own position, so a
    slice of the outputs is exactly that slice of the full resize, at a cost bounded by the slice."""
    count = out_size - first if count is None else count
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = (torch.arange(first, first + count, dtype=torch.float64) + 0.5) * scale
    # C's (int) cast truncates towards zero; negatives are clamped to 0 right after, so trunc == PIL here.
    xmin = torch.trunc(center - support + 0.5).clamp(min=0)
    xmax = torch.trunc(center + support + 0.5).clamp(max=in_size)
    lo, hi = int(xmin.min()), int(xmax.max())
    taps = xmin[:, None] + torch.arange(ksize, dtype=torch.float64)[None]
    valid = taps < xmax[:, None]
    w = _bicubic((taps - center[:, None] + 0.5) / filterscale) * valid
    total = w.sum(dim=1, keepdim=True)
    w = torch.where(total != 0, w / torch.where(total != 0, total, torch.ones_like(total)), w)
    scaled = w * float(1 << _PRECISION_BITS)
    # C's (int)(v +- 0.5): round half away from zero.
    scaled = torch.where(scaled < 0, torch.ceil(scaled - 0.5), torch.floor(scaled + 0.5))
    # Padding taps (weight 0) may point past the input: any in-range index gives 0 * pixel = 0.
    index = (taps - lo).clamp(max=hi - lo - 1).long()
    return index.to(device), scaled.to(device), lo, hi


def _round_pass(acc: torch.Tensor) -> torch.Tensor:
    # PIL adds 2**(bits-1) then shifts right: floor division by 2**bits, clipped to 8 bits.
    return torch.floor((acc + float(1 << (_PRECISION_BITS - 1))) / float(1 << _PRECISION_BITS)).clamp_(0, 255)


def _dense(index: torch.Tensor, weights: torch.Tensor, width: int) -> torch.Tensor:
    """[count, width] coefficient matrix (padding taps add 0). Integer sums below 2**53 are exact in float64,
    so a matmul with it equals PIL's int32 accumulation."""
    return torch.zeros(index.shape[0], width, dtype=torch.float64, device=index.device).scatter_add_(1, index, weights)


_CHUNK_ELEMENTS = 1 << 20  # input values per step of the horizontal pass (8 MB of float64 per temporary)


def _resize_region(image: torch.Tensor, to_8bit, height: int, width: int, rows: tuple, cols: tuple) -> torch.Tensor:
    """Rows rows[0]..rows[0]+rows[1]-1 and columns cols[0].. of PIL's `resize((width, height), BICUBIC)`.

    image: [B, H, W, C] (any dtype, any size); to_8bit maps a slice of it to float64 integers 0..255.
    Returns [B, C, rows[1], cols[1]] float64. Horizontal pass then vertical, each rounded to 8 bits, as PIL does.
    Only the input rows and columns the requested outputs read are touched, a chunk of rows at a time, and the
    vertical pass accumulates per chunk (its sums are integers below 2**53, so any order is exact). Memory:
    the coefficient matrices (outputs x inputs read) and one chunk, whatever the image's size or aspect.
    """
    in_h, in_w = image.shape[1], image.shape[2]
    device = image.device
    if in_w != width:  # PIL skips a pass whose size does not change
        index, weights, x0, x1 = _pil_coefficients(in_w, width, device, *cols)
        hcoeffs = _dense(index, weights, x1 - x0)
    else:
        hcoeffs, x0, x1 = None, cols[0], cols[0] + cols[1]
    if in_h != height:
        index, weights, y0, y1 = _pil_coefficients(in_h, height, device, *rows)
        vcoeffs = _dense(index, weights, y1 - y0)
    else:
        vcoeffs, y0, y1 = None, rows[0], rows[0] + rows[1]
    step = max(1, _CHUNK_ELEMENTS // max(1, image.shape[0] * (x1 - x0) * image.shape[3]))
    parts, acc = [], None
    for r in range(y0, y1, step):
        chunk = to_8bit(image[:, r : min(r + step, y1), x0:x1]).permute(0, 3, 1, 2)  # [B, C, rows, cols]
        if hcoeffs is not None:
            chunk = _round_pass(chunk @ hcoeffs.T)
        if vcoeffs is None:
            parts.append(chunk)
        else:
            part = chunk.transpose(-1, -2) @ vcoeffs[:, r - y0 : r - y0 + chunk.shape[2]].T  # [B, C, cols, out rows]
            acc = part if acc is None else acc.add_(part)
    if vcoeffs is None:
        return torch.cat(parts, dim=2)
    return _round_pass(acc).transpose(-1, -2)


def pil_bicubic_resize(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """PIL `Image.resize((width, height), BICUBIC)` on 8-bit values: pixels [B, C, H, W] float64 holding integers 0..255."""
    return _resize_region(pixels.permute(0, 2, 3, 1), lambda x: x.to(torch.float64), height, width, (0, height), (0, width))


MAX_IMAGE_SIDE = 16384  # pixels per side (ComfyUI's own MAX_RESOLUTION); memory stays bounded below it
MAX_SIZE = 2048  # the encoder's input side (224 for ViT-H/14 and ViT-bigG/14, 336 for ViT-L/14-336)


def _check_images(images) -> torch.Tensor:
    """A validated [B, H, W, 3] view of the input (nothing copied: the 8-bit conversion happens per chunk)."""
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
    if max(h, w) > MAX_IMAGE_SIDE:
        raise IPAdapterError(
            f"the reference image is {w}x{h} pixels (width x height); the largest side accepted is {MAX_IMAGE_SIDE} pixels. "
            "Downscale it first: the encoder sees it at 224 pixels anyway."
        )
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
        return images
    if not images.is_floating_point() or images.is_complex():
        raise IPAdapterError(f"preprocess_images expects float images with values 0..1 (or uint8 0..255), got dtype {images.dtype}.")
    flat = images.reshape(-1) if images.is_contiguous() else None
    chunks = (flat[i : i + _CHUNK_ELEMENTS] for i in range(0, flat.numel(), _CHUNK_ELEMENTS)) if flat is not None else (
        img for img in images)
    if any(bool(torch.isnan(chunk).any()) for chunk in chunks):
        raise IPAdapterError("the reference image contains NaN values; check what produced it (values must be 0..1).")
    return images


def _to_8bit(x: torch.Tensor) -> torch.Tensor:
    """A slice of the image as float64 integers 0..255, as CLIPImageProcessor (PIL) and ComfyUI's clip_preprocess
    see it: 0..1 floats rounded to 8 bits, out-of-range values clipped; uint8 as it is."""
    if x.dtype == torch.uint8:
        return x.to(torch.float64)
    return torch.round(x.to(torch.float64) * 255.0).clamp_(0, 255)


def target_size(h: int, w: int, size: int, mode: str) -> tuple[int, int]:
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
    The result is on the input's device (computed on the CPU for devices without float64). Images up to
    MAX_IMAGE_SIDE pixels per side; the memory used beyond the input is bounded (tens of MB), whatever the
    size or aspect: only the pixels the crop keeps are computed, a chunk of rows at a time.
    """
    check_choice(mode, "crop mode", MODES)
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_SIZE:
        raise IPAdapterError(f"size must be a positive number of pixels, at most {MAX_SIZE} (224 for ViT-H/14 and ViT-bigG/14), got {size!r}.")
    images = _check_images(images)
    out_device = images.device
    if images.device.type not in ("cpu", "cuda"):
        images = images.cpu()  # e.g. MPS has no float64, and exact integer sums need it
    _, h, w, _ = images.shape
    th, tw = target_size(h, w, size, mode)
    if mode == "center":
        # transformers center_crop: top/left offsets floor((resized - crop) / 2); only that window is computed.
        rows, cols = ((th - size) // 2, size), ((tw - size) // 2, size)
    else:
        rows, cols = (0, th), (0, tw)
    pixels = _resize_region(images, _to_8bit, th, tw, rows, cols)

    # Same arithmetic as transformers: x * (1/255) in float64, then float32 (x - mean) / std.
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    out = ((pixels * (1.0 / 255.0)).to(torch.float32) - mean) / std

    if mode == "pad":
        # Normalised mean colour is 0, so zero padding = padding with the CLIP mean colour.
        pad_h, pad_w = size - th, size - tw
        out = torch.nn.functional.pad(out, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    return out.contiguous().to(out_device)


def renormalize(pixels: torch.Tensor, mean=None, std=None) -> torch.Tensor:
    """CLIP-normalised pixels re-normalised for an encoder with another mean / std (SigLIP: 0.5, 0.5); the
    same pixels when mean / std are CLIP's or not given."""
    if mean is None or std is None or (tuple(mean) == CLIP_MEAN and tuple(std) == CLIP_STD):
        return pixels
    clip_mean, clip_std, new_mean, new_std = (torch.tensor(v, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
                                              for v in (CLIP_MEAN, CLIP_STD, mean, std))
    return (pixels * clip_std + clip_mean - new_mean) / new_std


def contrast_adaptive_sharpen(images: torch.Tensor, amount: float) -> torch.Tensor:
    """AMD FidelityFX contrast-adaptive sharpening (CAS) of 0..1 images (N, C, H, W), as the widely used pack's
    `sharpening` applies it: zeros outside the image; per pixel, the min and max of the plus-shaped neighbourhood
    plus those of the four diagonals give an amplitude sqrt(min(mn, 2 - mx) / mx); the four edge neighbours are
    weighted w = -amp * (1/8 + amount * (1/5 - 1/8)) and the result (w * (n + s + e + w') + centre) / (1 + 4 w),
    non-finite values set to 0 (black areas), clamped to 0..1. amount 0 still sharpens a little (CAS's floor);
    callers skip it at 0 as the pack does."""
    if not 0.0 <= float(amount) <= 1.0:
        raise IPAdapterError(f"sharpening amount {amount!r} is outside 0..1.")
    x = torch.nn.functional.pad(images, (1, 1, 1, 1))
    h, w = images.shape[-2:]
    at = lambda dy, dx: x[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]  # noqa: E731  (the neighbour at an offset)
    centre, up, down, left, right = at(0, 0), at(-1, 0), at(1, 0), at(0, -1), at(0, 1)
    plus = torch.stack((up, left, centre, right, down))
    corners = torch.stack((at(-1, -1), at(-1, 1), at(1, -1), at(1, 1)))
    mx = plus.amax(0) + corners.amax(0)
    mn = plus.amin(0) + corners.amin(0)
    # reciprocals, in the pack's order: its noise node seeds from the image's sum, so results must match bit for bit
    amp = torch.sqrt(torch.reciprocal(mx) * torch.minimum(mn, 2 - mx))
    weight = -amp * (float(amount) * (1 / 5 - 1 / 8) + 1 / 8)
    out = ((up + left + right + down) * weight + centre) * torch.reciprocal(1 + 4 * weight)
    return torch.nan_to_num(out).clamp(0, 1)


__all__ = ["CLIP_MEAN", "CLIP_STD", "contrast_adaptive_sharpen", "MAX_IMAGE_SIDE", "MODES", "preprocess_images", "pil_bicubic_resize", "renormalize"]
