"""The tiny text-to-image base model the demo adapts: diffusers UNet2DConditionModel + transformers
CLIPTextModel, trained from scratch on the shapes' captions, then frozen.

The UNet works on a parameter-free "latent": the 16x16 RGB image folded 2x2 into 12 channels at 8x8
(pixel_unshuffle; decoding is exact). It plays the VAE's role at no cost, so every cross-attention layer -
where the adapter acts - runs at 8x8 or 4x4 and two CPU cores can train it in minutes. The text encoder
is trained jointly (SD's was pretrained; here nothing is).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel

from trainer.recipe import diffusion_target

from .shapes import ShapeBatch, training_captions
from .text import WordTokenizer, build_text_encoder, encode_text


@dataclass(frozen=True)
class BaseConfig:
    image_size: int = 16
    fold: int = 2  # pixel_unshuffle factor of the latent
    block_out_channels: tuple = (16, 32)
    context_dim: int = 64
    attention_heads: int = 4
    text_layers: int = 2
    prediction_type: str = "v_prediction"
    beta_schedule: str = "squaredcos_cap_v2"
    steps: int = 1600
    batch_size: int = 32
    lr: float = 2e-3

    def to_dict(self) -> dict:
        return asdict(self)


class TinyBase:
    """What a diffusers SD pipeline holds, at demo size: unet, text_encoder, tokenizer, scheduler, codec."""

    def __init__(self, cfg: BaseConfig):
        self.cfg = cfg
        n = len(cfg.block_out_channels)
        ch = 3 * cfg.fold**2
        self.unet = UNet2DConditionModel(
            sample_size=cfg.image_size // cfg.fold, in_channels=ch, out_channels=ch, layers_per_block=1,
            block_out_channels=tuple(cfg.block_out_channels), down_block_types=("CrossAttnDownBlock2D",) * n,
            up_block_types=("CrossAttnUpBlock2D",) * n, cross_attention_dim=cfg.context_dim,
            attention_head_dim=cfg.attention_heads, norm_num_groups=8,
        )
        self.tokenizer = WordTokenizer()
        self.text_encoder = build_text_encoder(self.tokenizer, width=cfg.context_dim, layers=cfg.text_layers)
        # DDPM, 1000 uniform timesteps as SD; the cosine schedule suits tiny images (no VAE compression).
        self.scheduler = DDPMScheduler(
            num_train_timesteps=1000, beta_schedule=cfg.beta_schedule, prediction_type=cfg.prediction_type, clip_sample=False
        )

    # the "VAE"
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(images, self.cfg.fold)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(latents, self.cfg.fold).clamp(-1, 1)

    @property
    def latent_shape(self) -> tuple:
        s = self.cfg.image_size // self.cfg.fold
        return (3 * self.cfg.fold**2, s, s)

    @torch.no_grad()
    def text_embeds(self, captions) -> torch.Tensor:
        return encode_text(self.text_encoder, self.tokenizer, captions)

    def freeze(self) -> "TinyBase":
        for m in (self.unet, self.text_encoder):
            m.eval().requires_grad_(False)
        return self

    def derive(self) -> "TinyBase":
        """A model to fine-tune from this one: its own copy of the UNet; text encoder, tokenizer, scheduler shared."""
        other = copy.copy(self)
        other.unet = copy.deepcopy(self.unet)
        return other

    def state_dict(self) -> dict:
        sd = {f"unet.{k}": v for k, v in self.unet.state_dict().items()}
        sd.update({f"text_encoder.{k}": v for k, v in self.text_encoder.state_dict().items()})
        return sd

    def load_state_dict(self, sd: dict) -> None:
        self.unet.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("unet.")})
        self.text_encoder.load_state_dict({k[13:]: v for k, v in sd.items() if k.startswith("text_encoder.")}, strict=False)



def report_step(progress, step: int, losses: list) -> None:
    """Advance a stage's progress bar; show the mean of the last 20 losses every 20 steps."""
    if progress is None:
        return
    progress.update(1)
    if step % 20 == 0:
        progress.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}", refresh=False)

def train_base(base: TinyBase, data: ShapeBatch, seed: int, progress=None, steps: int | None = None, lr: float | None = None,
               text_encoder: bool = True) -> list:
    """Joint UNet + text encoder training on (image, caption naming a random subset of its attributes).

    steps / lr (default: the base config's) and text_encoder=False: the derived model's fine-tune (UNet only, on
    text-only data, as community models are made; the text encoder stays the base's, frozen)."""
    cfg = replace(base.cfg, steps=steps if steps is not None else base.cfg.steps, lr=lr if lr is not None else base.cfg.lr)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    params = list(base.unet.parameters()) + (list(base.text_encoder.parameters()) if text_encoder else [])
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    base.unet.train()
    if text_encoder:
        base.text_encoder.train()
    latents_all = base.encode(data.images)
    losses = []
    for step in range(cfg.steps):
        idx = torch.randint(0, len(data), (cfg.batch_size,), generator=gen)
        captions = training_captions(data.colour[idx], data.shape[idx], gen)
        latents = latents_all[idx]
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, base.scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=gen)
        text = encode_text(base.text_encoder, base.tokenizer, captions)
        pred = base.unet(base.scheduler.add_noise(latents, noise, t), t, text).sample
        loss = F.mse_loss(pred, diffusion_target(base.scheduler, latents, noise, t))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # lr decays linearly to 10% over the last half: cleaner samples from a short run
        frac = step / max(1, cfg.steps)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * (1.0 if frac < 0.5 else 1.0 - 1.8 * (frac - 0.5))
        opt.step()
        losses.append(loss.item())
        report_step(progress, step, losses)
    base.freeze()
    return losses
