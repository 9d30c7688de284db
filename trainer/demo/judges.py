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
TEAL_THRESHOLD = 0.12  # teal_score of a background: 0.17..0.31 on the derived style's data, -0.08..0.08 on the base's


def _pixels(images: torch.Tensor) -> torch.Tensor:
    return ((images.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)  # [N, S, S, 3] in 0..1


def _background(x: torch.Tensor) -> torch.Tensor:
    """[N, S, S, 3] pixels -> [N, 3]: the median of the border pixels (the objects sit in the middle)."""
    border = torch.cat([x[:, 0], x[:, -1], x[:, 1:-1, 0], x[:, 1:-1, -1]], dim=1)  # [N, 4S-4, 3]
    return border.median(dim=1).values


def teal_score(images: torch.Tensor) -> torch.Tensor:
    """images [N, 3, S, S] in [-1, 1] -> (G + B) / 2 - R of each background (shapes.TEAL_TINT moves it by 0.24)."""
    bg = _background(_pixels(images))
    return (bg[:, 1] + bg[:, 2]) / 2 - bg[:, 0]


def judge_teal(images: torch.Tensor, threshold: float = TEAL_THRESHOLD) -> torch.Tensor:
    """The derived model's style judge: True where the background is teal-tinted."""
    return teal_score(images) > threshold


def judge_colour(images: torch.Tensor, threshold: float = 0.2, min_pixels: int = 3) -> torch.Tensor:
    """images [N, 3, S, S] in [-1, 1] -> palette index per image (NONE when no object stands out)."""
    x = _pixels(images)
    bg = _background(x)  # [N, 3]
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
    acc = shape_judge_accuracy(judge, size, seed)
    noisy = make_judge_shapes(1000, seed=seed + 303, size=size)
    acc_noisy = (judge.predict(noisy.images) == noisy.shape).float().mean().item()
    return judge.eval().requires_grad_(False), acc, acc_noisy


def shape_judge_accuracy(judge: ShapeJudge, size: int, seed: int, style: str = "plain") -> float:
    """On 1000 held-out dataset images (the base's, or the derived model's style)."""
    held = make_shapes(1000, seed=seed + 202, size=size, style=style)
    return (judge.predict(held.images) == held.shape).float().mean().item()


def colour_judge_accuracy(size: int, seed: int, style: str = "plain") -> float:
    held = make_shapes(1000, seed=seed + 404, size=size, style=style)
    return (judge_colour(held.images) == held.colour).float().mean().item()


def style_judge_accuracy(size: int, seed: int, n: int = 1000) -> dict:
    """The style judge on ground truth: how often it fires on the derived style's images and on the base's."""
    styled = make_shapes(n, seed=seed + 505, size=size, style="teal")
    plain = make_shapes(n, seed=seed + 505, size=size)
    return {"fires_on_style_data": judge_teal(styled.images).float().mean().item(),
            "fires_on_base_data": judge_teal(plain.images).float().mean().item()}
