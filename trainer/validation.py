"""Sample grids at validation steps: loss says little about an IP-Adapter, pictures do.

Each row is one (reference image, prompt) pair: the reference, then `num_validation_images` samples made
with DDIM and classifier-free guidance (uncond = empty prompt + "no image" features, as the official
inference code). Saved as PNG under output_dir/samples and logged to TensorBoard.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from ip_core.embeds import features_for, unconditional_features

from .datasets import ClipPreprocessor, open_rgb, resize_center_crop, tokenize
from .sampling import guided_sample


@torch.no_grad()
def generate(model, models, adapter_config, images, prompts, resolution, steps=30, guidance=7.5, ip_scale=1.0, num_per_row=1, seed=0, device="cpu", dtype=torch.float32):
    """-> list of rows; each row: (reference PIL image, [PIL samples])."""
    clip = ClipPreprocessor()
    refs = [open_rgb(p) for p in images]
    pix = torch.stack([clip(r) for r in refs]).to(device=device, dtype=dtype)
    feats = features_for(adapter_config, models.encoder.encode(pix))
    uncond_feats = unconditional_features(adapter_config, feats, encode_pixels=models.encoder.encode)
    prompts = list(prompts) or [""]
    tok = models.tokenizer
    te = models.text_encoder
    empty = te(tokenize(tok, [""]).to(device))[0]
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    sf = models.vae.config.scaling_factor
    latent_ch = models.unet.config.in_channels
    h = resolution // vae_factor(models.vae)
    rows = []
    for prompt in prompts:
        text = te(tokenize(tok, [prompt]).to(device))[0]
        for i, ref in enumerate(refs):
            n = num_per_row
            noise = torch.randn((n, latent_ch, h, h), generator=gen).to(device)
            text_in = torch.cat([text.expand(n, -1, -1), empty.expand(n, -1, -1)])
            f_in = torch.cat([feats[i : i + 1].expand(n, *feats.shape[1:]), uncond_feats[i : i + 1].expand(n, *feats.shape[1:])]).float()
            lat = guided_sample(lambda z, t: model(z, t, text_in, f_in, scale=ip_scale), noise, models.scheduler.config, steps, guidance)
            img = models.vae.decode((lat / sf).to(dtype)).sample.float()
            img = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
            rows.append((ref, [Image.fromarray(a) for a in img]))
    return rows


def vae_factor(vae) -> int:
    """Pixel size per latent: 8 for SD's VAE (4 blocks), less for tiny test VAEs."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def make_grid(rows, size: int) -> Image.Image:
    cols = 1 + max(len(s) for _, s in rows)
    grid = Image.new("RGB", (cols * size, len(rows) * size), (0, 0, 0))
    for r, (ref, samples) in enumerate(rows):
        grid.paste(resize_center_crop(ref, size), (0, r * size))
        for c, s in enumerate(samples):
            grid.paste(s.resize((size, size)), ((c + 1) * size, r * size))
    return grid


def save_grid(grid: Image.Image, out_dir: str, step: int) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"step-{step:07d}.png")
    tmp = path + ".tmp.png"
    grid.save(tmp)
    os.replace(tmp, path)
    return path


def grid_array(grid: Image.Image) -> np.ndarray:
    return np.asarray(grid).transpose(2, 0, 1).copy()  # CHW uint8 for TensorBoard
