"""Trainer throughput: ours (trainer.train.Trainer with --cache_dir) vs a loop with the official tutorial_train.py
choices, on the same randomly initialised models, data and adapter; plus the projected wall time of long runs.

    python benchmarks/bench_trainer.py                               # SD1.5 / ViT-H shapes at 512 px on the CPU (minutes)
    python benchmarks/bench_trainer.py --device cuda --batch 8        # the same on a GPU (frozen parts bf16)
    python benchmarks/bench_trainer.py --preset small                 # small UNet at 64 px (about a minute on a CPU)

ours: the real Trainer (setup -> cache pass -> train_batch -> step) with --cache_dir (VAE latent moments, CLIP
features and text embeddings computed once per image, the latent re-sampled every step), frozen parts in the
--mixed_precision dtype, the loss read back only at the end (--logging_steps), --channels_last (off with
--no-channels_last), optionally --torch_compile. Its models come from configs with random weights: the bench hands
them to Trainer.setup in place of loading a checkpoint (no weights are read or downloaded).
baseline (tutorial_train.py's choices): UNet in fp32 (autocast when mixed precision), VAE encode + CLIP image
encoder + text encoder every step, images decoded every step, the loss read back every step. Both use this
project's attention (SDPA; the official script uses the SDPA processors with torch 2 too) and AdamW.

Each loop runs in its own subprocess so the peak memory (CUDA max allocated, or process max RSS on CPU) is its own.
Prints samples/s of each, the ratio, and the projected wall time of the paper's schedule (1M steps, 8 GPUs x batch 8)
and of 200k steps, from the measured per-device rate.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PRESETS = {
    # smoke test size (tests/trainer/test_trainer_speed.py runs it with --steps 1)
    "tiny": dict(
        resolution=32,
        unet=dict(block_out_channels=(16, 32), layers_per_block=1, cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
        vae=dict(block_out_channels=(8, 16), norm_num_groups=4, layers_per_block=1),
        text=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2),
        vision=dict(hidden_size=32, intermediate_size=64, projection_dim=24, num_hidden_layers=2, num_attention_heads=4, patch_size=32),
    ),
    # a small UNet that runs on a 2-core CPU; CLIP vision at its native 224 px as in training
    "small": dict(
        resolution=64,
        unet=dict(block_out_channels=(32, 64, 64), layers_per_block=1, cross_attention_dim=64, attention_head_dim=4, norm_num_groups=8,
                  down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")),
        vae=dict(block_out_channels=(32, 64, 64, 64), norm_num_groups=8, layers_per_block=1),
        text=dict(hidden_size=64, intermediate_size=256, num_attention_heads=4, num_hidden_layers=4),
        vision=dict(hidden_size=128, intermediate_size=512, projection_dim=96, num_hidden_layers=4, num_attention_heads=4, patch_size=16),
    ),
    # SD1.5 UNet and VAE, CLIP-L text encoder, ViT-H/14 image encoder shapes (random weights)
    "sd15": dict(
        resolution=512,
        unet=dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768, attention_head_dim=8),
        vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32),
        text=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12),
        vision=dict(hidden_size=1280, intermediate_size=5120, projection_dim=1024, num_hidden_layers=32, num_attention_heads=16, patch_size=14),
    ),
}
PAPER_STEPS, GOOD_STEPS, GPUS, GPU_BATCH = 1_000_000, 200_000, 8, 8  # the paper's schedule; the maintainer's "already good"
PAPER_IMAGES = 10_000_000  # the paper's training set (about 10M image-text pairs): the cache pass runs once over it


def build(preset: str):
    """Random frozen models (fp32, CPU) and the tokenizer: what load_sd / load_image_encoder would return."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    from ip_core.encoders import TransformersCLIPEncoder
    from trainer.demo.text import WordTokenizer
    from trainer.frozen_models import FrozenModels

    p = PRESETS[preset]
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=p["resolution"] // 8, **p["unet"])
    n_down = len(p["vae"]["block_out_channels"])
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * n_down, up_block_types=("UpDecoderBlock2D",) * n_down, latent_channels=4, **p["vae"])
    tokenizer = WordTokenizer(model_max_length=77)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **p["text"]))
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(image_size=224, **p["vision"]))
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, steps_offset=1)
    models = FrozenModels(scheduler=sched, unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer)
    return p, models, TransformersCLIPEncoder.from_model(vision)


def write_run_folder(root: str, p: dict, models, encoder, n_images: int) -> dict:
    """The folders Trainer.setup checks (model configs only, no weights), and n_images random images + captions."""
    import numpy as np
    from PIL import Image

    sd, enc, images = os.path.join(root, "sd"), os.path.join(root, "image_encoder"), os.path.join(root, "images")
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        os.makedirs(os.path.join(sd, sub), exist_ok=True)
    models.unet.save_config(os.path.join(sd, "unet"))  # detect_sdxl reads it
    encoder.module.config.save_pretrained(enc)
    os.makedirs(images, exist_ok=True)
    rng = np.random.default_rng(0)
    res = p["resolution"]
    items = []
    for i in range(n_images):
        arr = rng.integers(0, 255, size=(res + 8 * (i % 3), res, 3), dtype=np.uint8)  # a few aspect ratios: resize + crop run
        Image.fromarray(arr).save(os.path.join(images, f"{i}.png"))
        items.append({"image_file": f"{i}.png", "text": "a red circle" if i % 2 else "a blue square"})
    data = os.path.join(root, "data.json")
    with open(data, "w") as fh:
        json.dump(items, fh)
    return dict(sd=sd, encoder=enc, images=images, data=data)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _timed(dev, fn, warmup: int, steps: int) -> tuple:
    """Run fn(i) warmup + steps times; (wall seconds, CPU seconds) of the timed steps, device work included."""
    for i in range(warmup):
        fn(i)
    _sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0, ru0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    for i in range(warmup, warmup + steps):
        fn(i)
    _sync(dev)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter() - t0, (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)


def run_ours(a, root: str) -> dict:
    """The real Trainer: setup (cache pass included, timed apart) then train_batch per loader batch."""
    from tqdm.auto import tqdm

    import trainer.train as train_mod
    from trainer.train_config import TrainConfig, validate

    p, models, encoder = build(a.preset)
    paths = write_run_folder(root, p, models, encoder, a.batch * (a.warmup + a.steps))
    handed = {"models": models, "encoder": encoder}
    del models, encoder  # the Trainer owns them now (it frees the VAE and encoders after the cache pass)
    train_mod.load_sd = lambda *args, **kw: handed.pop("models")
    train_mod.load_image_encoder = lambda cfg: handed.pop("encoder")
    cfg = TrainConfig(
        pretrained_model_name_or_path=paths["sd"], image_encoder_path=paths["encoder"], data_json_file=paths["data"],
        data_root_path=paths["images"], output_dir=os.path.join(root, "out"), cache_dir=os.path.join(root, "cache"),
        resolution=p["resolution"], train_batch_size=a.batch, max_train_steps=a.warmup + a.steps, save_steps=10**9,
        logging_steps=10**9, report_to="none", mixed_precision=a.mixed_precision, channels_last=a.channels_last,
        torch_compile=a.torch_compile, seed=0,
    )
    cache_s = {}
    real_cache_pass = train_mod.Trainer._cache_pass

    def timed_cache_pass(self, *args, **kw):
        t0 = time.perf_counter()
        real_cache_pass(self, *args, **kw)
        _sync(self.device)
        cache_s["s"] = time.perf_counter() - t0

    train_mod.Trainer._cache_pass = timed_cache_pass
    t = train_mod.Trainer.setup(validate(cfg))
    t._pbar = tqdm(disable=True)
    dev = t.device
    batches = list(t.loader())  # cached tensors, a few KiB to MiB: read before timing

    def step(i):
        t.train_batch(batches[i])
        if i == a.warmup + a.steps - 1:
            t.log_losses()  # ours' one host read of the losses (--logging_steps)

    dt, cpu = _timed(dev, step, a.warmup, a.steps)
    assert t.global_step == a.warmup + a.steps and len(t.result.losses) == t.global_step
    flags = f"--cache_dir, --mixed_precision {a.mixed_precision}" + (", --channels_last" if a.channels_last else "") + (
        ", --torch_compile" if a.torch_compile else "")
    return _result("ours", flags, dev, a, dt, cpu, cache_s_per_image=cache_s["s"] / (a.batch * (a.warmup + a.steps)))


def run_baseline(a, root: str) -> dict:
    """tutorial_train.py's choices on the same models and data (no cache, fp32 UNet, a host sync every step)."""
    from ip_core.embeds import features_for
    from trainer import datasets as data_mod
    from trainer.ip_unet import IPAdapterUNet
    from trainer.recipe import apply_image_drop, draw_drops, make_optimizer
    from trainer.train import build_adapter, encoder_width_for, weight_dtype_for

    dev = torch.device(a.device)
    p, models, encoder = build(a.preset)
    paths = write_run_folder(root, p, models, encoder, a.batch * (a.warmup + a.steps))
    dtype = weight_dtype_for(a.mixed_precision)
    adapter = build_adapter(models.unet, encoder_width_for(encoder, "base"))
    model = IPAdapterUNet(models.unet, adapter)
    models.unet.to(dev)  # stays fp32 (the official script leaves `unet.to(dtype)` commented out)
    for m in (models.vae, models.text_encoder, encoder.module):
        m.requires_grad_(False).eval().to(dev, dtype)
    adapter.to(dev).train()
    opt = make_optimizer(adapter.parameters())
    items = data_mod.load_json_items(paths["data"])
    ds = data_mod.ImageTextDataset(items, paths["images"], models.tokenizer, p["resolution"], paths["data"])
    loader = torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, collate_fn=data_mod.collate, num_workers=0)
    it = iter(loader)
    sched, sf = models.scheduler, float(models.vae.config.scaling_factor)
    autocast = torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32)  # accelerate's mixed precision

    def step(i):
        batch = next(it)  # images decoded and preprocessed every step (num_workers 0, the official default)
        with torch.no_grad():
            latents = models.vae.encode(batch["image"].to(dev, dtype)).latent_dist.sample() * sf
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), device=dev).long()
            noisy = sched.add_noise(latents, noise, timesteps)
            feats = features_for(adapter.config, encoder.encode(batch["clip_image"].to(dev, dtype)))
            feats = apply_image_drop(feats, draw_drops(latents.shape[0], None)[0].to(dev))
            text = models.text_encoder(batch["input_ids"].to(dev))[0]
        with autocast:
            pred = model(noisy, timesteps, text, feats)
        loss = torch.nn.functional.mse_loss(pred.float(), noise.float(), reduction="mean")
        loss.item()  # the official script gathers and prints the loss every step (a host sync)
        loss.backward()
        opt.step()
        opt.zero_grad()

    dt, cpu = _timed(dev, step, a.warmup, a.steps)
    return _result("baseline", "tutorial_train.py choices", dev, a, dt, cpu)


def _result(mode, flags, dev, a, dt, cpu, **extra) -> dict:
    n = a.steps * a.batch
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return {"mode": mode, "flags": flags, "samples_per_s": n / dt, "cpu_s_per_sample": cpu / n, "peak_bytes": int(peak), "seconds": dt,
            "device": name, **extra}


def _duration(seconds: float) -> str:
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def projection_lines(rate: dict, cache_s_per_image: float, device: str, batch: int) -> list:
    """Wall time of long schedules from measured per-device samples/s: each of GPUS devices trains GPU_BATCH samples
    per step at that rate (data parallel, the adapter's all-reduce taken as free)."""
    src = "the CPU rate (one CPU like this one per GPU: a floor, not a GPU figure)" if device == "cpu" else f"the {device} rate"
    lines = [f"projected wall time from {src}, {GPUS} devices x batch {GPU_BATCH}"
             + ("" if batch == GPU_BATCH else f" (rate measured at batch {batch})") + ":"]
    cache = PAPER_IMAGES * cache_s_per_image / GPUS
    for steps, what in ((PAPER_STEPS, "the paper's schedule"), (GOOD_STEPS, '"already good"')):
        per = {m: steps * GPU_BATCH / r for m, r in rate.items()}
        lines.append(f"  {steps:,} steps ({what}): ours {_duration(per['ours'])} ({_duration(per['ours'] + cache)} with its cache pass), "
                     f"baseline {_duration(per['baseline'])}: {per['baseline'] / (per['ours'] + cache):.2f}x with the cache pass")
    lines.append(f"  ours' cache pass over {PAPER_IMAGES:,} images (the paper's data) on {GPUS} devices, once: {_duration(cache)}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="sd15")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (ours runs where accelerate puts it: the GPU when one is visible)")
    ap.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None, help="both loops (default: bf16 on cuda, no on cpu)")
    ap.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=True, help="ours: --channels_last (default on)")
    ap.add_argument("--torch_compile", action="store_true", help="ours: --torch_compile (inductor; compiling takes minutes on a CPU)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per loop (1: steady figures on a shared machine)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each loop, alternating; the best of each is reported")
    ap.add_argument("--worker", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    cuda = a.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print(f"--device {a.device}: no CUDA GPU is visible here (torch.cuda.is_available() is False); use --device cpu", file=sys.stderr)
        return 2
    if not cuda and a.device != "cpu":
        print(f"--device {a.device!r}: give cpu or cuda", file=sys.stderr)
        return 2
    a.mixed_precision = a.mixed_precision or ("bf16" if cuda else "no")
    if a.worker:
        torch.set_num_threads(a.threads)
        with tempfile.TemporaryDirectory(prefix="bench_trainer_") as root:
            r = (run_ours if a.worker == "ours" else run_baseline)(a, root)
        print(json.dumps(r))
        return 0
    env = dict(os.environ)
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""  # accelerate would put ours on a GPU if one is visible
    results = {}
    # alternate the two loops and keep each one's best run: on a shared machine, load from other work only slows
    for _ in range(a.repeats):
        for mode in ("baseline", "ours"):
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--preset", a.preset, "--device", a.device,
                   "--mixed_precision", a.mixed_precision, "--batch", str(a.batch), "--steps", str(a.steps), "--warmup",
                   str(a.warmup), "--threads", str(a.threads), "--channels_last" if a.channels_last else "--no-channels_last"]
            cmd += ["--torch_compile"] if a.torch_compile else []
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode != 0:
                print(f"the {mode} loop failed:\n{out.stderr[-3000:]}", file=sys.stderr)
                return 1
            r = json.loads(out.stdout.strip().splitlines()[-1])
            if mode not in results or r["samples_per_s"] > results[mode]["samples_per_s"]:
                results[mode] = r
    b, o = results["baseline"], results["ours"]
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{when} {platform.node()} preset={a.preset} device={o['device']} batch={a.batch} steps={a.steps} (+{a.warmup} warmup) "
          f"best of {a.repeats}, --mixed_precision {a.mixed_precision}")
    for r in (b, o):
        print(f"  {r['mode']:8s} {r['samples_per_s']:8.3f} samples/s   {r['cpu_s_per_sample']:8.3f} CPU s/sample   peak "
              f"{'GPU' if cuda else 'RSS'} {r['peak_bytes'] / 2**20:8.1f} MiB   ({r['flags']})")
    print(f"  speed ratio ours/baseline: {o['samples_per_s'] / b['samples_per_s']:.2f}x (CPU time: "
          f"{b['cpu_s_per_sample'] / o['cpu_s_per_sample']:.2f}x)   memory ratio: {o['peak_bytes'] / b['peak_bytes']:.2f}x")
    print(f"  ours' cache pass: {o['cache_s_per_image']:.3f} s/image (once per image; not in the rate above)")
    for line in projection_lines({"ours": o["samples_per_s"], "baseline": b["samples_per_s"]}, o["cache_s_per_image"],
                                 "cpu" if not cuda else o["device"], a.batch):
        print("  " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
