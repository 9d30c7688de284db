"""The recipe functions: drop frequencies, drop values, noise/timesteps, loss target, optimizer."""
import math

import torch

from trainer.recipe import (
    apply_image_drop, apply_text_drop, diffusion_loss, draw_drops, make_optimizer, sample_latents,
)


def test_drop_frequencies_match_the_official_rule():
    n = 200_000
    img, txt = draw_drops(n, torch.Generator().manual_seed(1234), p=0.05)
    image_only = (img & ~txt).float().mean().item()
    text_only = (txt & ~img).float().mean().item()
    both = (img & txt).float().mean().item()
    kept = (~img & ~txt).float().mean().item()
    tol = 4 * math.sqrt(0.05 * 0.95 / n)  # 4 sigma of a binomial proportion
    for got, want in ((image_only, 0.05), (text_only, 0.05), (both, 0.05), (kept, 0.85)):
        assert abs(got - want) < max(tol, 4 * math.sqrt(want * (1 - want) / n)), (got, want)


def test_drops_are_one_draw_per_sample():
    # the same uniform draw decides: r<p image, p<=r<2p text, 2p<=r<3p both
    g = torch.Generator().manual_seed(7)
    r = torch.rand(1000, generator=torch.Generator().manual_seed(7))
    img, txt = draw_drops(1000, g, p=0.05)
    assert torch.equal(img, (r < 0.05) | ((r >= 0.10) & (r < 0.15)))
    assert torch.equal(txt, (r >= 0.05) & (r < 0.15))


def test_image_drop_base_zeros_before_projection_and_plus_uncond():
    feats = torch.randn(4, 8)
    drop = torch.tensor([True, False, True, False])
    out = apply_image_drop(feats, drop)
    assert torch.equal(out[0], torch.zeros(8)) and torch.equal(out[2], torch.zeros(8))
    assert torch.equal(out[1], feats[1]) and torch.equal(out[3], feats[3])
    hidden = torch.randn(4, 5, 8)
    uncond = torch.randn(1, 5, 8)
    out = apply_image_drop(hidden, drop, uncond)
    assert torch.equal(out[0], uncond[0]) and torch.equal(out[1], hidden[1])


def test_text_drop_uses_the_empty_prompt_embedding():
    text = torch.randn(3, 77, 16)
    empty = torch.randn(1, 77, 16)
    out = apply_text_drop(text, torch.tensor([False, True, False]), empty)
    assert torch.equal(out[1], empty[0]) and torch.equal(out[0], text[0]) and torch.equal(out[2], text[2])


class _Sched:
    class config:
        num_train_timesteps = 1000
        prediction_type = "epsilon"

    def add_noise(self, x, noise, t):
        self.t, self.noise = t, noise
        return x + noise


def test_diffusion_loss_is_eps_mse_with_uniform_timesteps_and_is_seeded():
    sched = _Sched()
    latents = torch.randn(64, 4, 2, 2)
    model = lambda noisy, t, text, feats, scale=1.0: torch.zeros_like(noisy)  # noqa: E731
    loss = diffusion_loss(model, sched, latents, None, None, torch.Generator().manual_seed(0))
    assert torch.allclose(loss, sched.noise.pow(2).mean())
    t1 = sched.t.clone()
    assert t1.min() >= 0 and t1.max() < 1000 and t1.unique().numel() > 30
    diffusion_loss(model, sched, latents, None, None, torch.Generator().manual_seed(0))
    assert torch.equal(sched.t, t1)  # same generator state, same draws


def test_sample_latents_draws_from_the_posterior():
    mean = torch.full((20000,), 2.0)
    logvar = torch.full((20000,), math.log(0.25))
    z = sample_latents(mean, logvar, torch.Generator().manual_seed(0), 0.5)
    assert abs(z.mean().item() - 1.0) < 0.02 and abs(z.std().item() - 0.25) < 0.02


def test_optimizer_is_adamw_with_official_defaults():
    p = torch.nn.Parameter(torch.zeros(3))
    frozen = torch.nn.Parameter(torch.zeros(3), requires_grad=False)
    opt = make_optimizer([p, frozen])
    assert isinstance(opt, torch.optim.AdamW)
    group = opt.param_groups[0]
    assert group["lr"] == 1e-4 and group["weight_decay"] == 1e-2 and len(group["params"]) == 1


def test_each_rank_draws_its_rows_of_the_global_batch():
    """Under N processes every rank draws drops, latent samples, noise and timesteps for the whole global batch
    and keeps rows rank, rank + N, ... (the sampler's split): together they are the one-process draw."""
    from diffusers import DDPMScheduler

    from trainer.recipe import DropRecipe, recipe_loss

    class Echo(torch.nn.Module):  # returns its noisy input: the loss then depends on every draw
        def forward(self, noisy, timesteps, text, feats, scale=1.0):
            Echo.seen.append((noisy.clone(), timesteps.clone(), text.clone(), feats.clone()))
            return noisy

    sched = DDPMScheduler(num_train_timesteps=1000)
    lat = torch.randn(6, 4, 2, 2)
    text, feats = torch.randn(6, 3, 5), torch.randn(6, 7)
    recipe = DropRecipe(torch.zeros(1, 3, 5), i_drop_rate=0.3, t_drop_rate=0.3, ti_drop_rate=0.3)
    Echo.seen = []
    gen = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    z = sample_latents(lat, torch.zeros_like(lat), gen(3), 0.5)
    recipe_loss(Echo(), sched, z, text, feats, recipe, gen(1), gen(2))
    whole = Echo.seen.pop()
    for rank in range(3):
        rows = slice(rank, None, 3)
        z_r = sample_latents(lat[rows], torch.zeros_like(lat[rows]), gen(3), 0.5, part=(rank, 3))
        assert torch.equal(z_r, z[rows])
        recipe_loss(Echo(), sched, z_r, text[rows], feats[rows], recipe, gen(1), gen(2), part=(rank, 3))
        mine = Echo.seen.pop()
        assert all(torch.equal(m, w[rows]) for m, w in zip(mine, whole))
