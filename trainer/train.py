"""The training loop: official recipe, frozen parts in half precision, resumable, with exports.

Read top to bottom: check config -> accelerator -> models -> adapter -> (cache pass) -> data -> resume ->
loop (drops, fresh latent sample, DDPM noise, eps MSE, AdamW) -> checkpoints, exports, samples.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from ip_core.errors import AdapterMismatchError, IPAdapterError

from . import cache as cache_mod
from . import checkpoints as ck
from .config import TrainConfig, TrainerConfigError, save_resolved, validate
from .recipe import apply_image_drop, apply_text_drop, diffusion_loss, draw_drops, make_optimizer, sample_latents

# settings a resume must share with the run it continues (others, like --max_train_steps, may change)
RESUME_MUST_MATCH = (
    "pretrained_model_name_or_path", "image_encoder_path", "data_json_file", "train_shards", "resolution",
    "variant", "num_tokens", "train_batch_size", "gradient_accumulation_steps", "seed", "learning_rate",
    "weight_decay", "i_drop_rate", "t_drop_rate", "ti_drop_rate", "mixed_precision",
)


class TrainingDivergedError(IPAdapterError):
    """The loss became NaN/inf; training stopped and nothing after the last good checkpoint was saved."""


@dataclass
class TrainResult:
    global_step: int = 0
    losses: list = field(default_factory=list)  # one per optimizer step (mean of its micro-batches), from step 1
    skipped_images: int = 0
    samples_seen: int = 0
    export_path: Optional[str] = None
    checkpoint_path: Optional[str] = None
    output_dir: str = ""
    resumed_from: Optional[str] = None
    sample_grids: list = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False  # stopped by SIGTERM/SIGINT after saving a checkpoint


def weight_dtype_for(mixed_precision: Optional[str]) -> torch.dtype:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision or "no", torch.float32)


# ---------------------------------------------------------------------------------------------- adapter

def build_adapter(cfg: TrainConfig, unet, encoder_width: int):
    """A fresh adapter for this UNet (released SD1.5 layout when the UNet is SD1.5), or the given weights."""
    from ip_core.adapter import IPAdapter
    from ip_core.checkpoint import load_adapter_state_dict
    from ip_core.config import make_config
    from ip_core.layers import layer_specs_from_unet

    layers = layer_specs_from_unet(unet)
    acfg = make_config(cfg.variant, layers, int(unet.config.cross_attention_dim), int(encoder_width), num_tokens=cfg.num_tokens)
    adapter = IPAdapter.from_config(acfg, layers)
    if cfg.pretrained_ip_adapter_path:
        sd = load_adapter_state_dict(cfg.pretrained_ip_adapter_path)
        proj = dict(sd["image_proj"])
        strict = True
        # tutorial_train_plus.py: a Resampler with another query count keeps everything but its latents.
        if "latents" in proj and proj["latents"].shape != adapter.image_proj.latents.shape:
            del proj["latents"]
            strict = False
        try:
            adapter.image_proj.load_state_dict(proj, strict=strict)
            adapter.ip_layers.load_state_dict(sd["ip_adapter"], strict=True)
        except RuntimeError as e:
            raise AdapterMismatchError(
                f"--pretrained_ip_adapter_path: {cfg.pretrained_ip_adapter_path!r} does not fit the adapter being trained "
                f"({acfg.description}): {str(e)[:400]}. Use a file of the same --variant/--num_tokens, base model and image encoder."
            ) from None
    return adapter


# ---------------------------------------------------------------------------------------------- cache pass

@torch.no_grad()
def run_cache_pass(cfg, accelerator, models, acfg, fp, weight_dtype, source_dataset, empty_text, uncond_feats):
    from .data import collate

    device = accelerator.device
    rank, world = accelerator.process_index, accelerator.num_processes
    os.makedirs(cfg.cache_dir, exist_ok=True)
    if accelerator.is_main_process:
        cache_mod.clear_partial(cfg.cache_dir)
    accelerator.wait_for_everyone()
    if isinstance(source_dataset, torch.utils.data.IterableDataset):
        source_dataset.rank, source_dataset.world, source_dataset.buffer = rank, world, 1
        source_dataset.set_position(0, 0)
        ds = source_dataset
    else:
        ds = torch.utils.data.Subset(source_dataset, list(range(rank, len(source_dataset), world)))
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.train_batch_size, collate_fn=collate, num_workers=cfg.dataloader_num_workers)
    writer = cache_mod.ChunkWriter(cfg.cache_dir, rank, cfg.cache_dtype)
    skipped = 0
    from ip_core.embeds import features_for

    for batch in _progress(loader, accelerator, "cache pass"):
        skipped += batch["skipped"]
        if batch["size"] == 0:
            continue
        dist = models.vae.encode(batch["image"].to(device, weight_dtype)).latent_dist
        feats = features_for(acfg, models.encoder.encode(batch["clip_image"].to(device, weight_dtype)))
        text = models.text_encoder(batch["input_ids"].to(device))[0]
        writer.add(latent_mean=dist.mean, latent_logvar=dist.logvar, features=feats, text_embeds=text)
    writer.flush()
    # every rank reports its chunks to the main process, which writes meta.json last
    from accelerate.utils import gather_object

    chunks = gather_object([writer.written]) if world > 1 else [writer.written]
    skipped_all = accelerator.gather(torch.tensor([skipped], device=device)).sum().item() if world > 1 else skipped
    if accelerator.is_main_process:
        flat = [c for part in chunks for c in part]
        cache_mod.write_meta(cfg.cache_dir, fp, flat, skipped_all, empty_text, uncond_feats, models.vae.config.scaling_factor)
    accelerator.wait_for_everyone()
    return skipped_all


class _StopRequest:
    """Turns SIGTERM / SIGINT into "save and stop at the next step boundary" (main thread only)."""

    def __init__(self):
        self.flag = False
        self.old = {}

    def install(self):
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.flag:  # a second signal: the user insists
            raise KeyboardInterrupt
        self.flag = True

    def uninstall(self):
        import signal

        for sig, h in self.old.items():
            signal.signal(sig, h)
        self.old = {}

    def requested(self, accelerator, every: int, step: int) -> bool:
        if accelerator.num_processes == 1:
            return self.flag
        if step % every:
            return False
        t = torch.tensor([1.0 if self.flag else 0.0], device=accelerator.device)
        return bool(accelerator.reduce(t, reduction="sum").item() > 0)


def _agreed(loader, accelerator, uneven: bool):
    """Yield batches; with uneven streams stop on every rank as soon as one rank has run out."""
    if not uneven:
        yield from loader
        return
    it = iter(loader)
    while True:
        batch = next(it, None)
        have = torch.tensor([0.0 if batch is None else 1.0], device=accelerator.device)
        if accelerator.reduce(have, reduction="sum").item() < accelerator.num_processes:
            return
        yield batch


def _reset_accelerate_state() -> None:
    """accelerate keeps one process-wide state; a second train() in the same process (tests, notebooks) may
    want another mixed precision. The distributed part (PartialState) is kept."""
    try:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
    except Exception:
        pass


def _progress(it, accelerator, desc, total=None, initial=0):
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, total=total, initial=initial, disable=not accelerator.is_local_main_process, dynamic_ncols=True)


# ---------------------------------------------------------------------------------------------- main

def train(config: TrainConfig) -> TrainResult:
    cfg = validate(config)  # every flag and path, before any model is loaded
    t_start = time.perf_counter()
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    from ip_core.adapter import save_adapter
    from ip_core.embeds import features_for, unconditional_features

    from . import data as data_mod
    from .model import IPAdapterUNet
    from .models import encoder_module, freeze_, load_image_encoder, load_sd

    report = None if cfg.report_to in ("none", "") else cfg.report_to
    _reset_accelerate_state()
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with=report,
        project_config=ProjectConfiguration(project_dir=cfg.output_dir, logging_dir=os.path.join(cfg.output_dir, cfg.logging_dir)),
    )
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    weight_dtype = weight_dtype_for(accelerator.mixed_precision)
    if cfg.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if accelerator.is_main_process:
        os.makedirs(cfg.output_dir, exist_ok=True)

    resume_path = ck.resolve_resume(cfg.resume_from_checkpoint, cfg.output_dir)
    state = ck.load_state(resume_path) if resume_path else None
    if state is not None:
        old = state["config"]
        diff = [k for k in RESUME_MUST_MATCH if old.get(k) != getattr(cfg, k)]
        if diff:
            raise TrainerConfigError(
                f"--resume_from_checkpoint: {resume_path!r} was trained with other settings: "
                + ", ".join(f"--{k} {old.get(k)!r} (now {getattr(cfg, k)!r})" for k in diff)
                + "; pass the same values, or start a new --output_dir"
            )
    if accelerator.is_main_process:
        save_resolved(cfg, os.path.join(cfg.output_dir, "config.json"))

    seed = int(cfg.seed or 0)
    torch.manual_seed(seed + rank)
    # both on the accelerator: drawing drops, noise, timesteps and latent samples needs no host transfer
    drop_gen = torch.Generator(device=device).manual_seed(seed * 7919 + 2 * rank + 1)
    step_gen = torch.Generator(device=device).manual_seed(seed * 7919 + 2 * rank + 2)

    # a malformed data file must fail before minutes of model loading, too
    items = data_mod.load_json_items(cfg.data_json_file) if cfg.data_json_file else None

    # ---- models: frozen ones in the mixed-precision dtype, the adapter in fp32
    models = load_sd(cfg)
    models.encoder = load_image_encoder(cfg)
    enc_mod = encoder_module(models.encoder)
    encoder_width = models.encoder.projection_dim if cfg.variant == "base" else models.encoder.hidden_size
    adapter = build_adapter(cfg, models.unet, encoder_width)
    acfg = adapter.config
    model = IPAdapterUNet(models.unet, adapter, init_from_unet=cfg.pretrained_ip_adapter_path is None)
    freeze_(models.unet, device, weight_dtype)
    if cfg.gradient_checkpointing:
        models.unet.enable_gradient_checkpointing()
        models.unet.train()  # frozen; SD1.5 has no dropout, train() only enables the recomputation
    adapter.to(device=device, dtype=torch.float32).train()

    need_frozen_encoders = cfg.cache_dir is None or bool(cfg.validation_image)
    for m in (models.vae, models.text_encoder, enc_mod):
        freeze_(m, device, weight_dtype)
    with torch.no_grad():  # the two "dropped" values of the recipe, computed once
        empty_text = models.text_encoder(data_mod.tokenize(models.tokenizer, [""]).to(device))[0]
    if acfg.encoder_output == "image_embeds":
        uncond_feats = torch.zeros(1, acfg.encoder_width, device=device, dtype=weight_dtype)
    else:
        size = models.encoder.image_size
        probe = torch.zeros(1, 3, size, size, device=device, dtype=weight_dtype)
        with torch.no_grad():
            uncond_feats = unconditional_features(acfg, features_for(acfg, models.encoder.encode(probe)), encode_pixels=models.encoder.encode)

    # ---- data
    if cfg.data_json_file:
        source = data_mod.ImageTextDataset(items, cfg.data_root_path, models.tokenizer, cfg.resolution)
    else:
        source = data_mod.TarShardDataset(
            data_mod.expand_shards(cfg.train_shards), models.tokenizer, cfg.resolution, seed, cfg.train_batch_size,
            rank, world, cfg.shuffle_buffer,
        )
    skipped_before = 0
    if cfg.cache_dir is not None:
        fp = cache_mod.fingerprint(cfg, acfg)
        if not cache_mod.check_ready(cfg.cache_dir, fp):
            run_cache_pass(cfg, accelerator, models, acfg, fp, weight_dtype, source, empty_text, uncond_feats)
        train_ds = cache_mod.CachedDataset(cfg.cache_dir)
        skipped_before = int(train_ds.meta.get("skipped_images", 0))
        e, u = train_ds.uncond()
        empty_text, uncond_feats = e.to(device, weight_dtype), u.to(device, weight_dtype)
        scaling = float(train_ds.meta["vae_scaling_factor"])
        if not need_frozen_encoders:  # the cache replaces them: give the memory back
            models.vae = models.text_encoder = None
            models.encoder = None
            enc_mod = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    else:
        train_ds = source
        scaling = float(models.vae.config.scaling_factor)
    cached = cfg.cache_dir is not None
    iterable = isinstance(train_ds, torch.utils.data.IterableDataset)

    # ---- optimizer, accelerate (only the adapter's forward is wrapped: DDP/DeepSpeed never see the UNet)
    optimizer = make_optimizer(model.trainable_parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    from accelerate.utils import DistributedType

    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    if deepspeed:  # no dataloader goes through prepare(), so DeepSpeed cannot infer the micro batch itself
        ds_cfg = accelerator.state.deepspeed_plugin.deepspeed_config
        if ds_cfg.get("train_micro_batch_size_per_gpu") in (None, "auto"):
            ds_cfg["train_micro_batch_size_per_gpu"] = cfg.train_batch_size
    kv_runner, optimizer = accelerator.prepare(model.adapter_kv, optimizer)
    model.set_adapter_runner(kv_runner)

    accum = cfg.gradient_accumulation_steps
    per_epoch = None if iterable else data_mod.batches_per_epoch(len(train_ds), cfg.train_batch_size, world)
    if cfg.max_train_steps is not None:
        max_steps = cfg.max_train_steps
    elif per_epoch is not None:
        max_steps = math.ceil(cfg.num_train_epochs * per_epoch / accum)
    else:
        max_steps = None

    result = TrainResult(output_dir=cfg.output_dir, resumed_from=resume_path)
    global_step, epoch, batch_in_epoch, samples_seen, skipped = 0, 0, 0, 0, skipped_before
    if state is not None:
        adapter.load_state_dict(state["adapter"])
        if deepspeed:  # ZeRO partitions the optimizer state: each rank wrote its own part
            optimizer.load_state_dict(torch.load(os.path.join(resume_path, f"optimizer_rank{rank}.pt"), map_location="cpu", weights_only=True))
        else:
            optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler") is not None and accelerator.scaler is not None:
            accelerator.scaler.load_state_dict(state["scaler"])
        global_step, epoch, batch_in_epoch = int(state["global_step"]), int(state["epoch"]), int(state["batch_in_epoch"])
        samples_seen, skipped = int(state["samples_seen"]), int(state["skipped_images"])
        result.losses = list(state.get("losses", []))
        rng = ck.load_rng(resume_path, rank)
        if rng is not None:
            ck.set_rng_state(rng, drop_gen, step_gen)
        if per_epoch is not None and batch_in_epoch >= per_epoch:
            epoch, batch_in_epoch = epoch + 1, 0

    if accelerator.is_main_process and report:
        accelerator.init_trackers("ip_adapter", config={k: v for k, v in cfg.to_dict().items() if isinstance(v, (int, float, str, bool))})

    # ---- helpers using the state above
    pending: list = []
    last_ckpt = [resume_path]
    saved_at = [int(state["global_step"]) if state is not None else None]  # same on every rank (collective saves)

    def flush_losses():
        if not pending:
            return
        vals = torch.stack(pending)
        if world > 1:
            vals = accelerator.reduce(vals, reduction="mean")
        vals = vals.float().cpu().tolist()  # the one host sync per logging interval
        first = global_step - len(vals) + 1
        pending.clear()
        bad = [first + i for i, v in enumerate(vals) if not math.isfinite(v)]
        if bad:
            accelerator.end_training()
            where = last_ckpt[0] or "none (no checkpoint was written yet)"
            raise TrainingDivergedError(
                f"the loss became {vals[bad[0] - first]} at step {bad[0]}; training stopped and nothing after the last good "
                f"checkpoint was saved ({where}). Lower --learning_rate, prefer --mixed_precision bf16 over fp16, "
                f"or check the data; then resume with --resume_from_checkpoint latest."
            )
        result.losses.extend(vals)
        mean = sum(vals) / len(vals)
        if accelerator.is_main_process:
            pbar.set_postfix(loss=f"{mean:.4f}", skipped=skipped, refresh=False)
            if report:
                accelerator.log({"train/loss": mean, "train/skipped_images": skipped, "train/epoch": epoch}, step=global_step)

    def export(path_base: str) -> str:
        ext = ".bin" if cfg.export_format == "bin" else ".safetensors"
        return str(save_adapter(adapter, path_base + ext, format=cfg.export_format))

    def save_checkpoint():
        flush_losses()  # never save weights that already saw a NaN step
        tmp = ck.begin(cfg.output_dir, global_step) if accelerator.is_main_process else None
        accelerator.wait_for_everyone()
        tmp = tmp or os.path.join(cfg.output_dir, f".checkpoint-{global_step}.tmp")
        ck.write_rng(tmp, rank, ck.rng_state(drop_gen, step_gen))
        if deepspeed:
            torch.save(optimizer.state_dict(), os.path.join(tmp, f"optimizer_rank{rank}.pt"))
        accelerator.wait_for_everyone()
        path = None
        if accelerator.is_main_process:
            export(os.path.join(tmp, "ip_adapter"))
            payload = {
                "format": 1,
                "global_step": global_step,
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "samples_seen": samples_seen,
                "skipped_images": skipped,
                "adapter": {k: v.detach().cpu().clone() for k, v in adapter.state_dict().items()},
                "optimizer": None if deepspeed else optimizer.state_dict(),
                "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
                "losses": list(result.losses),
                "config": cfg.to_dict(),
            }
            path = ck.commit(tmp, cfg.output_dir, global_step, payload)
            ck.prune(cfg.output_dir, cfg.checkpoints_total_limit)
            last_ckpt[0] = path
            result.checkpoint_path = path
        saved_at[0] = global_step
        accelerator.wait_for_everyone()
        return path

    def run_validation():
        if not cfg.validation_image or not accelerator.is_main_process:
            return
        from .validation import generate, grid_array, make_grid, save_grid

        model.set_adapter_runner(model.adapter_kv)  # plain module: a rank-0-only forward must not touch DDP
        adapter.eval()
        try:
            with accelerator.autocast():
                rows = generate(
                    model, models, acfg, cfg.validation_image, cfg.validation_prompt, cfg.resolution,
                    cfg.validation_num_inference_steps, cfg.validation_guidance_scale, cfg.validation_ip_scale,
                    cfg.num_validation_images, cfg.validation_seed, device, weight_dtype,
                )
        finally:
            adapter.train()
            model.set_adapter_runner(kv_runner)
        grid = make_grid(rows, min(cfg.resolution, 256))
        path = save_grid(grid, os.path.join(cfg.output_dir, "samples"), global_step)
        result.sample_grids.append(path)
        if report:
            for tracker in accelerator.trackers:
                if tracker.name == "tensorboard":
                    tracker.writer.add_image("validation", grid_array(grid), global_step)

    def batch_loss(batch):
        if cached:
            mean, logvar = batch["latent_mean"].to(device, non_blocking=True), batch["latent_logvar"].to(device, non_blocking=True)
            feats = batch["features"].to(device, weight_dtype, non_blocking=True)
            text = batch["text_embeds"].to(device, weight_dtype, non_blocking=True)
        else:
            with torch.no_grad():
                dist = models.vae.encode(batch["image"].to(device, weight_dtype, non_blocking=True)).latent_dist
                mean, logvar = dist.mean, dist.logvar
                feats = features_for(acfg, models.encoder.encode(batch["clip_image"].to(device, weight_dtype, non_blocking=True)))
                text = models.text_encoder(batch["input_ids"].to(device, non_blocking=True))[0]
        latents = sample_latents(mean, logvar, step_gen, scaling)
        drop_image, drop_text = draw_drops(latents.shape[0], drop_gen, cfg.i_drop_rate, cfg.t_drop_rate, cfg.ti_drop_rate)
        feats = apply_image_drop(feats, drop_image.to(device), uncond_feats)
        text = apply_text_drop(text, drop_text.to(device), empty_text)
        return diffusion_loss(model, models.scheduler, latents, text, feats, step_gen)

    def loader_for(ep: int, start: int):
        kw = dict(collate_fn=data_mod.collate, num_workers=cfg.dataloader_num_workers, pin_memory=device.type == "cuda",
                  persistent_workers=False)
        if iterable:
            train_ds.set_position(ep, start)
            return torch.utils.data.DataLoader(train_ds, batch_size=cfg.train_batch_size, **kw)
        sampler = data_mod.EpochBatchSampler(len(train_ds), cfg.train_batch_size, seed, ep, rank, world, start)
        return torch.utils.data.DataLoader(train_ds, batch_sampler=sampler, **kw)

    # ---- the loop
    pbar = _progress(None, accelerator, "train", total=max_steps, initial=global_step)
    # SIGTERM / SIGINT (preemption, Ctrl-C): finish the step, save a checkpoint, stop cleanly.
    stop = _StopRequest()
    stop.install()
    # webdataset streams differ in length per rank: ranks agree on "everyone has a batch" each step (one tiny
    # all-reduce + host read, only in this case), so no rank waits forever in DDP at an epoch's end.
    uneven = iterable and world > 1
    last_good = [None]
    try:
        acc_loss = None
        done = max_steps is not None and global_step >= max_steps
        while not done:
            if max_steps is None and epoch >= cfg.num_train_epochs:
                break
            used, started_at = 0, batch_in_epoch
            for batch in _agreed(loader_for(epoch, batch_in_epoch), accelerator, uneven):
                batch_in_epoch += 1
                skipped += batch["skipped"]
                weight = 1.0
                if batch["size"] == 0:
                    if world == 1 or last_good[0] is None:
                        continue
                    # every rank must join each gradient all-reduce: an all-unreadable batch contributes zero
                    batch, weight = last_good[0], 0.0
                last_good[0] = batch
                used += 1
                with accelerator.accumulate(kv_runner):
                    with accelerator.autocast():
                        loss = batch_loss(batch)
                        if weight != 1.0:
                            loss = loss * weight
                    accelerator.backward(loss)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                samples_seen += batch["size"] * world if weight else 0
                acc_loss = loss.detach() if acc_loss is None else acc_loss + loss.detach()
                if not accelerator.sync_gradients:
                    continue
                global_step += 1
                pending.append(acc_loss / accum)
                acc_loss = None
                pbar.update(1)
                if global_step % cfg.logging_steps == 0:
                    flush_losses()
                if global_step % cfg.save_steps == 0:
                    save_checkpoint()
                if cfg.validation_steps and global_step % cfg.validation_steps == 0:
                    run_validation()
                if max_steps is not None and global_step >= max_steps:
                    done = True
                    break
                # one process: check every step; several: agree at logging steps (a collective there anyway)
                if stop.requested(accelerator, every=1 if world == 1 else cfg.logging_steps, step=global_step):
                    result.interrupted = True
                    done = True
                    break
            if done:
                break
            if used == 0 and started_at == 0:
                raise TrainerConfigError(
                    f"no readable training sample ({skipped} unreadable image(s) skipped): check --data_json_file/--data_root_path or --train_shards"
                )
            epoch, batch_in_epoch = epoch + 1, 0

        flush_losses()
        if saved_at[0] != global_step:
            save_checkpoint()
        if cfg.validation_image and not result.interrupted and not (cfg.validation_steps and global_step % cfg.validation_steps == 0):
            run_validation()
        if accelerator.is_main_process:
            result.export_path = export(os.path.join(cfg.output_dir, "ip_adapter"))
    finally:
        stop.uninstall()
        pbar.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    result.global_step, result.samples_seen, result.skipped_images = global_step, samples_seen, skipped
    result.seconds = time.perf_counter() - t_start
    return result
