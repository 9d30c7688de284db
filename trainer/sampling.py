"""Classifier-free guided DDIM sampling: the one loop behind the trainer's validation grids and every model
the demo runs (base, adapter, ablation, real SD1.5 weights). `predict(latents_2b, t)` returns the model
output for [cond; uncond] stacked on the batch axis."""
from __future__ import annotations

from typing import Optional

import torch
from diffusers import DDIMScheduler


@torch.no_grad()
def guided_sample(predict, noise: torch.Tensor, scheduler_config, steps: int = 20, guidance: float = 3.0,
                  clip_sample: Optional[bool] = None) -> torch.Tensor:
    """Denoise `noise` in `steps` DDIM steps with guidance uncond + g * (cond - uncond).

    clip_sample: None keeps the scheduler config's setting (SD1.5: off)."""
    overrides = {} if clip_sample is None else {"clip_sample": clip_sample}
    sched = DDIMScheduler.from_config(scheduler_config, **overrides)
    sched.set_timesteps(steps)
    z = noise * sched.init_noise_sigma
    for t in sched.timesteps:
        inp = sched.scale_model_input(torch.cat([z, z]), t)
        cond, uncond = predict(inp, t).float().chunk(2)
        z = sched.step(uncond + guidance * (cond - uncond), t, z).prev_sample
    return z


def noise_for(n: int, shape: tuple, seed: int) -> torch.Tensor:
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))
