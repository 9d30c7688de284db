"""Deterministic judges of generated images: colour from pixel statistics, shape from a small CNN.

The colour judge needs no training: it estimates the background from the border pixels, takes the pixels
that differ clearly from it as the object, and names the palette colour nearest to their mean. The shape
judge is a small CNN trained (seeded) on rendered shapes of random colours with pixel noise, so it reads
shape rather than colour; its accuracy on held-out palette images is reported with the results.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .shapes import PALETTE, SHAPES, make_judge_shapes, make_shapes

NONE = -1  # "no object found"


def judge_colour(images: torch.Tensor, threshold: float = 0.2, min_pixels: int = 3) -> torch.Tensor:
    """images [N, 3, S, S] in [-1, 1] -> palette index per image (NONE when no object stands out)."""
    x = ((images.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)  # [N, S, S, 3] in 0..1
    border = torch.cat([x[:, 0], x[:, -1], x[:, 1:-1, 0], x[:, 1:-1, -1]], dim=1)  # [N, 4S-4, 3]
    bg = border.median(dim=1).values  # [N, 3]
    dist = (x - bg[:, None, None]).norm(dim=-1)  # [N, S, S]
    fg = dist > threshold
    count = fg.sum(dim=(1, 2))
    mean = (x * fg[..., None]).sum(dim=(1, 2)) / count.clamp_min(1)[:, None]
    palette = torch.from_numpy(PALETTE)
    label = torch.cdist(mean, palette).argmin(dim=1)
    return torch.where(count >= min_pixels, label, torch.full_like(label, NONE))


class ShapeJudge(nn.Module):
    """[N, 3, S, S] in [-1, 1] -> logits over SHAPES."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, stride=2), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, len(SHAPES)),
        )

    def forward(self, x):
        return self.net(x)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
        self.eval()
        return torch.cat([self(images[i : i + batch].float()).argmax(1) for i in range(0, len(images), batch)])


def train_shape_judge(size: int, seed: int, steps: int = 400, batch: int = 128, n_train: int = 6000, progress=None):
    """-> (judge, held-out accuracy on palette shapes, accuracy on noisy random-colour shapes)."""
    torch.manual_seed(seed)
    data = make_judge_shapes(n_train, seed=seed + 101, size=size)
    judge = ShapeJudge()
    opt = torch.optim.AdamW(judge.parameters(), lr=2e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    judge.train()
    for step in range(steps):
        idx = torch.randint(0, len(data), (batch,), generator=gen)
        loss = F.cross_entropy(judge(data.images[idx]), data.shape[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    held = make_shapes(1000, seed=seed + 202, size=size)
    acc = (judge.predict(held.images) == held.shape).float().mean().item()
    noisy = make_judge_shapes(1000, seed=seed + 303, size=size)
    acc_noisy = (judge.predict(noisy.images) == noisy.shape).float().mean().item()
    return judge.eval().requires_grad_(False), acc, acc_noisy


def colour_judge_accuracy(size: int, seed: int) -> float:
    held = make_shapes(1000, seed=seed + 404, size=size)
    return (judge_colour(held.images) == held.colour).float().mean().item()
