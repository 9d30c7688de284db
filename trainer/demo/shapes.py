"""The demo's world: coloured shapes on grey backgrounds, generated in code, seeded and deterministic.

Every image knows its attributes (colour, shape, position, size), so the demo's judges can be checked
against ground truth and captions can name any subset of them ("a red circle", "a circle", "a red shape").
Images are rendered 4x supersampled and box-filtered down, so edges are antialiased like real photos'.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

COLOURS = {
    "red": (0.90, 0.12, 0.12),
    "green": (0.12, 0.75, 0.18),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.10),
    "magenta": (0.85, 0.15, 0.85),
}
COLOUR_NAMES = tuple(COLOURS)
SHAPES = ("circle", "square", "triangle")
PALETTE = np.array([COLOURS[c] for c in COLOUR_NAMES], dtype=np.float32)

# Caption kinds for base-model training: the full caption most of the time, one attribute sometimes (so
# "a circle" means "a circle of any colour", which the text-compatibility test relies on), empty for CFG.
CAPTION_KINDS = ("full", "colour", "shape", "empty")

# The derived model's new style (the base never saw it): teal-tinted backgrounds instead of neutral grey ones.
# Captions stay as they are, as in a community fine-tune without a trigger word. The tint moves the grey
# background by TEAL_TINT, so teal_score = (G + B) / 2 - R of the background is 0.24 +- 0.06 on styled images
# and within +-0.08 on the base's (its per-channel jitter is +-0.04).
TEAL_TINT = np.array([-0.12, 0.12, 0.12], dtype=np.float32)
STYLES = ("plain", "teal")
CAPTION_PROBS = (0.6, 0.15, 0.15, 0.1)


@dataclass
class ShapeBatch:
    """images: [N, 3, S, S] float32 in [-1, 1]; colour / shape: int64 [N] indices into COLOUR_NAMES / SHAPES."""

    images: torch.Tensor
    colour: torch.Tensor
    shape: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, idx) -> "ShapeBatch":
        return ShapeBatch(self.images[idx], self.colour[idx], self.shape[idx])


def _masks(shape_idx, cx, cy, r, size: int, supersample: int = 4) -> np.ndarray:
    """Coverage [N, size, size] in 0..1 of each shape (pixel units; supersampled then averaged)."""
    n = len(shape_idx)
    s = size * supersample
    coords = (np.arange(s, dtype=np.float32) + 0.5) / supersample
    y, x = np.meshgrid(coords, coords, indexing="ij")
    x, y = x[None], y[None]
    cx, cy, r = cx[:, None, None], cy[:, None, None], r[:, None, None]
    circle = (x - cx) ** 2 + (y - cy) ** 2 <= r**2
    half = 0.9 * r  # a square a bit smaller than the circle's box, so areas are alike
    square = (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half)
    big = 1.3 * r  # upright triangle, circumradius 1.3 r
    triangle = (y >= cy - big) & (y <= cy + big / 2) & (np.abs(x - cx) <= (y - cy + big) / np.sqrt(3.0))
    sel = np.asarray(shape_idx)[:, None, None]
    m = np.where(sel == 0, circle, np.where(sel == 1, square, triangle)).astype(np.float32)
    return m.reshape(n, size, supersample, size, supersample).mean(axis=(2, 4))


def render(colour_rgb: np.ndarray, shape_idx, cx, cy, r, background: np.ndarray, size: int) -> np.ndarray:
    """-> float32 [N, size, size, 3] in 0..1. colour_rgb / background: [N, 3]."""
    m = _masks(np.asarray(shape_idx), np.asarray(cx, np.float32), np.asarray(cy, np.float32), np.asarray(r, np.float32), size)[..., None]
    img = m * colour_rgb[:, None, None, :] + (1 - m) * background[:, None, None, :]
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def sample_attributes(n: int, rng: np.random.Generator, size: int):
    colour = rng.integers(0, len(COLOUR_NAMES), n)
    shape = rng.integers(0, len(SHAPES), n)
    # modest position / size jitter: enough variety to make "copy the reference" the wrong answer,
    # little enough that a CPU-sized model learns the shapes in minutes
    cx = rng.uniform(0.42, 0.58, n) * size
    cy = rng.uniform(0.44, 0.58, n) * size
    r = rng.uniform(0.22, 0.28, n) * size
    grey = rng.uniform(0.15, 0.45, n)[:, None]
    background = np.clip(grey + rng.uniform(-0.04, 0.04, (n, 3)), 0, 1).astype(np.float32)
    return colour, shape, cx, cy, r, background


def make_shapes(n: int, seed: int, size: int = 16, colour_jitter: float = 0.05, style: str = "plain") -> ShapeBatch:
    """n images of palette-coloured shapes; the same (n, seed, size, style) always gives the same tensors.
    style "teal": the derived model's backgrounds (TEAL_TINT added; the same draws as "plain" otherwise)."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}: use one of {STYLES}")
    rng = np.random.default_rng(seed)
    colour, shape, cx, cy, r, background = sample_attributes(n, rng, size)
    if style == "teal":
        background = np.clip(background + TEAL_TINT, 0, 1).astype(np.float32)
    rgb = np.clip(PALETTE[colour] + rng.uniform(-colour_jitter, colour_jitter, (n, 3)), 0, 1).astype(np.float32)
    img = render(rgb, shape, cx, cy, r, background, size)
    images = torch.from_numpy(img).permute(0, 3, 1, 2).mul(2).sub(1).contiguous()
    return ShapeBatch(images, torch.from_numpy(colour).long(), torch.from_numpy(shape).long())


def make_judge_shapes(n: int, seed: int, size: int = 16) -> ShapeBatch:
    """Shapes in *any* colour on backgrounds of any tint (up to 0.2 per channel off grey: it covers the derived
    model's style) with pixel noise: training data for the shape judge, so it learns shape, not colour, and
    tolerates the imperfect pixels of generated images. colour is -1 (not a palette colour)."""
    rng = np.random.default_rng(seed)
    _, shape, cx, cy, r, background = sample_attributes(n, rng, size)
    background = np.clip(background + rng.uniform(-0.2, 0.2, (n, 3)), 0, 1).astype(np.float32)
    rgb = rng.uniform(0, 1, (n, 3)).astype(np.float32)
    # keep the shape visible: push colours that are too close to the background away from it
    d = rgb - background
    close = np.linalg.norm(d, axis=1) < 0.35
    rgb[close] = np.clip(background[close] + np.sign(d[close] + 1e-3) * 0.35, 0, 1)
    img = render(rgb, shape, cx, cy, r, background, size)
    img = np.clip(img + rng.normal(0, rng.uniform(0, 0.06, (n, 1, 1, 1)), img.shape), 0, 1).astype(np.float32)
    images = torch.from_numpy(img).permute(0, 3, 1, 2).mul(2).sub(1).contiguous()
    return ShapeBatch(images, torch.full((n,), -1, dtype=torch.long), torch.from_numpy(shape).long())


def caption(colour: int | None, shape: int | None) -> str:
    """"a red circle", "a red shape", "a circle", or "" (colour / shape None = not named)."""
    if colour is None and shape is None:
        return ""
    return f"a {COLOUR_NAMES[colour] + ' ' if colour is not None else ''}{SHAPES[shape] if shape is not None else 'shape'}"


def training_captions(colour: torch.Tensor, shape: torch.Tensor, generator: torch.Generator) -> list[str]:
    """One caption per image, naming a random subset of its attributes (CAPTION_PROBS)."""
    kinds = torch.multinomial(torch.tensor(CAPTION_PROBS), len(colour), replacement=True, generator=generator)
    out = []
    for c, s, k in zip(colour.tolist(), shape.tolist(), kinds.tolist()):
        kind = CAPTION_KINDS[k]
        out.append(caption(c if kind in ("full", "colour") else None, s if kind in ("full", "shape") else None))
    return out


def all_captions() -> list[str]:
    """Every caption the demo can produce (the text encoder's whole world)."""
    caps = [""]
    caps += [caption(c, s) for c in range(len(COLOUR_NAMES)) for s in range(len(SHAPES))]
    caps += [caption(c, None) for c in range(len(COLOUR_NAMES))]
    caps += [caption(None, s) for s in range(len(SHAPES))]
    return caps


def to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] [N, 3, S, S] -> uint8 [N, S, S, 3] (for PNGs)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
