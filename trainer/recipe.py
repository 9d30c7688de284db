"""The paper's SD1.5 training recipe, as small functions (REFERENCE.md section 1).

- one uniform draw per sample: r < p drops the image, p <= r < 2p the text, 2p <= r < 3p both
  (the official dataset's if/elif chain with i_drop_rate = t_drop_rate = ti_drop_rate = 0.05);
- dropped image: base = zeros of the CLIP embedding before the projection; plus = the encoder's output for
  an all-zero (normalised) pixel image; dropped text = the empty string's embedding;
- DDPM forward noise with uniform timesteps, epsilon-prediction MSE; AdamW(1e-4, wd 1e-2), fixed LR.

Every random draw takes an explicit torch.Generator so a resumed run draws exactly what the uninterrupted
one would have. Under several processes every rank holds the same generators and draws for the whole global
batch, keeping its own rows (`part` = (rank, world): rows rank, rank + world, ... which are the samples the
data sampler gave it), so N processes with batch b train exactly as one process with batch N x b would.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

ONE_PROCESS = (0, 1)  # (rank, world) of a single-process run


def _my_rows(draw, shape, part):
    """draw(global shape) for the global batch (world x rows), then this rank's rows (strided, as the sampler)."""
    rank, world = part
    if world == 1:
        return draw(tuple(shape))
    return draw((shape[0] * world, *shape[1:]))[rank::world]


def draw_drops(batch_size: int, generator: torch.Generator | None, p: float = 0.05, p_text: float | None = None, p_both: float | None = None,
               part: tuple = ONE_PROCESS):
    """One draw per sample -> (drop_image bool[B], drop_text bool[B]) on the generator's device.

    p is the image-drop rate; p_text / p_both default to p (the official 0.05 / 0.05 / 0.05).
    """
    p_text = p if p_text is None else p_text
    p_both = p if p_both is None else p_both
    device = generator.device if generator is not None else "cpu"
    r = _my_rows(lambda shape: torch.rand(shape, generator=generator, device=device), (batch_size,), part)
    image_only = r < p
    text_only = (r >= p) & (r < p + p_text)
    both = (r >= p + p_text) & (r < p + p_text + p_both)
    return image_only | both, text_only | both


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.to(like.device).view(-1, *([1] * (like.dim() - 1)))


def apply_image_drop(features: torch.Tensor, drop_image: torch.Tensor, uncond_features: torch.Tensor | None = None) -> torch.Tensor:
    """Replace dropped samples' encoder features (before the projection) by the unconditional ones.

    uncond_features None -> zeros (base recipe). For plus, pass the encoder's penultimate hidden states of an
    all-zero normalised pixel image ([1, T, C] or [T, C]), i.e. ip_core.embeds.unconditional_features.
    torch.where keeps this free of host syncs (no Python branching on the mask).
    """
    if uncond_features is None:
        uncond = torch.zeros((), dtype=features.dtype, device=features.device)
    else:
        uncond = uncond_features.to(device=features.device, dtype=features.dtype)
        if uncond.dim() == features.dim() - 1:
            uncond = uncond.unsqueeze(0)
    return torch.where(_rows(drop_image, features), uncond, features)


def apply_text_drop(text_embeds: torch.Tensor, drop_text: torch.Tensor, empty_text_embeds: torch.Tensor) -> torch.Tensor:
    """Dropped text = the empty string tokenised normally and encoded ([1, 77, C] or [77, C])."""
    empty = empty_text_embeds.to(device=text_embeds.device, dtype=text_embeds.dtype)
    if empty.dim() == text_embeds.dim() - 1:
        empty = empty.unsqueeze(0)
    return torch.where(_rows(drop_text, text_embeds), empty, text_embeds)


def sample_latents(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None, scaling_factor: float,
                   part: tuple = ONE_PROCESS) -> torch.Tensor:
    """A fresh draw from the VAE posterior each step (as vae.encode(x).latent_dist.sample() does), scaled.

    logvar is clamped as diffusers' DiagonalGaussianDistribution does.
    """
    logvar = torch.clamp(logvar.float(), -30.0, 20.0)
    gdev = generator.device if generator is not None else "cpu"
    eps = _my_rows(lambda shape: torch.randn(shape, generator=generator, device=gdev), mean.shape, part).to(mean.device)
    return (mean.float() + torch.exp(0.5 * logvar) * eps) * scaling_factor


def diffusion_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the model learns to predict: the noise (epsilon, SD1.5) or the velocity (v-prediction schedulers)."""
    pred_type = getattr(scheduler.config, "prediction_type", "epsilon")
    if pred_type == "epsilon":
        return noise
    if pred_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"scheduler prediction_type {pred_type!r} is not supported by the trainer; use epsilon or v_prediction")


def diffusion_loss(model, scheduler, latents: torch.Tensor, text_embeds: torch.Tensor, image_features: torch.Tensor, generator: torch.Generator | None, scale=1.0,
                   added_cond: dict | None = None, part: tuple = ONE_PROCESS):
    """DDPM add_noise at uniform timesteps, MSE against the scheduler's target (epsilon; v if configured).

    model(noisy_latents, timesteps, text_embeds, image_features, scale=..., added_cond=...) -> noise prediction;
    added_cond: SDXL's {"text_embeds": pooled, "time_ids": ...} (None for SD1.5).
    """
    gdev = generator.device if generator is not None else "cpu"
    bsz = latents.shape[0]
    noise = _my_rows(lambda shape: torch.randn(shape, generator=generator, device=gdev, dtype=torch.float32), latents.shape, part).to(latents.device)
    num_t = int(scheduler.config.num_train_timesteps)
    timesteps = _my_rows(lambda shape: torch.randint(0, num_t, shape, generator=generator, device=gdev), (bsz,), part).long().to(latents.device)
    latents = latents.float()
    noisy = scheduler.add_noise(latents, noise, timesteps)
    target = diffusion_target(scheduler, latents, noise, timesteps)
    extra = {} if added_cond is None else {"added_cond": added_cond}  # SD1.5 models need not know the keyword
    pred = model(noisy, timesteps, text_embeds, image_features, scale=scale, **extra)
    return F.mse_loss(pred.float(), target.float(), reduction="mean")


@dataclass
class DropRecipe:
    """The drop rates and the two "dropped" values: what the paper's step needs besides the batch."""

    empty_text: torch.Tensor  # the empty prompt's text embedding ([1, 77, C] or [77, C])
    uncond_features: torch.Tensor | None = None  # "no image" features; None: zeros (base)
    i_drop_rate: float = 0.05
    t_drop_rate: float = 0.05
    ti_drop_rate: float = 0.05
    empty_pooled: torch.Tensor | None = None  # SDXL: the empty prompt's pooled embedding ([1, C])


def recipe_loss(model, scheduler, latents, text_embeds, image_features, recipe: DropRecipe, drop_gen, noise_gen,
                pooled: torch.Tensor | None = None, time_ids: torch.Tensor | None = None, part: tuple = ONE_PROCESS) -> torch.Tensor:
    """One micro-batch of the recipe: image / text / both drops (drop_gen), then noise, timesteps and the
    diffusion loss (noise_gen). Passing one generator as both draws everything from one stream.

    SDXL (pooled and time_ids given, tutorial_train_sdxl.py): a dropped text is the empty string for both encoders,
    so the pooled embedding is the empty prompt's too; the size/crop time ids are never dropped."""
    drop_image, drop_text = draw_drops(latents.shape[0], drop_gen, recipe.i_drop_rate, recipe.t_drop_rate, recipe.ti_drop_rate, part=part)
    image_features = apply_image_drop(image_features, drop_image, recipe.uncond_features)
    text_embeds = apply_text_drop(text_embeds, drop_text, recipe.empty_text)
    added_cond = None
    if pooled is not None:
        if recipe.empty_pooled is None or time_ids is None:
            raise ValueError("SDXL conditioning needs the empty prompt's pooled embedding (DropRecipe.empty_pooled) and time_ids")
        added_cond = {"text_embeds": apply_text_drop(pooled, drop_text, recipe.empty_pooled), "time_ids": time_ids}
    return diffusion_loss(model, scheduler, latents, text_embeds, image_features, noise_gen, added_cond=added_cond, part=part)


def make_optimizer(params, lr: float = 1e-4, weight_decay: float = 1e-2, optimizer_cls=torch.optim.AdamW) -> torch.optim.Optimizer:
    """AdamW over the adapter's parameters only, weight decay on all of them (as the official script).
    optimizer_cls: another AdamW implementation (trainer.speed.optimizer_class: bitsandbytes' 8-bit one)."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: the optimizer gets the adapter's parameters only")
    return optimizer_cls(params, lr=lr, weight_decay=weight_decay)
