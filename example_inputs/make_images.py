"""Draws the reference images the example workflows load, besides ComfyUI's own input/example.png.

Flat shapes drawn with Pillow from fixed coordinates (no randomness, no outside material), so they are the
project's own and rebuild identically: `python example_inputs/make_images.py` rewrites the PNGs next to this
file. The pack copies them into ComfyUI's input folder at its first start (nodes/host.py), never over a file
of the same name.
"""
from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 512


def style_reference() -> Image.Image:
    """A style to copy: warm diagonal bands with dots."""
    im = Image.new("RGB", (SIZE, SIZE), (38, 20, 60))
    d = ImageDraw.Draw(im)
    colours = [(240, 120, 40), (250, 200, 60), (200, 50, 90), (120, 40, 140)]
    for i in range(-SIZE, SIZE * 2, 48):
        d.polygon([(i, 0), (i + 24, 0), (i + 24 - SIZE, SIZE), (i - SIZE, SIZE)], fill=colours[(i // 48) % 4])
    for x in range(32, SIZE, 96):
        for y in range(32, SIZE, 96):
            d.ellipse([x - 14, y - 14, x + 14, y + 14], fill=(250, 240, 220))
    return im


def composition_reference() -> Image.Image:
    """A layout to follow: horizon, a tall block on the left, a sun on the right."""
    im = Image.new("RGB", (SIZE, SIZE), (150, 190, 230))
    d = ImageDraw.Draw(im)
    d.rectangle([0, 340, SIZE, SIZE], fill=(90, 130, 70))
    d.rectangle([60, 120, 200, 380], fill=(70, 70, 80))
    d.ellipse([340, 70, 440, 170], fill=(250, 220, 90))
    return im


def left_reference() -> Image.Image:
    """Cool colours: waves of blue and teal."""
    im = Image.new("RGB", (SIZE, SIZE), (20, 60, 120))
    d = ImageDraw.Draw(im)
    for k, y in enumerate(range(0, SIZE, 64)):
        d.ellipse([-64, y - 24, SIZE + 64, y + 40], fill=(40, 150, 170) if k % 2 else (60, 110, 200))
    return im


def right_reference() -> Image.Image:
    """Warm colours: concentric red and orange rings."""
    im = Image.new("RGB", (SIZE, SIZE), (250, 230, 200))
    d = ImageDraw.Draw(im)
    for k, r in enumerate(range(240, 0, -40)):
        c = SIZE // 2
        d.ellipse([c - r, c - r, c + r, c + r], fill=(220, 60, 40) if k % 2 == 0 else (245, 150, 50))
    return im


def half_mask(side: str):
    """Load Image Mask reads the red channel: white on one half, black on the other."""
    def draw() -> Image.Image:
        im = Image.new("RGB", (SIZE, SIZE), (0, 0, 0))
        x0 = 0 if side == "left" else SIZE // 2
        ImageDraw.Draw(im).rectangle([x0, 0, x0 + SIZE // 2 - 1, SIZE - 1], fill=(255, 255, 255))
        return im
    return draw


IMAGES = {
    "style_reference.png": style_reference,
    "composition_reference.png": composition_reference,
    "left_reference.png": left_reference,
    "right_reference.png": right_reference,
    "mask_left.png": half_mask("left"),
    "mask_right.png": half_mask("right"),
}


def main(folder: Path = Path(__file__).resolve().parent) -> int:
    for name, draw in IMAGES.items():
        draw().save(folder / name, optimize=True)
        print(folder / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
