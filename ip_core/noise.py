"""Negative images made of noise (fade, dissolve, gaussian, shuffle), as the widely used pack makes them.

Used as `negative_image` for an image prompt: guidance then pushes away from a noisy version of the
reference instead of from "no image". Every random draw comes from a seed; by default the seed is derived
from the image as the pack derives it, so the results equal the pack's bit for bit. The draws happen under
a forked RNG, so the process-wide torch RNG (the sampler's noise) is left as it was, unlike in the pack.
torchvision is imported here only (ComfyUI ships it).
"""
from __future__ import annotations

from typing import Optional

import torch

from .errors import IPAdapterError, check_choice

NOISE_TYPES = ("fade", "dissolve", "gaussian", "shuffle")
SIZE = 224  # the CLIP input size the pack prepares the image for
_SEED_MODULUS = 1000000007


def _prepare(image: Optional[torch.Tensor]) -> torch.Tensor:
    import torchvision.transforms.v2.functional as TF

    if image is None:
        return torch.zeros([1, SIZE, SIZE, 3])
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[0] == 0:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise IPAdapterError(f"image must be a non-empty IMAGE batch [batch, height, width, channels], got {shape}.")
    x = image.detach().cpu().float().permute(0, 3, 1, 2)
    side = min(x.shape[-2:])
    x = TF.center_crop(x, [side, side])
    x = TF.resize(x, [SIZE, SIZE], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    return x.permute(0, 2, 3, 1)


def image_seed(image: torch.Tensor) -> int:
    """The pack's seed: the image's pixel sum, truncated, modulo a prime (the same image, the same noise)."""
    return int(torch.sum(image).item()) % _SEED_MODULUS


def _fade(image, strength):
    return image * (1 - strength) + torch.rand_like(image) * strength


def _dissolve(image, strength):
    keep = (torch.rand_like(image) < strength).float()
    return image * (1 - keep) + torch.rand_like(image) * keep


def _gaussian(image, strength):
    return image + torch.randn_like(image) * strength


def _shuffle(image, strength):
    import torchvision.transforms.v2 as T

    # An elastic warp (less smoothed at high strength), both flips, then multiplicative gaussian noise. The
    # flips are random transforms with p=1: they still draw from the RNG, which the noise after them depends on.
    warp = T.Compose([T.ElasticTransform(alpha=75.0, sigma=(1 - strength) * 3.5),
                      T.RandomVerticalFlip(p=1.0), T.RandomHorizontalFlip(p=1.0)])
    image = warp(image.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    noise = torch.randn_like(image) * (strength * 0.75)
    return image * (1 - noise) + noise


MAX_BLUR = 32  # the widely used pack's maximum; a kernel must also stay below the 224 px image's size
_MAKERS = {"fade": _fade, "dissolve": _dissolve, "gaussian": _gaussian, "shuffle": _shuffle}


def make_noise(kind: str, strength: float, blur: int, image: Optional[torch.Tensor] = None,
               seed: Optional[int] = None) -> torch.Tensor:
    """A [B, 224, 224, 3] noise image (B = the image's batch, or 1): `image` (centre-cropped, resized to 224)
    or black, disturbed by `kind` at `strength` (0..1), clamped to 0..1, then Gaussian-blurred with an odd
    kernel of `blur` pixels (0 = none). seed None: derived from the prepared image (the pack's choice)."""
    import torchvision.transforms.v2.functional as TF

    check_choice(kind, "noise type", NOISE_TYPES)
    if not 0.0 <= float(strength) <= 1.0:
        raise IPAdapterError(f"strength is {strength}, outside 0..1; set it within that range.")
    if not 0 <= int(blur) <= MAX_BLUR:
        raise IPAdapterError(f"blur is {blur}; give 0 (no blur) or a kernel size in pixels up to {MAX_BLUR}.")
    prepared = _prepare(image)
    seed = image_seed(prepared) if seed is None else int(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        noise = _MAKERS[kind](prepared, float(strength))
    noise = noise.clamp(0, 1)
    if blur > 0:
        kernel = int(blur) | 1  # an even size becomes the next odd one
        noise = TF.gaussian_blur(noise.permute(0, 3, 1, 2), kernel).permute(0, 2, 3, 1)
    return noise
