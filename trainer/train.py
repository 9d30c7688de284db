"""Training an IP-Adapter with the paper's SD1.5 recipe: a `Trainer` object and the short `train()` driver.

Read top to bottom: `train()` checks the config, `Trainer.setup` builds the run (accelerator -> resume state
checked -> frozen models -> adapter -> (cache pass) -> data -> optimizer -> resume), then the epoch loop feeds
batches to `Trainer.train_batch` -> `Trainer.step` (drops, fresh latent sample, DDPM noise, loss, AdamW) and
calls `save` and `validate` on schedule; at the end a last checkpoint, the export and a sample grid.
The demo (trainer/demo/adapters.py) builds a Trainer from its tiny parts and trains through the same `step`.
"""
from __future__ import annotations

import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedType, InitProcessGroupKwargs, ProjectConfiguration, gather_object
from tqdm.auto import tqdm

from ip_core.adapter import IPAdapter, save_adapter
from ip_core.checkpoint import load_adapter_state_dict
from ip_core.config import ENCODER_OUTPUTS, make_config
from ip_core.families import detect_config
from ip_core.embeds import features_for, unconditional_features
from ip_core.encoder_table import IMAGE_EMBEDS
from ip_core.errors import AdapterMismatchError, IPAdapterError
from ip_core.layers import layer_specs_from_unet

from . import cache as cache_mod
from . import datasets as data_mod
from . import speed
from . import training_checkpoints as ck
from .errors import TrainerConfigError, TrainingDivergedError
from .frozen_models import detect_sdxl, encode_text, encoder_module, freeze_, load_image_encoder, load_sd
from .ip_unet import IPAdapterUNet
from .recipe import DropRecipe, make_optimizer, recipe_loss, sample_latents
from .train_config import TrainConfig, for_model, save_resolved, validate
from .validation import generate, grid_array, make_grid, save_grid

# settings a resume must share with the run it continues (others, like --max_train_steps, may change)
RESUME_MUST_MATCH = (
    "pretrained_model_name_or_path", "image_encoder_path", "data_json_file", "train_shards", "resolution",
    "variant", "num_tokens", "train_batch_size", "gradient_accumulation_steps", "seed", "learning_rate",
    "weight_decay", "i_drop_rate", "t_drop_rate", "ti_drop_rate", "mixed_precision",
)


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


def build_adapter(unet, encoder_width: int, variant: str = "base", num_tokens: Optional[int] = None,
                  pretrained_path: Optional[str] = None) -> IPAdapter:
    """A fresh adapter for this UNet (released SD1.5 layout when the UNet is SD1.5), or the given weights."""
    layers = layer_specs_from_unet(unet)
    acfg = make_config(variant, layers, int(unet.config.cross_attention_dim), int(encoder_width), num_tokens=num_tokens)
    adapter = IPAdapter.from_config(acfg, layers)
    if pretrained_path:
        sd = load_adapter_state_dict(pretrained_path)
        check_pretrained_fits(sd, acfg, pretrained_path)
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
                f"--pretrained_ip_adapter_path: {pretrained_path!r} does not fit the adapter being trained "
                f"({acfg.description}): {str(e)[:400]}. Use a file of the same --variant/--num_tokens, base model and image encoder."
            ) from None
    return adapter


def check_pretrained_fits(sd: dict, acfg, path: str) -> None:
    """--pretrained_ip_adapter_path must be an adapter of the run's base model, variant and image encoder:
    named side by side here, before any step, instead of a shape error from load_state_dict."""
    try:
        have = detect_config(sd)
    except IPAdapterError as e:
        raise AdapterMismatchError(f"--pretrained_ip_adapter_path: {path!r} cannot be trained on: {e}") from None
    problems = []
    if (have.base_model, have.context_dim, have.num_layers) != (acfg.base_model, acfg.context_dim, acfg.num_layers):
        problems.append(f"it is made for {have.base_model_name} ({have.num_layers} layers, {have.context_dim}-wide text) and "
                        f"--pretrained_model_name_or_path is {acfg.base_model_name} ({acfg.num_layers} layers, {acfg.context_dim}-wide text)")
    if have.variant != acfg.variant:
        problems.append(f"it is a {have.variant} adapter and --variant is {acfg.variant}")
    elif have.encoder_width != acfg.encoder_width:
        named = lambda c: "" if c.encoder_name == "unknown" else f" ({c.encoder_name})"  # noqa: E731
        problems.append(f"it takes {have.encoder_output} of width {have.encoder_width}{named(have)} and --image_encoder_path "
                        f"gives width {acfg.encoder_width}{named(acfg)}")
    if problems:
        raise AdapterMismatchError(
            f"--pretrained_ip_adapter_path: {path!r} does not fit this run: " + "; ".join(problems)
            + ". Start from a file made for the same base model, --variant and image encoder, or leave the flag out."
        )


def encoder_width_for(encoder, variant: str) -> int:
    """Width of the encoder output this variant projects (ip_core.config.ENCODER_OUTPUTS)."""
    if ENCODER_OUTPUTS[variant] == IMAGE_EMBEDS and not getattr(encoder, "projection_trained", True):
        raise TrainerConfigError(
            f"--variant {variant} projects the encoder's image_embeds, and the --image_encoder_path weights have no "
            f"visual_projection (a CLIPVisionModel, not CLIPVisionModelWithProjection): its image_embeds would be random. "
            f"Give a CLIPVisionModelWithProjection folder (the official ViT-H/14 image encoder), or train --variant plus."
        )
    return encoder.projection_dim if ENCODER_OUTPUTS[variant] == IMAGE_EMBEDS else encoder.hidden_size


@torch.no_grad()
def full_face_tokens(encoder, asked: Optional[int]) -> int:
    """Full-face projects every penultimate hidden-state token (257 for a ViT/14 at 224 px): the encoder decides."""
    size = encoder.image_size
    n = int(encoder.encode(torch.zeros(1, 3, size, size, device=encoder.device, dtype=encoder.dtype)).penultimate_hidden_states.shape[1])
    if asked is not None and asked != n:
        raise TrainerConfigError(
            f"--num_tokens {asked}: a full-face adapter keeps every token of the encoder's hidden states, and "
            f"{encoder.name} gives {n}; leave --num_tokens out"
        )
    return n


def nonfinite_tensors(module: torch.nn.Module) -> list:
    """Names of the parameters holding NaN or inf (one device reduction per tensor, read once)."""
    names = [n for n, _ in module.named_parameters()]
    if not names:
        return []
    flags = torch.stack([torch.isfinite(p.detach()).all() for _, p in module.named_parameters()]).cpu().tolist()
    return [n for n, ok in zip(names, flags) if not ok]


# ---------------------------------------------------------------------------------------------- the Trainer

class Trainer:
    """One training run. `step` needs only the core (model, scheduler, optimizer, recipe, generators,
    accelerator); `setup` adds what a full run needs: config, frozen models, data, counters, checkpoints."""

    def __init__(self, model, scheduler, optimizer, recipe: DropRecipe, drop_gen: torch.Generator, step_gen: torch.Generator,
                 accelerator: Accelerator, runner=None, accumulation: int = 1):
        self.model, self.scheduler, self.optimizer, self.recipe = model, scheduler, optimizer, recipe
        self.drop_gen, self.step_gen = drop_gen, step_gen  # drops / (latent sample, noise, timesteps): resumable streams
        self.accelerator = accelerator
        self.runner = model if runner is None else runner  # the module whose gradients accelerate synchronises
        self.accumulation = accumulation
        self.part = (accelerator.process_index, accelerator.num_processes)  # this rank's rows of each global draw
        self.global_step = 0
        self._micro_losses = None
        # a full run (setup) also has:
        self.cfg: Optional[TrainConfig] = None
        self.result = TrainResult()
        self.epoch = self.batch_in_epoch = self.samples_seen = self.skipped = 0
        self._pending: list = []  # optimizer-step losses not yet read back to the host
        self._last_checkpoint: Optional[str] = None  # a checkpoint whose weights were checked finite
        self._saved_at: Optional[int] = None
        self._pbar = None
        self.sdxl, self.vae_dtype = False, None  # set by setup (the model decides)

    # ------------------------------------------------------------------ the step (shared with the demo)
    def step(self, latents: torch.Tensor, text_embeds: torch.Tensor, image_features: torch.Tensor, weight: float = 1.0,
             pooled: Optional[torch.Tensor] = None, time_ids: Optional[torch.Tensor] = None):
        """One micro-batch of the recipe: drops, noise, loss, backward; AdamW once the accumulation is complete.
        SDXL also passes the pooled text embedding and the size/crop time ids.

        Returns the optimizer step's mean loss (a device tensor: no host sync) when this micro-batch completed
        one, else None. weight 0 lets a rank with nothing to train on still join the gradient all-reduce.
        """
        acc = self.accelerator
        with acc.accumulate(self.runner):
            with acc.autocast():
                loss = recipe_loss(self.model, self.scheduler, latents, text_embeds, image_features, self.recipe, self.drop_gen, self.step_gen,
                                   pooled=pooled, time_ids=time_ids, part=self.part)
                if weight != 1.0:
                    loss = loss * weight
            acc.backward(loss)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        loss = loss.detach()
        self._micro_losses = loss if self._micro_losses is None else self._micro_losses + loss
        if not acc.sync_gradients:
            return None
        self.global_step += 1
        mean, self._micro_losses = self._micro_losses / self.accumulation, None
        return mean

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup(cls, cfg: TrainConfig) -> "Trainer":
        """Everything before the first step. `cfg` must be validated (train_config.validate)."""
        sdxl = detect_sdxl(cfg.pretrained_model_name_or_path)  # from the model's own UNet config, no weights read
        cfg = for_model(cfg, sdxl)  # default resolution; SDXL-incompatible choices fail here
        accelerator = _make_accelerator(cfg)
        _check_process_group(accelerator)
        device, rank = accelerator.device, accelerator.process_index
        weight_dtype = weight_dtype_for(accelerator.mixed_precision)
        if cfg.allow_tf32 and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if accelerator.is_main_process:
            os.makedirs(cfg.output_dir, exist_ok=True)

        # a checkpoint, its RNG file or the data file that cannot be used fails now, not after minutes of loading
        resume_path = ck.resolve_resume(cfg.resume_from_checkpoint, cfg.output_dir)
        state = rng = None
        if resume_path:
            state = ck.load_state(resume_path)
            _check_resume_config(state["config"], cfg, resume_path)
            _check_resume_world(state, accelerator.num_processes, resume_path)
            speed.check_resume(state["config"], cfg, resume_path)
            rng = ck.load_rng(resume_path, rank)
        if accelerator.is_main_process:
            save_resolved(cfg, os.path.join(cfg.output_dir, "config.json"))
        items = data_mod.load_json_items(cfg.data_json_file) if cfg.data_json_file else None
        data_mod.check_split(accelerator.num_processes, items=None if items is None else len(items),
                             shards=len(data_mod.expand_shards(cfg.train_shards)) if cfg.train_shards else None,
                             workers=cfg.dataloader_num_workers)

        seed = int(cfg.seed or 0)
        torch.manual_seed(seed + rank)
        # both on the accelerator: drawing drops, noise, timesteps and latent samples needs no host transfer. The
        # same streams on every rank: each draws for the global batch and keeps its rows (trainer.recipe), so the
        # run does not depend on how many processes share the global batch.
        drop_gen = torch.Generator(device=device).manual_seed(seed * 7919 + 1)
        step_gen = torch.Generator(device=device).manual_seed(seed * 7919 + 2)

        # ---- models: frozen ones in the mixed-precision dtype, the adapter in fp32
        models = load_sd(cfg.pretrained_model_name_or_path, cfg.single_file_config)
        models.encoder = load_image_encoder(cfg)
        num_tokens = full_face_tokens(models.encoder, cfg.num_tokens) if cfg.variant == "full-face" else cfg.num_tokens
        adapter = build_adapter(models.unet, encoder_width_for(models.encoder, cfg.variant), cfg.variant, num_tokens,
                                cfg.pretrained_ip_adapter_path)
        acfg = adapter.config
        model = IPAdapterUNet(models.unet, adapter, init_from_unet=cfg.pretrained_ip_adapter_path is None)
        freeze_(models.unet, device, weight_dtype)
        if cfg.gradient_checkpointing:
            models.unet.enable_gradient_checkpointing()
            models.unet.train()  # frozen; SD1.5 has no dropout, train() only enables the recomputation
        adapter.to(device=device, dtype=torch.float32).train()
        for m in (models.text_encoder, models.text_encoder_2, encoder_module(models.encoder)):
            freeze_(m, device, weight_dtype)
        vae_dtype = torch.float32 if sdxl else weight_dtype  # tutorial_train_sdxl.py: "vae of sdxl should use fp32"
        freeze_(models.vae, device, vae_dtype)
        speed.prepare_models(models, cfg)  # SDPA everywhere; --channels_last, --torch_compile
        recipe = _dropped_values(cfg, models, acfg, device, weight_dtype)

        # ---- optimizer, accelerate (only the adapter's forward is wrapped: DDP/DeepSpeed never see the UNet)
        optimizer = make_optimizer(model.trainable_parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                   optimizer_cls=speed.optimizer_class(cfg.use_8bit_adam))
        deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
        if deepspeed:  # no dataloader goes through prepare(), so DeepSpeed cannot infer the micro batch itself
            ds_cfg = accelerator.state.deepspeed_plugin.deepspeed_config
            if ds_cfg.get("train_micro_batch_size_per_gpu") in (None, "auto"):
                ds_cfg["train_micro_batch_size_per_gpu"] = cfg.train_batch_size
        kv_runner, optimizer = accelerator.prepare(model.adapter_kv, optimizer)
        model.set_adapter_runner(kv_runner)

        t = cls(model, models.scheduler, optimizer, recipe, drop_gen, step_gen, accelerator, runner=kv_runner,
                accumulation=cfg.gradient_accumulation_steps)
        t.cfg, t.models, t.adapter, t.adapter_config = cfg, models, adapter, acfg
        t.device, t.rank, t.world, t.weight_dtype, t.seed, t.deepspeed = device, rank, accelerator.num_processes, weight_dtype, seed, deepspeed
        t.sdxl, t.vae_dtype = sdxl, vae_dtype
        t.report = None if cfg.report_to in ("none", "") else cfg.report_to
        t.result = TrainResult(output_dir=cfg.output_dir, resumed_from=resume_path)
        t._setup_data(items)
        if state is not None:
            t.resume(state, rng, resume_path)
        if accelerator.is_main_process and t.report:
            accelerator.init_trackers("ip_adapter", config={k: v for k, v in cfg.to_dict().items() if isinstance(v, (int, float, str, bool))})
        return t

    def _setup_data(self, items) -> None:
        """The training dataset (JSON list, shards, or the cache built from either) and the run's length."""
        cfg, models = self.cfg, self.models
        if cfg.data_json_file:
            source = data_mod.ImageTextDataset(items, cfg.data_root_path, models.tokenizer, cfg.resolution, cfg.data_json_file,
                                               tokenizer_2=models.tokenizer_2)
        else:
            source = data_mod.TarShardDataset(
                data_mod.expand_shards(cfg.train_shards), models.tokenizer, cfg.resolution, self.seed, cfg.train_batch_size,
                self.rank, self.world, cfg.shuffle_buffer, tokenizer_2=models.tokenizer_2,
            )
        self.cached = cfg.cache_dir is not None
        if self.cached:
            fp = cache_mod.fingerprint(cfg, self.adapter_config)
            if not cache_mod.check_ready(cfg.cache_dir, fp):
                self._cache_pass(source, fp)
            self.dataset = cache_mod.CachedDataset(cfg.cache_dir)
            self.skipped = int(self.dataset.meta.get("skipped_images", 0))
            e, u = self.dataset.uncond()
            self.recipe.empty_text, self.recipe.uncond_features = e.to(self.device, self.weight_dtype), u.to(self.device, self.weight_dtype)
            self.scaling = float(self.dataset.meta["vae_scaling_factor"])
            if not cfg.validation_image:  # the cache replaces the frozen encoders: give the memory back
                models.vae = models.text_encoder = models.encoder = None
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        else:
            self.dataset = source
            self.scaling = float(models.vae.config.scaling_factor)
        self.iterable = isinstance(self.dataset, torch.utils.data.IterableDataset)
        self.per_epoch = None if self.iterable else data_mod.batches_per_epoch(len(self.dataset), cfg.train_batch_size, self.world)
        if cfg.max_train_steps is not None:
            self.max_steps = cfg.max_train_steps
        elif self.per_epoch is not None:
            self.max_steps = math.ceil(cfg.num_train_epochs * self.per_epoch / cfg.gradient_accumulation_steps)
        else:
            self.max_steps = None

    @torch.no_grad()
    def _cache_pass(self, source, fp: dict) -> None:
        """Run the frozen VAE, image encoder and text encoder once over the data; store their outputs."""
        cfg, models, acc, device = self.cfg, self.models, self.accelerator, self.device
        os.makedirs(cfg.cache_dir, exist_ok=True)
        if acc.is_main_process:
            cache_mod.clear_partial(cfg.cache_dir)
        acc.wait_for_everyone()
        if isinstance(source, torch.utils.data.IterableDataset):
            source.rank, source.world, source.buffer = self.rank, self.world, 1
            source.set_position(0, 0)
            ds = source
        else:
            ds = torch.utils.data.Subset(source, list(range(self.rank, len(source), self.world)))
        loader = torch.utils.data.DataLoader(ds, batch_size=cfg.train_batch_size, collate_fn=data_mod.collate, num_workers=cfg.dataloader_num_workers)
        writer = cache_mod.ChunkWriter(cfg.cache_dir, self.rank, cfg.cache_dtype)
        skipped = 0
        for batch in _progress(loader, acc, "cache pass"):
            data_mod.raise_bad_entries(batch)
            skipped += batch["skipped"]
            if batch["size"] == 0:
                continue
            dist = models.vae.encode(batch["image"].to(device, self.weight_dtype)).latent_dist
            feats = features_for(self.adapter_config, models.encoder.encode(batch["clip_image"].to(device, self.weight_dtype)))
            text = models.text_encoder(batch["input_ids"].to(device))[0]
            writer.add(latent_mean=dist.mean, latent_logvar=dist.logvar, features=feats, text_embeds=text)
        writer.flush()
        # every rank reports its chunks to the main process, which writes meta.json last
        chunks = gather_object([writer.written]) if self.world > 1 else [writer.written]
        skipped_all = acc.gather(torch.tensor([skipped], device=device)).sum().item() if self.world > 1 else skipped
        if acc.is_main_process:
            flat = [c for part in chunks for c in part]
            cache_mod.write_meta(cfg.cache_dir, fp, flat, skipped_all, self.recipe.empty_text, self.recipe.uncond_features,
                                 models.vae.config.scaling_factor)
        acc.wait_for_everyone()

    # ------------------------------------------------------------------ resume
    def resume(self, state: dict, rng: Optional[dict], path: str) -> None:
        """Weights, optimizer, grad scaler, counters, losses, data position and random streams of a checkpoint."""
        self.adapter.load_state_dict(state["adapter"])
        if self.deepspeed:  # ZeRO partitions the optimizer state: each rank wrote its part; DeepSpeed takes them all
            allowed = ck.deepspeed_optimizer_classes()
            self.optimizer.load_state_dict([ck.load_rank_file(path, f"optimizer_rank{r}.pt", allowed) for r in range(self.world)])
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler") is not None and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.global_step, self.epoch, self.batch_in_epoch = int(state["global_step"]), int(state["epoch"]), int(state["batch_in_epoch"])
        self.samples_seen, self.skipped = int(state["samples_seen"]), int(state["skipped_images"])
        self.result.losses = list(state.get("losses", []))
        if rng is not None:
            ck.set_rng_state(rng, self.drop_gen, self.step_gen)
        if self.per_epoch is not None and self.batch_in_epoch >= self.per_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        self._last_checkpoint, self._saved_at = path, self.global_step

    # ------------------------------------------------------------------ one loader batch
    def loader(self):
        """This epoch's batches from the current position (seeded order: a resume sees what the full run saw)."""
        cfg = self.cfg
        kw = dict(collate_fn=data_mod.collate, num_workers=cfg.dataloader_num_workers, pin_memory=self.device.type == "cuda",
                  persistent_workers=False)
        if self.iterable:
            self.dataset.set_position(self.epoch, self.batch_in_epoch)
            return torch.utils.data.DataLoader(self.dataset, batch_size=cfg.train_batch_size, **kw)
        sampler = data_mod.EpochBatchSampler(len(self.dataset), cfg.train_batch_size, self.seed, self.epoch, self.rank, self.world,
                                             self.batch_in_epoch)
        return torch.utils.data.DataLoader(self.dataset, batch_sampler=sampler, **kw)

    def encode(self, batch: dict):
        """A loader batch -> (latents, text embeddings, image features, SDXL extras) on the device, from the cache or
        through the frozen VAE and encoders. The latent is drawn anew from the VAE posterior every time. The extras
        are {} for SD1.5, {"pooled", "time_ids"} for SDXL (Trainer.step's keywords)."""
        dev, dt = self.device, self.weight_dtype
        extras = {}
        if self.cached:
            mean, logvar = batch["latent_mean"].to(dev, non_blocking=True), batch["latent_logvar"].to(dev, non_blocking=True)
            feats = batch["features"].to(dev, dt, non_blocking=True)
            text = batch["text_embeds"].to(dev, dt, non_blocking=True)
        else:
            m = self.models
            with torch.no_grad():
                # SDXL's VAE runs in fp32 even under mixed precision (tutorial_train_sdxl.py), so no autocast for it
                with torch.autocast(dev.type, enabled=not self.sdxl):
                    dist = m.vae.encode(batch["image"].to(dev, self.vae_dtype, non_blocking=True)).latent_dist
                mean, logvar = dist.mean, dist.logvar
                feats = features_for(self.adapter_config, m.encoder.encode(batch["clip_image"].to(dev, dt, non_blocking=True)))
                ids_2 = batch["input_ids_2"].to(dev, non_blocking=True) if self.sdxl else None
                text, pooled = encode_text(m, batch["input_ids"].to(dev, non_blocking=True), ids_2)
                if self.sdxl:
                    extras = {"pooled": pooled, "time_ids": batch["time_ids"].to(dev, dt, non_blocking=True)}
        return sample_latents(mean, logvar, self.step_gen, self.scaling, part=self.part), text, feats, extras

    def train_batch(self, batch: dict, weight: float = 1.0) -> bool:
        """Encode and step one loader batch; True when it completed an optimizer step (then log/save/validate)."""
        with self.accelerator.autocast():
            latents, text, feats, extras = self.encode(batch)
        loss = self.step(latents, text, feats, weight, **extras)
        self.samples_seen += batch["size"] * self.world if weight else 0
        if loss is None:
            return False
        self._pending.append(loss)
        self._pbar.update(1)
        if self.global_step % self.cfg.logging_steps == 0:
            self.log_losses()
        return True

    def log_losses(self) -> None:
        """Read the pending losses back (the one host sync per logging interval); stop on a NaN/inf loss."""
        if not self._pending:
            return
        vals = torch.stack(self._pending)
        if self.world > 1:
            vals = self.accelerator.reduce(vals, reduction="mean")
        vals = vals.float().cpu().tolist()
        first = self.global_step - len(vals) + 1
        self._pending.clear()
        bad = [first + i for i, v in enumerate(vals) if not math.isfinite(v)]
        if bad:
            self._diverged(f"the loss became {vals[bad[0] - first]} at step {bad[0]}")
        self.result.losses.extend(vals)
        if self.accelerator.is_main_process:
            mean = sum(vals) / len(vals)
            self._pbar.set_postfix(loss=f"{mean:.4f}", skipped=self.skipped, refresh=False)
            if self.report:
                self.accelerator.log({"train/loss": mean, "train/skipped_images": self.skipped, "train/epoch": self.epoch}, step=self.global_step)

    def _diverged(self, what: str):
        self.accelerator.end_training()
        where = self._last_checkpoint or "none (no checkpoint was written yet)"
        raise TrainingDivergedError(
            f"{what}; training stopped and nothing after the last good checkpoint was saved ({where}). Lower "
            f"--learning_rate, prefer --mixed_precision bf16 over fp16, or check the data; then resume with "
            f"--resume_from_checkpoint latest."
        )

    def _check_finite(self) -> None:
        """Weights are checked before anything is written that a user (or a resume) would take as good."""
        bad = nonfinite_tensors(self.adapter)
        if bad:
            self._diverged(f"{len(bad)} adapter tensor(s) became NaN/inf by step {self.global_step} (first: {bad[0]})")

    # ------------------------------------------------------------------ save, export, validate
    def export(self, path_base: str) -> str:
        ext = ".bin" if self.cfg.export_format == "bin" else ".safetensors"
        return str(save_adapter(self.adapter, path_base + ext, format=self.cfg.export_format))

    def save(self) -> Optional[str]:
        """A complete checkpoint folder (collective: every rank writes its RNG state); the main process's path."""
        cfg, acc = self.cfg, self.accelerator
        self.log_losses()  # never save weights that already saw a NaN step
        self._check_finite()
        tmp = ck.begin(cfg.output_dir, self.global_step) if acc.is_main_process else None
        acc.wait_for_everyone()
        tmp = tmp or ck.temp_dir(cfg.output_dir, self.global_step)
        ck.write_rng(tmp, self.rank, ck.rng_state(self.drop_gen, self.step_gen))
        if self.deepspeed:
            ck.write_rank_file(tmp, f"optimizer_rank{self.rank}.pt", self.optimizer.state_dict())
        acc.wait_for_everyone()
        path = None
        if acc.is_main_process:
            self.export(os.path.join(tmp, "ip_adapter"))
            payload = {
                "format": 1,
                "world": self.world,
                "global_step": self.global_step,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "samples_seen": self.samples_seen,
                "skipped_images": self.skipped,
                "adapter": {k: v.detach().cpu().clone() for k, v in self.adapter.state_dict().items()},
                "optimizer": None if self.deepspeed else self.optimizer.state_dict(),
                "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
                "losses": list(self.result.losses),
                "config": cfg.to_dict(),
            }
            path = ck.commit(tmp, cfg.output_dir, self.global_step, payload)
            ck.prune(cfg.output_dir, cfg.checkpoints_total_limit)
            self.result.checkpoint_path = path
        self._last_checkpoint = path or ck.checkpoint_dir(cfg.output_dir, self.global_step)
        self._saved_at = self.global_step
        acc.wait_for_everyone()
        return path

    def validate(self) -> None:
        """A sample grid (main process only) with the adapter as it is now."""
        cfg = self.cfg
        if not cfg.validation_image or not self.accelerator.is_main_process:
            return
        self.model.set_adapter_runner(self.model.adapter_kv)  # plain module: a rank-0-only forward must not touch DDP
        self.adapter.eval()
        try:
            with self.accelerator.autocast():
                rows = generate(
                    self.model, self.models, self.adapter_config, cfg.validation_image, cfg.validation_prompt, cfg.resolution,
                    cfg.validation_num_inference_steps, cfg.validation_guidance_scale, cfg.validation_ip_scale,
                    cfg.num_validation_images, cfg.validation_seed, self.device, self.weight_dtype,
                )
        finally:
            self.adapter.train()
            self.model.set_adapter_runner(self.runner)
        grid = make_grid(rows, min(cfg.resolution, 256))
        path = save_grid(grid, os.path.join(cfg.output_dir, "samples"), self.global_step)
        self.result.sample_grids.append(path)
        if self.report:
            for tracker in self.accelerator.trackers:
                if tracker.name == "tensorboard":
                    tracker.writer.add_image("validation", grid_array(grid), self.global_step)

    def finish(self) -> None:
        """Last checkpoint (unless this step has one), last grid, the export."""
        cfg = self.cfg
        self.log_losses()
        if self._saved_at != self.global_step:
            self.save()
        if cfg.validation_image and not self.result.interrupted and not (cfg.validation_steps and self.global_step % cfg.validation_steps == 0):
            self.validate()
        self._check_finite()  # every rank (the weights are the same): no rank waits on one that stopped
        if self.accelerator.is_main_process:
            self.result.export_path = self.export(os.path.join(cfg.output_dir, "ip_adapter"))


# ---------------------------------------------------------------------------------------------- the driver

def train(config: TrainConfig) -> TrainResult:
    cfg = validate(config)  # every setting and path, before any model is loaded
    t_start = time.perf_counter()
    t = Trainer.setup(cfg)
    acc, world = t.accelerator, t.world
    t._pbar = _progress(None, acc, "train", total=t.max_steps, initial=t.global_step)
    stop = _StopRequest()  # SIGTERM / SIGINT (preemption, Ctrl-C): finish the step, save a checkpoint, stop
    stop.install()
    # webdataset streams differ in length per rank: ranks agree on "everyone has a batch" each step (one tiny
    # all-reduce + host read, only in this case), so no rank waits forever in DDP at an epoch's end.
    uneven = t.iterable and world > 1
    last_good = None
    try:
        done = t.max_steps is not None and t.global_step >= t.max_steps
        while not done and not (t.max_steps is None and t.epoch >= cfg.num_train_epochs):
            used, started_at = 0, t.batch_in_epoch
            for batch in _agreed(t.loader(), acc, uneven):
                data_mod.raise_bad_entries(batch)
                t.batch_in_epoch += 1
                t.skipped += batch["skipped"]
                weight = 1.0
                if batch["size"] == 0:
                    if world == 1 or last_good is None:
                        continue
                    # every rank must join each gradient all-reduce: an all-unreadable batch contributes zero
                    batch, weight = last_good, 0.0
                last_good = batch
                used += 1
                if not t.train_batch(batch, weight):
                    continue
                if t.global_step % cfg.save_steps == 0:
                    t.save()
                if cfg.validation_steps and t.global_step % cfg.validation_steps == 0:
                    t.validate()
                if t.max_steps is not None and t.global_step >= t.max_steps:
                    done = True
                    break
                # one process: check every step; several: agree at logging steps (a collective there anyway)
                if stop.requested(acc, every=1 if world == 1 else cfg.logging_steps, step=t.global_step):
                    t.result.interrupted = done = True
                    break
            if done:
                break
            if used == 0 and started_at == 0:
                raise TrainerConfigError(
                    f"no readable training sample ({t.skipped} unreadable image(s) skipped): check --data_json_file/--data_root_path or --train_shards"
                )
            t.epoch, t.batch_in_epoch = t.epoch + 1, 0
        t.finish()
    finally:
        stop.uninstall()
        t._pbar.close()
    acc.wait_for_everyone()
    acc.end_training()
    r = t.result
    r.global_step, r.samples_seen, r.skipped_images = t.global_step, t.samples_seen, t.skipped
    r.seconds = time.perf_counter() - t_start
    return r


# ---------------------------------------------------------------------------------------------- helpers

def _make_accelerator(cfg: TrainConfig) -> Accelerator:
    # accelerate keeps one process-wide state; a second run in the same process (tests, notebooks) may want
    # another mixed precision. The distributed part (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    handlers = []
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" and not torch.cuda.is_available():
        # DeepSpeed on CPU: accelerate 1.15 only forms the process group for a named backend (else every rank
        # believes it is the only one): gloo, as DeepSpeed's CPU accelerator uses
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    return Accelerator(
        kwargs_handlers=handlers,
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with=None if cfg.report_to in ("none", "") else cfg.report_to,
        project_config=ProjectConfiguration(project_dir=cfg.output_dir, logging_dir=os.path.join(cfg.output_dir, cfg.logging_dir)),
    )


def _check_process_group(accelerator: Accelerator) -> None:
    """Processes launched together must form one group; otherwise each would train alone, all writing the
    same output folder (accelerate's GPU backends on a machine without GPUs do exactly that)."""
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched <= 1 or accelerator.num_processes == launched:
        return
    why = "launch every process with torchrun or accelerate launch, and on CPU set ACCELERATE_USE_CPU=1 (DDP) or use DeepSpeed"
    raise TrainerConfigError(
        f"{launched} processes were launched (WORLD_SIZE={launched}) but they joined a group of "
        f"{accelerator.num_processes}: each would train alone and overwrite the others' checkpoints. {why[0].upper()}{why[1:]}"
    )


def _check_resume_world(state: dict, world: int, path: str) -> None:
    """The data position counts each process's batches, and DeepSpeed's optimizer is split per process: a
    checkpoint continues under the number of processes that wrote it (older checkpoints do not say: accepted)."""
    wrote = int(state.get("world", world))
    if wrote != world:
        raise TrainerConfigError(
            f"--resume_from_checkpoint: {path!r} was written by {wrote} process(es) and this run has {world}; its data "
            f"position and optimizer state belong to {wrote}. Resume with {wrote} process(es), or start a new --output_dir "
            f"from its weights (--pretrained_ip_adapter_path {os.path.join(path, 'ip_adapter.safetensors')})"
        )


def _check_resume_config(old: dict, cfg: TrainConfig, path: str) -> None:
    diff = [k for k in RESUME_MUST_MATCH if old.get(k) != getattr(cfg, k)]
    if diff:
        raise TrainerConfigError(
            f"--resume_from_checkpoint: {path!r} was trained with other settings: "
            + ", ".join(f"--{k} {old.get(k)!r} (now {getattr(cfg, k)!r})" for k in diff)
            + "; pass the same values, or start a new --output_dir"
        )


@torch.no_grad()
def _dropped_values(cfg: TrainConfig, models, acfg, device, dtype) -> DropRecipe:
    """The recipe's two "dropped" values, computed once: the empty prompt's embedding and the features of no
    image (base: zeros before the projection; plus: the encoder's output for an all-zero normalised image)."""
    ids_2 = data_mod.tokenize(models.tokenizer_2, [""]).to(device) if models.tokenizer_2 is not None else None
    empty_text, empty_pooled = encode_text(models, data_mod.tokenize(models.tokenizer, [""]).to(device), ids_2)
    size = models.encoder.image_size
    probe = features_for(acfg, models.encoder.encode(torch.zeros(1, 3, size, size, device=device, dtype=dtype)))
    uncond = unconditional_features(acfg, probe, encode_pixels=models.encoder.encode, image_size=size)
    return DropRecipe(empty_text, uncond, cfg.i_drop_rate, cfg.t_drop_rate, cfg.ti_drop_rate, empty_pooled=empty_pooled)


class _StopRequest:
    """Turns SIGTERM / SIGINT into "save and stop at the next step boundary" (main thread only)."""

    def __init__(self):
        self.flag = False
        self.old = {}

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.flag:  # a second signal: the user insists
            raise KeyboardInterrupt
        self.flag = True

    def uninstall(self):
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


def _progress(it, accelerator, desc, total=None, initial=0):
    return tqdm(it, desc=desc, total=total, initial=initial, disable=not accelerator.is_local_main_process, dynamic_ncols=True)
