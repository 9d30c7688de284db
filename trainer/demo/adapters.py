"""IP-Adapter training on the frozen tiny base, through the project's trainer code path, and the paper's
motivating ablation (image tokens concatenated to the text tokens, no K'/V').

Decoupled (the IP-Adapter): trainer.train.build_adapter -> ip_core IPAdapter for this UNet's layers;
trainer.ip_unet.IPAdapterUNet (init to_k_ip/to_v_ip from to_k/to_v, ip_core decoupled attention in every
cross-attention layer); trainer.recipe draw_drops / apply_image_drop (zeros before the projection) /
apply_text_drop (the empty caption) / diffusion_loss / make_optimizer (AdamW, weight decay 1e-2, adapter
parameters only). Only the learning rate and step count differ from the paper: they fit a CPU budget.

Concatenation (ablation): the same projection (ip_core's ImageProjModel, 4 tokens) appended to the text
tokens of the frozen UNet's existing cross-attention; only the projection trains, with the same recipe,
steps and learning rate.

Fully fine-tuned image-prompt model (the paper's Table 1 comparison, SD Image Variations' recipe): the image
tokens (the same projection) replace the text tokens and the whole UNet trains with them, on the same data,
steps and learning rate; it has no text input at all.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from torch import nn

from trainer.ip_unet import IPAdapterUNet
from trainer.recipe import DropRecipe, make_optimizer
from trainer.train import Trainer, build_adapter

from .base import report_step
from .shapes import ShapeBatch, all_captions, training_captions


@dataclass(frozen=True)
class AdapterTrainConfig:
    steps: int = 500
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    num_tokens: int = 4
    drop_rate: float = 0.05  # image / text / both, one draw per sample (official)

    def to_dict(self) -> dict:
        return asdict(self)


class ConcatTokensUNet(nn.Module):
    """Ablation: encoder_hidden_states = [text tokens | projected image tokens] in the UNet's own attention.

    Same call signature as IPAdapterUNet, so the same loss and sampler drive it; scale 0 drops the image
    tokens (text only), any other scale multiplies them (there is no separate image branch to weight).
    """

    def __init__(self, unet, image_proj: nn.Module):
        super().__init__()
        self.unet = unet.requires_grad_(False)
        self.image_proj = image_proj

    def trainable_parameters(self):
        return list(self.image_proj.parameters())

    def forward(self, noisy_latents, timesteps, text_embeds, image_features=None, scale=1.0):
        if isinstance(scale, (int, float)) and scale == 0:
            return self.unet(noisy_latents, timesteps, text_embeds).sample
        tokens = self.image_proj(image_features) * scale
        return self.unet(noisy_latents, timesteps, torch.cat([text_embeds, tokens.to(text_embeds.dtype)], dim=1)).sample


class ImageVariationsUNet(nn.Module):
    """The base UNet fine-tuned on image tokens in place of text (SD Image Variations): text is ignored.

    Same call signature as IPAdapterUNet; scale multiplies the image tokens (1 = as trained)."""

    def __init__(self, unet, image_proj: nn.Module):
        super().__init__()
        self.unet = unet.requires_grad_(True)
        self.image_proj = image_proj

    def trainable_parameters(self):
        return list(self.unet.parameters()) + list(self.image_proj.parameters())

    def forward(self, noisy_latents, timesteps, text_embeds, image_features=None, scale=1.0):
        tokens = self.image_proj(image_features) * scale
        return self.unet(noisy_latents, timesteps, tokens.to(text_embeds.dtype)).sample


def build_image_variations_model(base, encoder_width: int, num_tokens: int = 4) -> ImageVariationsUNet:
    unet = copy.deepcopy(base.unet)
    proj = build_adapter(unet, encoder_width, "base", num_tokens).image_proj
    return ImageVariationsUNet(unet, proj)


def build_ip_model(base, encoder_width: int, num_tokens: int = 4) -> IPAdapterUNet:
    """A fresh IP-Adapter on a copy of the frozen base UNet, built as `python -m trainer train` builds it."""
    unet = copy.deepcopy(base.unet)
    adapter = build_adapter(unet, encoder_width, "base", num_tokens)
    return IPAdapterUNet(unet, adapter, init_from_unet=True)


def reuse_ip_model(model, encoder_width: int, adapter_file: str, num_tokens: int = 4) -> IPAdapterUNet:
    """The released adapter file, unchanged, on another model's UNet (a model fine-tuned from the base): loaded as
    `python -m trainer train --pretrained_ip_adapter_path` loads it (its fit to this UNet checked first)."""
    unet = copy.deepcopy(model.unet)
    adapter = build_adapter(unet, encoder_width, "base", num_tokens, pretrained_path=adapter_file)
    return IPAdapterUNet(unet, adapter, init_from_unet=False).eval().requires_grad_(False)


def build_concat_model(base, encoder_width: int, num_tokens: int = 4) -> ConcatTokensUNet:
    unet = copy.deepcopy(base.unet)
    proj = build_adapter(unet, encoder_width, "base", num_tokens).image_proj  # the very projection the IP-Adapter uses
    return ConcatTokensUNet(unet, proj)


def train_adapter(model, base, data: ShapeBatch, features: torch.Tensor, cfg: AdapterTrainConfig, seed: int, progress=None) -> list:
    """The IP-Adapter recipe on (image, caption) pairs through the trainer's own step: the same loop for the
    decoupled model and the ablation.

    features: the frozen encoder's image_embeds of every training image (computed once: the encoder is frozen).
    One generator draws the batch, its captions, the drops and the noise, in that order (so the drop and
    noise streams of the Trainer are the same generator here).
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    captions = all_captions()
    table = base.text_embeds(captions)  # frozen text encoder: every caption's embedding, once
    row = {c: i for i, c in enumerate(captions)}
    latents_all = base.encode(data.images)
    params = model.trainable_parameters()
    optimizer = make_optimizer(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # no mixed precision, no accumulation, one process: accelerate's step is the plain backward + AdamW step
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    accelerator = Accelerator()
    recipe = DropRecipe(empty_text=table[row[""]], uncond_features=None,  # zeros before the projection
                        i_drop_rate=cfg.drop_rate, t_drop_rate=cfg.drop_rate, ti_drop_rate=cfg.drop_rate)
    trainer = Trainer(model, base.scheduler, optimizer, recipe, drop_gen=gen, step_gen=gen, accelerator=accelerator)
    model.train()
    losses = []
    for step in range(cfg.steps):
        idx = torch.randint(0, len(data), (cfg.batch_size,), generator=gen)
        caps = training_captions(data.colour[idx], data.shape[idx], gen)
        text = table[torch.tensor([row[c] for c in caps])]
        losses.append(trainer.step(latents_all[idx], text, features[idx]).item())
        report_step(progress, step, losses)
    model.eval()
    for p in params:
        p.requires_grad_(False)
    return losses
