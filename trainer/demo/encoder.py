"""The demo's image encoder: an OpenCLIP ViT (open_clip's own VisionTransformer class, as ViT-H/14 is)
at CPU size, used through ip_core's OpenCLIPEncoder exactly like the real one.

A randomly initialised tower is frozen as is by default. `pretrain_encoder` optionally gives it a short
supervised warm-up (colour and shape heads on generator ground truth), a stand-in for CLIP's pretraining
when random features are too poor; the demo reports which one it used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ip_core.encoders import OpenCLIPEncoder, build_openclip_visual
from ip_core.preprocess import preprocess_images

from .shapes import COLOUR_NAMES, SHAPES


def encoder_arch(image_size: int, width: int = 64, layers: int = 2, patch_size: int = 4, embed_dim: int = 64) -> dict:
    """An open_clip model config (as in open_clip/model_configs/*.json) for a tiny ViT tower."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "layers": layers, "width": width, "head_width": 16, "mlp_ratio": 2.0, "patch_size": patch_size},
    }


def build_encoder(arch: dict, seed: int) -> OpenCLIPEncoder:
    torch.manual_seed(seed)
    visual = build_openclip_visual(arch)
    return OpenCLIPEncoder.from_model(visual, name="tiny ViT (demo)")


def clip_pixels(images: torch.Tensor, size: int) -> torch.Tensor:
    """[-1, 1] [N, 3, S, S] -> CLIP-normalised pixel values, through ip_core's preprocessing (what users' images get)."""
    hwc = ((images.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)
    return preprocess_images(hwc, mode="center", size=size)


@torch.no_grad()
def encode_images(encoder: OpenCLIPEncoder, images: torch.Tensor, batch: int = 512):
    """-> image_embeds [N, E] (the base adapter's input)."""
    out = []
    for i in range(0, len(images), batch):
        out.append(encoder.encode(clip_pixels(images[i : i + batch], encoder.image_size)).image_embeds)
    return torch.cat(out)


def pretrain_encoder(encoder: OpenCLIPEncoder, data, steps: int, seed: int, batch: int = 128, lr: float = 2e-3, progress=None) -> float:
    """Supervised warm-up of the tower (linear colour + shape heads on image_embeds); -> final loss."""
    visual = encoder.module
    visual.train().requires_grad_(True)
    e = encoder.projection_dim
    heads = nn.ModuleDict({"colour": nn.Linear(e, len(COLOUR_NAMES)), "shape": nn.Linear(e, len(SHAPES))})
    opt = torch.optim.AdamW(list(visual.parameters()) + list(heads.parameters()), lr=lr, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(seed)
    pixels = clip_pixels(data.images, encoder.image_size)
    loss = torch.zeros(())
    for _ in range(steps):
        idx = torch.randint(0, len(data), (batch,), generator=gen)
        emb = encoder.encode(pixels[idx]).image_embeds
        loss = F.cross_entropy(heads["colour"](emb), data.colour[idx]) + F.cross_entropy(heads["shape"](emb), data.shape[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress is not None:
            progress.update(1)
    visual.eval().requires_grad_(False)
    return loss.item()


def linear_probe(train_x, train_y, test_x, test_y, classes: int, steps: int = 300) -> float:
    """Accuracy of a linear classifier on frozen features: how much an attribute is in the embedding."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    clf = nn.Linear(train_x.shape[1], classes)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-2)
    xs = (train_x - mean) / std
    for _ in range(steps):
        loss = F.cross_entropy(clf(xs), train_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (clf((test_x - mean) / std).argmax(1) == test_y).float().mean().item()
