"""Typed training configuration: every command-line flag, a config file (YAML/TOML), and checks.

The official tutorial_train.py flags keep their names and defaults so its users switch by changing the
command. Every value is checked here against its field's type (whether it came from a flag, a YAML/TOML file
or Python), then against its range, before any model is loaded, so a typo costs seconds, not minutes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from typing import Any, Optional

import yaml

from ip_core.config import DEFAULT_TOKENS
from ip_core.encoder_table import OPENCLIP_ARCHS
from ip_core.text import read_text

from . import speed
from .datasets import expand_shards, open_rgb
from .errors import TrainerConfigError

VARIANTS = ("base", "plus", "full-face")  # the trainer's variants (ip_core.config.VARIANTS)


@dataclass
class TrainConfig:
    # --- the official tutorial_train.py flags (same names, same defaults) ---
    pretrained_model_name_or_path: Optional[str] = None
    pretrained_ip_adapter_path: Optional[str] = None
    data_json_file: Optional[str] = None
    data_root_path: str = ""
    image_encoder_path: Optional[str] = None
    output_dir: str = "sd-ip_adapter"
    logging_dir: str = "logs"
    resolution: Optional[int] = None  # the model's default: 512 (SD1.5, tutorial_train.py) / 1024 (SDXL, tutorial_train_sdxl.py)
    learning_rate: float = 1e-4
    weight_decay: float = 1e-2
    num_train_epochs: int = 100
    train_batch_size: int = 8
    dataloader_num_workers: int = 0
    save_steps: int = 2000
    mixed_precision: Optional[str] = None
    report_to: str = "tensorboard"
    local_rank: int = -1
    # tutorial_train_plus.py
    num_tokens: Optional[int] = None  # default by variant: 4 (base) / 16 (plus)

    # --- extras ---
    variant: str = "base"
    max_train_steps: Optional[int] = None
    resume_from_checkpoint: Optional[str] = None  # a checkpoint folder or "latest"
    seed: Optional[int] = 0
    gradient_accumulation_steps: int = 1
    config: Optional[str] = None
    train_shards: Optional[str] = None  # webdataset tar shards, brace patterns allowed: "data/{00000..00099}.tar"
    shuffle_buffer: int = 1000  # webdataset in-shard shuffle buffer (samples)
    # recipe (paper values; changing them leaves the paper's recipe)
    i_drop_rate: float = 0.05
    t_drop_rate: float = 0.05
    ti_drop_rate: float = 0.05
    # models
    single_file_config: Optional[str] = None  # diffusers SD1.5 config folder for a single-file checkpoint (offline)
    image_encoder_arch: str = "ViT-H-14"  # OpenCLIP architecture of an OpenCLIP checkpoint file
    # speed
    cache_dir: Optional[str] = None  # cache VAE latent moments, CLIP features and text embeddings here, train from it
    cache_dtype: str = "float16"
    gradient_checkpointing: bool = False  # recompute frozen-UNet activations in backward (memory for time)
    allow_tf32: bool = False
    # GPU readiness (trainer/speed.py; SDPA is always on)
    channels_last: bool = False  # UNet/VAE convolutions in NHWC memory
    torch_compile: bool = False  # torch.compile the frozen UNet
    torch_compile_backend: str = "inductor"
    torch_compile_mode: Optional[str] = None  # default / reduce-overhead / max-autotune / max-autotune-no-cudagraphs
    use_8bit_adam: bool = False  # bitsandbytes AdamW8bit (8-bit optimizer moments)
    # output
    export_format: str = "safetensors"  # or "bin"
    checkpoints_total_limit: Optional[int] = None
    logging_steps: int = 10  # host sync (loss.item) only every N optimizer steps
    # validation sampling
    validation_image: list = field(default_factory=list)
    validation_prompt: list = field(default_factory=list)
    validation_steps: int = 0  # 0: only at the end when validation images are given
    validation_num_inference_steps: int = 30
    validation_guidance_scale: float = 7.5
    validation_ip_scale: float = 1.0
    validation_seed: int = 0
    num_validation_images: int = 1

    def tokens(self) -> int:
        return self.num_tokens if self.num_tokens is not None else DEFAULT_TOKENS.get(self.variant, 4)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TrainerConfigError(
                f"unknown setting(s) {unknown}; known settings are the command-line flag names without '--' "
                f"(see `python -m trainer train --help`)"
            )
        return cls(**d)


# ---------------------------------------------------------------------------------------------- argparse

_HELP = {
    "pretrained_model_name_or_path": "SD1.5 model: a diffusers folder, a hub id, or a single-file .safetensors.",
    "pretrained_ip_adapter_path": "Start from these adapter weights (.safetensors/.bin, released layout).",
    "data_json_file": "JSON list of {\"image_file\": ..., \"text\": ...} (official format) or JSON lines.",
    "data_root_path": "Folder the image_file entries are relative to.",
    "image_encoder_path": "transformers CLIPVisionModelWithProjection folder, or an OpenCLIP checkpoint file.",
    "output_dir": "Where checkpoints, exports, logs and samples go.",
    "logging_dir": "TensorBoard folder, relative to output_dir.",
    "resolution": "Training resolution (short side resize + centre crop); default 512 for SD1.5, 1024 for SDXL.",
    "learning_rate": "AdamW learning rate (fixed).",
    "weight_decay": "AdamW weight decay.",
    "num_train_epochs": "Epochs (ignored when --max_train_steps is given).",
    "train_batch_size": "Batch size per device.",
    "dataloader_num_workers": "Data loading worker processes (0: main process).",
    "save_steps": "Checkpoint (and export) every N optimizer steps.",
    "mixed_precision": "fp16/bf16: frozen UNet, VAE and encoders in that dtype, adapter in fp32.",
    "report_to": "tensorboard (default), wandb, comet_ml, all, or none.",
    "local_rank": "Accepted for compatibility; accelerate sets ranks.",
    "num_tokens": "Image tokens: 4 (base) / 16 (plus) by default; full-face keeps every encoder token (257 for ViT-H/14).",
    "variant": "base (linear projection, 4 tokens), plus (Resampler, 16 tokens) or full-face (MLP on all 257 hidden-state tokens).",
    "max_train_steps": "Stop after this many optimizer steps (overrides --num_train_epochs).",
    "resume_from_checkpoint": "A checkpoint folder, or 'latest' (newest complete one in output_dir).",
    "seed": "Seed for data order, drops, noise and timesteps (reproducible runs and resumes).",
    "gradient_accumulation_steps": "Micro-batches per optimizer step.",
    "config": "YAML or TOML file with any of these settings (flag names); command-line flags win.",
    "train_shards": "webdataset tar shards (image + .txt/.json caption per key); brace patterns allowed.",
    "single_file_config": "Folder with diffusers SD1.5 configs+tokenizer for a single-file checkpoint (offline).",
    "image_encoder_arch": f"OpenCLIP architecture of an OpenCLIP checkpoint file: a name ({', '.join(OPENCLIP_ARCHS)}) or an open_clip model config .json.",
    "cache_dir": "Cache pass: store VAE latent moments, CLIP features and text embeddings here and train from them.",
    "cache_dtype": "float16 or float32 storage of the cache.",
    "export_format": "safetensors (default) or bin.",
    "channels_last": "UNet and VAE convolutions in channels_last (NHWC) memory format (faster on tensor cores).",
    "torch_compile": "torch.compile the frozen UNet (first steps are slow while it compiles).",
    "torch_compile_backend": "torch.compile backend (inductor; aot_eager/eager to debug).",
    "torch_compile_mode": "torch.compile mode: default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs.",
    "use_8bit_adam": "bitsandbytes' 8-bit AdamW (less optimizer memory; needs `pip install bitsandbytes`).",
    "logging_steps": "Log (and sync the host) every N optimizer steps.",
    "validation_image": "Reference image(s) for sample grids.",
    "validation_prompt": "Prompt(s) for sample grids (default: empty prompt, image only).",
    "validation_steps": "Sample grids every N optimizer steps (0: only at the end).",
}

_CHOICES = {
    "mixed_precision": ["no", "fp16", "bf16"],
    "variant": list(VARIANTS),
    "export_format": ["safetensors", "bin"],
    "cache_dtype": ["float16", "float32"],
}


def _base_type(f) -> str:
    """'int', 'float', 'str', 'bool' or 'list' for a TrainConfig field (annotations are strings here)."""
    t = str(f.type)
    return t[len("Optional["):-1] if t.startswith("Optional[") else t


_ARG_TYPES = {"int": int, "float": float, "str": str}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer train",
        description="Train an IP-Adapter (SD1.5 recipe of the paper). Flags of the official tutorial_train.py work unchanged.",
    )
    # Every default is SUPPRESS so we can tell which flags were given and let them win over --config.
    for f in fields(TrainConfig):
        flag = f"--{f.name}"
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "help": _HELP.get(f.name, f.name.replace("_", " "))}
        if f.type in (bool, "bool"):
            kw["action"] = argparse.BooleanOptionalAction
        elif f.name in ("validation_image", "validation_prompt"):
            kw["nargs"] = "+"
        else:
            kw["type"] = _ARG_TYPES[_base_type(f)]
            if f.name in _CHOICES:
                kw["choices"] = _CHOICES[f.name]
        parser.add_argument(flag, **kw)
    return parser


def read_config_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise TrainerConfigError(f"--config: no such file {path!r}; give a YAML (.yaml/.yml) or TOML (.toml) file")
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(read_text(path))
        elif suffix in (".yaml", ".yml"):
            data = yaml.safe_load(read_text(path)) or {}
        elif suffix == ".json":
            data = json.loads(read_text(path))
        else:
            raise TrainerConfigError(f"--config: {path!r} has suffix {suffix!r}; use .yaml, .yml, .toml or .json")
    except TrainerConfigError:
        raise
    except Exception as e:  # parse errors: say which file and what the parser said
        raise TrainerConfigError(f"--config: cannot parse {path!r}: {e}") from e
    if not isinstance(data, dict):
        raise TrainerConfigError(f"--config: {path!r} must hold a mapping of setting names to values")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise TrainerConfigError(f"--config: {path!r} has non-text setting name(s) {bad[:3]}; use the flag names")
    return {k.replace("-", "_"): v for k, v in data.items()}


def parse_train_args(argv=None) -> TrainConfig:
    """Flags > config file > defaults. Raises TrainerConfigError (argparse errors exit with code 2)."""
    ns = build_parser().parse_args(argv)
    given = vars(ns)
    values: dict[str, Any] = {}
    if given.get("config"):
        values.update(read_config_file(given["config"]))
    values.update(given)
    env_rank = int(os.environ.get("LOCAL_RANK", -1))
    if env_rank != -1:
        values["local_rank"] = env_rank
    return typed(TrainConfig.from_dict(values))


# ---------------------------------------------------------------------------------------------- types

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _typed(name: str, kind: str, v):
    """v as the field's type, or TrainerConfigError. Never truncates (2.9 is not an int) or guesses."""
    flag = f"--{name}"
    if kind == "bool":
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in _TRUE + _FALSE:
            return v.strip().lower() in _TRUE
        raise TrainerConfigError(f"{flag}: {v!r} is not true or false")
    if kind == "int":
        if isinstance(v, str):
            try:
                v = int(v.strip(), 10)
            except ValueError:
                raise TrainerConfigError(f"{flag}: {v!r} is not a whole number") from None
        if isinstance(v, float) and math.isfinite(v) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise TrainerConfigError(f"{flag}: {v!r} is not a whole number (give e.g. {flag} 8; fractions are not rounded)")
        return v
    if kind == "float":
        if isinstance(v, str):
            try:
                v = float(v.strip())
            except ValueError:
                raise TrainerConfigError(f"{flag}: {v!r} is not a number") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TrainerConfigError(f"{flag}: {v!r} is not a number")
        if not math.isfinite(v):
            raise TrainerConfigError(f"{flag}: {v!r} is not a finite number")
        return float(v)
    if kind == "str":
        if not isinstance(v, str):
            raise TrainerConfigError(
                f"{flag}: {v!r} is a {type(v).__name__}, not text; in a config file, quote it ({name}: \"{v}\")"
            )
        return v
    if kind == "list":  # validation_image / validation_prompt: one text or a list of texts
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, (list, tuple)) or not all(isinstance(x, str) for x in items):
            raise TrainerConfigError(f"{flag}: {v!r} is not a text or a list of texts")
        return list(items)
    raise AssertionError(f"TrainConfig.{name}: no rule for type {kind}")  # a new field needs a rule above


def typed(cfg: TrainConfig) -> TrainConfig:
    """A copy of cfg with every value checked against (and converted to) its field's type."""
    values = {}
    for f in fields(TrainConfig):
        v = getattr(cfg, f.name)
        if v is None and f.name in ("validation_image", "validation_prompt"):
            v = []
        if v is None and (str(f.type).startswith("Optional[") or f.default is None):
            values[f.name] = None
            continue
        if v is None:
            raise TrainerConfigError(f"--{f.name}: a value is required (default {f.default!r})")
        values[f.name] = _typed(f.name, _base_type(f), v)
    return TrainConfig(**values)


# ---------------------------------------------------------------------------------------------- checks

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise TrainerConfigError(msg)


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check every setting's type, range and path. Never loads a model. Returns the checked (typed) copy."""
    cfg = typed(cfg)
    _require(
        not os.path.exists(cfg.output_dir) or os.path.isdir(cfg.output_dir),
        f"--output_dir: {cfg.output_dir!r} exists and is not a folder; give a folder path (it is created if missing)",
    )
    _require(bool(cfg.output_dir), "--output_dir: give a folder for checkpoints and exports")
    _require(bool(cfg.pretrained_model_name_or_path), "--pretrained_model_name_or_path is required: a diffusers SD1.5 folder or single-file .safetensors")
    p = cfg.pretrained_model_name_or_path
    if os.path.isdir(p):
        for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
            _require(
                os.path.isdir(os.path.join(p, sub)),
                f"--pretrained_model_name_or_path: {p!r} has no {sub!r} subfolder; give a diffusers model folder "
                f"(unet/, vae/, text_encoder/, tokenizer/, scheduler/) or a single-file .safetensors",
            )
    elif os.path.isfile(p):
        suffix = os.path.splitext(p)[1].lower()
        _require(
            suffix == ".safetensors",
            f"--pretrained_model_name_or_path: {p!r} is a {suffix or 'suffix-less'} file; only single-file .safetensors "
            f"checkpoints are loaded (pickled .ckpt files can run code); convert it or use a diffusers folder",
        )
        if cfg.single_file_config is not None:
            _require(
                os.path.isdir(cfg.single_file_config),
                f"--single_file_config: no such folder {cfg.single_file_config!r}; give a diffusers SD1.5 folder (configs and tokenizer; weights not needed)",
            )
    else:
        _require(
            bool(_HUB_ID.match(p)) and not p.startswith((".", "/", "~")),
            f"--pretrained_model_name_or_path: no such file or folder {p!r}; give a diffusers folder, a single-file .safetensors or a hub id",
        )

    _require(bool(cfg.image_encoder_path), "--image_encoder_path is required: a transformers CLIPVisionModelWithProjection folder or an OpenCLIP checkpoint file")
    _require(
        os.path.exists(cfg.image_encoder_path) or bool(_HUB_ID.match(cfg.image_encoder_path)),
        f"--image_encoder_path: no such file or folder {cfg.image_encoder_path!r}; give a transformers CLIP vision folder or an OpenCLIP checkpoint",
    )
    if cfg.image_encoder_arch.endswith(".json"):
        _require(os.path.isfile(cfg.image_encoder_arch), f"--image_encoder_arch: no such file {cfg.image_encoder_arch!r}")
    if os.path.isdir(cfg.image_encoder_path):
        _require(
            os.path.isfile(os.path.join(cfg.image_encoder_path, "config.json")),
            f"--image_encoder_path: folder {cfg.image_encoder_path!r} has no config.json; give a transformers CLIPVisionModelWithProjection folder",
        )

    # data: exactly one source
    has_json = bool(cfg.data_json_file)
    has_shards = bool(cfg.train_shards)
    _require(has_json or has_shards, "no training data: give --data_json_file (with --data_root_path) or --train_shards")
    _require(not (has_json and has_shards), "give either --data_json_file or --train_shards, not both")
    if has_json:
        _require(os.path.isfile(cfg.data_json_file), f"--data_json_file: no such file {cfg.data_json_file!r}")
        if cfg.data_root_path:
            _require(os.path.isdir(cfg.data_root_path), f"--data_root_path: no such folder {cfg.data_root_path!r}")
    if has_shards:
        shards = expand_shards(cfg.train_shards)
        missing = [s for s in shards if not os.path.isfile(s)]
        _require(not missing, f"--train_shards: {len(missing)} of {len(shards)} shard(s) missing, first {missing[:3]}")

    if cfg.pretrained_ip_adapter_path is not None:
        _require(os.path.isfile(cfg.pretrained_ip_adapter_path), f"--pretrained_ip_adapter_path: no such file {cfg.pretrained_ip_adapter_path!r}")

    # numbers
    _require(cfg.variant in VARIANTS, f"--variant: {cfg.variant!r} is not one of {list(VARIANTS)}")
    _require(cfg.resolution is None or (cfg.resolution >= 8 and cfg.resolution % 8 == 0), f"--resolution: {cfg.resolution} must be a positive multiple of 8 (the VAE downsamples by 8)")
    _require(cfg.learning_rate > 0, f"--learning_rate: {cfg.learning_rate} must be > 0 (the official value is 1e-4)")
    _require(cfg.weight_decay >= 0, f"--weight_decay: {cfg.weight_decay} must be >= 0")
    _require(cfg.train_batch_size >= 1, f"--train_batch_size: {cfg.train_batch_size} must be >= 1")
    _require(cfg.num_train_epochs >= 1, f"--num_train_epochs: {cfg.num_train_epochs} must be >= 1")
    _require(cfg.dataloader_num_workers >= 0, f"--dataloader_num_workers: {cfg.dataloader_num_workers} must be >= 0")
    _require(cfg.save_steps >= 1, f"--save_steps: {cfg.save_steps} must be >= 1")
    _require(cfg.gradient_accumulation_steps >= 1, f"--gradient_accumulation_steps: {cfg.gradient_accumulation_steps} must be >= 1")
    _require(cfg.logging_steps >= 1, f"--logging_steps: {cfg.logging_steps} must be >= 1")
    _require(cfg.max_train_steps is None or cfg.max_train_steps >= 1, f"--max_train_steps: {cfg.max_train_steps} must be >= 1")
    _require(cfg.tokens() >= 1, f"--num_tokens: {cfg.num_tokens} must be >= 1")
    _require(cfg.shuffle_buffer >= 1, f"--shuffle_buffer: {cfg.shuffle_buffer} must be >= 1")
    rates = (cfg.i_drop_rate, cfg.t_drop_rate, cfg.ti_drop_rate)  # finite: typed() refused inf / nan
    _require(all(r >= 0 for r in rates) and sum(rates) <= 1, f"drop rates {rates} must be >= 0 and sum to <= 1 (--i_drop_rate, --t_drop_rate, --ti_drop_rate)")
    _require(cfg.mixed_precision in (None, "no", "fp16", "bf16"), f"--mixed_precision: {cfg.mixed_precision!r} is not one of no, fp16, bf16")
    _require(cfg.export_format in ("safetensors", "bin"), f"--export_format: {cfg.export_format!r} is not safetensors or bin")
    _require(cfg.cache_dtype in ("float16", "float32"), f"--cache_dtype: {cfg.cache_dtype!r} is not float16 or float32")
    _require(cfg.checkpoints_total_limit is None or cfg.checkpoints_total_limit >= 1, "--checkpoints_total_limit must be >= 1")
    _require(cfg.validation_steps >= 0, f"--validation_steps: {cfg.validation_steps} must be >= 0")
    _require(cfg.validation_num_inference_steps >= 1, "--validation_num_inference_steps must be >= 1")
    _require(cfg.num_validation_images >= 1, f"--num_validation_images: {cfg.num_validation_images} must be >= 1")
    for img in cfg.validation_image:
        _require(os.path.isfile(img), f"--validation_image: no such file {img!r}")
        try:
            open_rgb(img)
        except Exception as e:
            raise TrainerConfigError(f"--validation_image: {img!r} is not a readable image ({type(e).__name__}); give a .png/.jpg file") from None
    _require(
        not cfg.validation_prompt or cfg.validation_image,
        "--validation_prompt needs --validation_image (IP-Adapter samples are conditioned on a reference image)",
    )

    # reporting backends must be importable now, not after the models are loaded
    if cfg.report_to not in ("none", ""):
        wanted = ["tensorboard", "wandb", "comet_ml"] if cfg.report_to == "all" else [r.strip() for r in cfg.report_to.split(",")]
        for r in wanted:
            _require(r in ("tensorboard", "wandb", "comet_ml"), f"--report_to: {r!r} is not tensorboard, wandb, comet_ml, all or none")
            mod = {"tensorboard": "torch.utils.tensorboard", "wandb": "wandb", "comet_ml": "comet_ml"}[r]
            try:
                __import__(mod)
            except Exception:
                raise TrainerConfigError(f"--report_to {r}: the {r} package is not installed; pip install {r} or pass --report_to none") from None

    if cfg.resume_from_checkpoint not in (None, "latest"):
        _require(
            os.path.isdir(cfg.resume_from_checkpoint),
            f"--resume_from_checkpoint: no such checkpoint folder {cfg.resume_from_checkpoint!r}; give a checkpoint-N folder or 'latest'",
        )
    if cfg.cache_dir is not None and os.path.exists(cfg.cache_dir):
        _require(os.path.isdir(cfg.cache_dir), f"--cache_dir: {cfg.cache_dir!r} exists and is not a folder")
    speed.check_config(cfg)  # bitsandbytes present, torch.compile backend/mode known
    return cfg


def save_resolved(cfg: TrainConfig, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(cfg.to_dict(), fh, indent=2, sort_keys=True)
    os.replace(tmp, path)


DEFAULT_RESOLUTION = {False: 512, True: 1024}  # by "is SDXL": the official scripts' --resolution defaults


def for_model(cfg: TrainConfig, sdxl: bool) -> TrainConfig:
    """cfg completed and checked for the base model found in --pretrained_model_name_or_path (SDXL or not):
    the default resolution, and the choices SDXL training does not offer, refused before any weight loads."""
    if cfg.resolution is None:
        cfg = replace(cfg, resolution=DEFAULT_RESOLUTION[sdxl])
    if sdxl:
        name = cfg.pretrained_model_name_or_path
        _require(cfg.variant != "full-face",
                 f"--variant full-face: {name!r} is an SDXL model and SDXL full-face adapters have no released layout; "
                 f"train --variant base or plus on SDXL, or full-face on an SD1.5 model")
        _require(cfg.cache_dir is None,
                 f"--cache_dir: the cache pass stores one text encoder's output and no SDXL time ids, and {name!r} is an "
                 f"SDXL model; leave --cache_dir out (the frozen encoders then run every step)")
        _require(not cfg.validation_image,
                 f"--validation_image: sample grids use the SD1.5 sampling loop and {name!r} is an SDXL model; leave "
                 f"--validation_image out and try the exported adapter in ComfyUI or diffusers")
    return cfg
