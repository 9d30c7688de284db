"""Square tiles of a reference image, for references of any shape (the widely used pack's tiling rule).

Tiled references ("tiled"): a near-square reference (height/width strictly between 0.75 and 1.33) is cut
to its centre square and resized to 2x2 tiles; any other is resized so that its short side is one tile
(256 px, the encoder resizes to 224) and cut into ceil(long / 256) tiles that overlap evenly, at most 4
(a longer reference keeps its centre 4 tiles). Each tile gets a mask: 1 on the part of the reference it
covers, 0 elsewhere. A reference smaller than one tile is upscaled by the same rule. The image is resized
with PIL's Lanczos filter on 8-bit values (truncated, as torchvision's ToPILImage makes them), the masks
with torch's antialiased bicubic (as torchvision's Resize does on tensors).

Enhanced references ("enhance"): the reference is also cut into an n x n grid; the grid's encodings are
merged back into one encoding of the reference's shape (patch tokens laid out as the image, average-pooled
to one tile's size; class tokens averaged) and added as a second reference (one image) or blended with the
whole-image encoding by `ratio` (several images).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .errors import IPAdapterError
from .preprocess import contrast_adaptive_sharpen

TILE = 256  # px; divides common latent sizes better than 224 (the encoder resizes each tile)
MAX_TILES = 4  # along the long side
MAX_ENHANCE_GRID = 16
MAX_ASPECT = 64  # a reference longer than 64 short sides would be resized to a huge strip first


def center_crop_box(h: int, w: int, ch: int, cw: int) -> tuple:
    """(top, left) of a centred ch x cw crop, rounded as torchvision's center_crop rounds (Python round)."""
    return int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))


@dataclass(frozen=True)
class TileLayout:
    """How a reference of source_hw becomes tiles: optional centre square, resize, optional centre crop,
    then tiles of `tile` px at `origins` (y, x) in the final hw."""

    source_hw: tuple
    square: Optional[int]
    resized_hw: tuple
    crop_hw: Optional[tuple]
    hw: tuple
    origins: tuple
    tile: int = TILE

    @property
    def count(self) -> int:
        return len(self.origins)


def tile_layout(height: int, width: int, tile: int = TILE) -> TileLayout:
    if height < 1 or width < 1:
        raise IPAdapterError(f"cannot tile a {height}x{width} reference; give an image of at least 1x1 pixel.")
    ratio = height / width
    if max(ratio, 1 / ratio) > MAX_ASPECT:
        raise IPAdapterError(
            f"the reference is {height}x{width} px, over {MAX_ASPECT} times longer than wide; crop it before tiling "
            f"(only the centre {MAX_TILES} tiles would be used anyway)."
        )
    square = None
    if 0.75 < ratio < 1.33:
        square = min(height, width)
        resized = (tile * 2, tile * 2)
    elif height < width:
        resized = (tile, int(tile * width / height))
    else:
        resized = (int(tile * height / width), tile)
    crop = None
    if ratio > MAX_TILES or ratio < 1 / MAX_TILES:
        crop = (tile, tile * MAX_TILES) if height < width else (tile * MAX_TILES, tile)
    hw = crop or resized
    tiles_y, tiles_x = math.ceil(hw[0] / tile), math.ceil(hw[1] / tile)
    # even overlap so that the first tile starts at 0 and the last one ends at the edge
    overlap_y = max(0, (tiles_y * tile - hw[0]) / (tiles_y - 1 if tiles_y > 1 else 1))
    overlap_x = max(0, (tiles_x * tile - hw[1]) / (tiles_x - 1 if tiles_x > 1 else 1))
    origins = tuple((int(y * (tile - overlap_y)), int(x * (tile - overlap_x))) for y in range(tiles_y) for x in range(tiles_x))
    return TileLayout((height, width), square, resized, crop, hw, origins, tile)


def _crop(x: torch.Tensor, hw: tuple) -> torch.Tensor:
    """Centre crop of the last two dims [..., H, W]; the crops used here never exceed the image."""
    top, left = center_crop_box(x.shape[-2], x.shape[-1], hw[0], hw[1])
    return x[..., top:top + hw[0], left:left + hw[1]]


def tile_images(images: torch.Tensor, layout: TileLayout, sharpening: float = 0.0) -> torch.Tensor:
    """IMAGE [B, H, W, C] (0..1) -> tiles [count, B, tile, tile, C] float32 (values k / 255; sharpened where
    sharpening > 0: the resized image, before it is cut, as the widely used pack sharpens it)."""
    if tuple(images.shape[1:3]) != tuple(layout.source_hw):
        raise IPAdapterError(f"images of {tuple(images.shape[1:3])} px do not fit a layout made for {layout.source_hw}.")
    x = images.permute(0, 3, 1, 2)
    if layout.square is not None:
        x = _crop(x, (layout.square, layout.square))
    from PIL import Image  # the pack resizes with PIL's Lanczos: the same library gives the same pixels

    h, w = layout.resized_hw
    out = []
    for img in x:
        u8 = img.float().mul(255).byte().permute(1, 2, 0).cpu().numpy()  # truncation, as ToPILImage
        if u8.shape[2] == 1:
            u8 = u8[:, :, 0]
        resized = np.asarray(Image.fromarray(u8).resize((w, h), resample=Image.Resampling.LANCZOS))
        t = torch.from_numpy(resized.copy())
        t = t[:, :, None] if t.ndim == 2 else t
        out.append(t.permute(2, 0, 1).float().div(255))
    x = torch.stack(out).to(images.device)
    if layout.crop_hw is not None:
        x = _crop(x, layout.crop_hw)
    if sharpening > 0:
        x = contrast_adaptive_sharpen(x, sharpening)
    x = x.permute(0, 2, 3, 1)
    t = layout.tile
    return torch.stack([x[:, y:y + t, xo:xo + t, :] for y, xo in layout.origins])


def _bicubic(m: torch.Tensor, hw: tuple) -> torch.Tensor:
    return F.interpolate(m, size=tuple(hw), mode="bicubic", align_corners=False, antialias=True)


def tile_masks(layout: TileLayout, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-tile masks [count, M, H, W] in the tiled reference's frame (H, W = layout.hw): a tile's mask is
    `mask` (default all ones; [M, h, w], stretched to the reference) on the tile's square, 0 elsewhere."""
    if mask is None:
        mask = torch.ones(1, *layout.source_hw)
    if mask.ndim == 2:
        mask = mask[None]
    m = _bicubic(mask.float()[:, None], layout.source_hw)
    if layout.square is not None:
        m = _crop(m, (layout.square, layout.square))
    m = _bicubic(m, layout.resized_hw)
    if layout.crop_hw is not None:
        m = _crop(m, layout.crop_hw)
    m = m[:, 0]
    t = layout.tile
    masks = []
    for y, x in layout.origins:
        one = torch.zeros_like(m)
        one[:, y:y + t, x:x + t] = m[:, y:y + t, x:x + t]
        masks.append(one)
    return torch.stack(masks)


# ---------------------------------------------------------------- enhance

def grid_tiles(images: torch.Tensor, n: int) -> torch.Tensor:
    """IMAGE [B, H, W, C] -> [B, n*n, H//n, W//n, C], row by row (the remainder pixels are dropped)."""
    check_grid(n, images.shape[1], images.shape[2])
    h, w = images.shape[1] // n, images.shape[2] // n
    return torch.stack([
        torch.stack([images[b, i * h:(i + 1) * h, j * w:(j + 1) * w] for i in range(n) for j in range(n)])
        for b in range(images.shape[0])
    ])


def check_grid(n: int, height: int, width: int) -> None:
    if not isinstance(n, int) or not 1 <= n <= MAX_ENHANCE_GRID:
        raise IPAdapterError(f"enhance_tiles must be a whole number 1..{MAX_ENHANCE_GRID}, got {n!r}.")
    if height < n or width < n:
        raise IPAdapterError(f"a {height}x{width} reference cannot be cut into {n}x{n} tiles; lower enhance_tiles.")


def _pool_grid(grid: torch.Tensor, n: int, side: int) -> torch.Tensor:
    """[n*n, side, side, C] tiles (row by row) -> their mosaic [n*side, n*side, C] pooled to [side, side, C]."""
    c = grid.shape[-1]
    mosaic = grid.reshape(n, n, side, side, c).permute(0, 2, 1, 3, 4).reshape(n * side, n * side, c)
    # channels-last view of the [1, H, W, C] mosaic: the pooling kernel sums in this layout's order, which the
    # pack's equal-by-value result shares bit for bit (a [C, H, W]-strided view rounds differently)
    return F.adaptive_avg_pool2d(mosaic.unsqueeze(0).permute(0, 3, 1, 2), (side, side))[0].permute(1, 2, 0)


def merge_grid_embeds(embeds: torch.Tensor, n: int) -> torch.Tensor:
    """image_embeds of B images' n*n tiles [B*n*n, E] -> [B, E]: each E-vector read as a sqrt(E) square
    (the pack's rule), laid out as the tiles, pooled back."""
    side = math.isqrt(embeds.shape[-1])
    if side * side != embeds.shape[-1]:
        raise IPAdapterError(
            f"enhance tiles needs a square image embedding width; this encoder gives {embeds.shape[-1]}. "
            "Use enhance_tiles 1 with this CLIP vision model (or a plus adapter)."
        )
    out = [_pool_grid(chunk.reshape(n * n, side, side, 1), n, side).reshape(1, -1) for chunk in embeds.split(n * n)]
    return torch.cat(out)


def merge_grid_hidden(hidden: torch.Tensor, n: int) -> torch.Tensor:
    """penultimate hidden states of B images' n*n tiles [B*n*n, T, C] -> [B, T, C]: patch tokens laid out as
    the tiles and pooled back to P, class tokens averaged. T = 1 + P for CLIP (a class token first), P for
    SigLIP (patches only): P is a square, 1 + P never is."""
    tokens = hidden.shape[1]
    has_cls = math.isqrt(tokens) ** 2 != tokens
    side = math.isqrt(tokens - has_cls)
    out = []
    for chunk in hidden.split(n * n):
        patches = _pool_grid(chunk[:, int(has_cls):, :].reshape(n * n, side, side, -1), n, side).reshape(1, side * side, -1)
        if has_cls:
            patches = torch.cat([chunk[:, 0, :].mean(dim=0, keepdim=True)[None], patches], dim=1)
        out.append(patches)
    return torch.cat(out)


def enhance(whole: torch.Tensor, merged: torch.Tensor, ratio: float) -> torch.Tensor:
    """One image: [whole * ratio, merged] (two references); several: whole * ratio + merged * (1 - ratio)."""
    if whole.shape[0] > 1:
        return whole * ratio + merged * (1 - ratio)
    return torch.cat([whole * ratio, merged])


def region_mask(region: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A tile's region [H, W] limited by an attention mask [M, h, w] (stretched bilinearly to H x W): [M, H, W].

    (The widely used pack takes that mask before tiling; here it comes at apply time, over the whole image.)
    """
    region = region.float()
    if mask is None:
        return region[None]
    m = F.interpolate(mask.float()[:, None], size=tuple(region.shape), mode="bilinear", align_corners=False)[:, 0]
    return m * region[None]
