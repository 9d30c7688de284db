"""The demo's command with real weights: SD1.5 + CLIP vision + an IP-Adapter file -> images.

Everything goes through the project's own code: trainer.frozen_models.load_sd (diffusers folder or single file),
ip_core.encoders.load_image_encoder (transformers folder, or an OpenCLIP / transformers weight file),
ip_core.adapter.load_adapter (detected from keys and shapes), ip_core.embeds for cond / uncond features,
and trainer.ip_unet.IPAdapterUNet, whose processors run ip_core's decoupled attention. Sampling: DDIM with
classifier-free guidance, uncond = negative prompt + the official "no image" features.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from ip_core.families import load_adapter
from ip_core.embeds import features_for, unconditional_features
from ip_core.encoders import load_image_encoder
from ip_core.errors import IPAdapterError
from trainer.datasets import open_rgb, tokenize
from trainer.frozen_models import image_encoder_arch, load_sd
from trainer.ip_unet import IPAdapterUNet
from trainer.sampling import guided_sample, noise_for
from trainer.validation import vae_factor

from .report import CELL
from .shapes import make_shapes, to_uint8_hwc


def _reference_images(paths, size: int) -> tuple[list, torch.Tensor]:
    """-> (PIL images, ComfyUI-style IMAGE tensor per image [1, H, W, 3] 0..1)."""
    if not paths:
        batch = make_shapes(1, seed=0, size=size)  # a generated coloured shape: the demo needs no files
        pils = [Image.fromarray(to_uint8_hwc(batch.images)[0])]
    else:
        pils = []
        for p in paths:
            try:
                pils.append(open_rgb(p))
            except Exception as e:
                raise IPAdapterError(f"--reference {p!r}: cannot read it as an image ({type(e).__name__}: {e}); give a PNG/JPEG/WebP file.") from None
    return pils, [torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)[None] for im in pils]


@torch.no_grad()
def run_real(args) -> list:
    for flag, path in (("--sd15", args.sd15), ("--image-encoder", args.image_encoder), ("--ip-adapter", args.ip_adapter)):
        if not os.path.exists(path):
            raise IPAdapterError(f"{flag} {path!r}: no such file or folder; check the path.")
    models = load_sd(args.sd15, args.sd15_config)
    for m in (models.unet, models.vae, models.text_encoder):
        m.eval().requires_grad_(False)
    encoder = load_image_encoder(args.image_encoder, arch=image_encoder_arch(args.image_encoder_arch, flag="--image-encoder-arch"))
    adapter = load_adapter(args.ip_adapter)
    model = IPAdapterUNet(models.unet, adapter, init_from_unet=False).eval()  # checks layers / context dim

    pils, images = _reference_images(args.reference, encoder.image_size)
    feats = torch.cat([features_for(adapter.config, encoder.encode_images(im), encoder_label=f"{encoder.name} encoder") for im in images])
    uncond = unconditional_features(adapter.config, feats, encode_pixels=encoder.encode, image_size=encoder.image_size)

    tok, te = models.tokenizer, models.text_encoder
    text = te(tokenize(tok, [args.prompt]))[0]
    neg = te(tokenize(tok, [args.negative_prompt]))[0]
    factor = vae_factor(models.vae)
    res = args.resolution or models.unet.config.sample_size * factor
    if res % factor:
        raise IPAdapterError(f"--resolution {res} must be a multiple of the VAE factor {factor}")
    shape = (models.unet.config.in_channels, res // factor, res // factor)
    scales = args.scale or [0.0, 1.0]
    n = args.num_images
    sf = models.vae.config.scaling_factor
    out_dir = args.output_dir
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for r, (pil, f, u) in enumerate(zip(pils, feats, uncond)):
        row = [pil.resize((CELL * 2, CELL * 2))]
        for lam in scales:
            t_in = torch.cat([text.expand(n, -1, -1), neg.expand(n, -1, -1)])
            f_in = torch.cat([f[None].expand(n, *f.shape), u[None].expand(n, *u.shape)])
            predict = lambda z, t: model(z, t.expand(z.shape[0]), t_in, f_in, scale=float(lam))
            z = guided_sample(predict, noise_for(n, shape, args.seed), models.scheduler.config, args.steps, args.guidance, clip_sample=False)
            img = models.vae.decode(z / sf).sample.float()
            arr = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
            for k, a in enumerate(arr):
                p = os.path.join(out_dir, f"real_ref{r}_lambda{lam:g}_{k}.png")
                Image.fromarray(a).save(p)
                paths.append(p)
                row.append(Image.fromarray(a).resize((CELL * 2, CELL * 2)))
        grid = Image.new("RGB", (CELL * 2 * len(row), CELL * 2))
        for j, im in enumerate(row):
            grid.paste(im, (j * CELL * 2, 0))
        gp = os.path.join(out_dir, f"real_grid_ref{r}.png")
        grid.save(gp)
        paths.append(gp)
    return paths
