"""Loading the frozen models: SD1.5 from a diffusers folder (or hub id) or a single-file .safetensors, and the
image encoder through ip_core's backends (transformers folder or OpenCLIP checkpoint)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from ip_core import encoders
from ip_core.errors import IPAdapterError

from .errors import TrainerConfigError
from .train_config import TrainConfig


@dataclass
class FrozenModels:
    scheduler: Any  # DDPMScheduler (training noise)
    unet: Any
    vae: Any = None
    text_encoder: Any = None
    tokenizer: Any = None
    encoder: Any = None  # ip_core.encoders.ImageEncoder

    @property
    def cross_attention_dim(self) -> int:
        return int(self.unet.config.cross_attention_dim)


def load_sd(path: str, single_file_config: Optional[str] = None, need_all: bool = True) -> FrozenModels:
    """UNet + DDPM scheduler (+ VAE, text encoder, tokenizer when need_all) from a diffusers folder, a hub id
    or a single-file .safetensors (configs from single_file_config when offline)."""
    if os.path.isfile(path):
        return _load_single_file(path, single_file_config)
    try:
        scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet")
        if not need_all:
            return FrozenModels(scheduler=scheduler, unet=unet)
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder")
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae")
    except (OSError, ValueError) as e:
        raise TrainerConfigError(f"--pretrained_model_name_or_path: cannot load the SD model from {path!r}: {e}") from e
    return FrozenModels(scheduler=scheduler, unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer)


def _load_single_file(path: str, single_file_config: Optional[str]) -> FrozenModels:
    kwargs = dict(safety_checker=None, requires_safety_checker=False)
    if single_file_config:
        kwargs.update(config=single_file_config, local_files_only=True)
    try:
        pipe = StableDiffusionPipeline.from_single_file(path, **kwargs)
    except Exception as e:  # diffusers raises many kinds here (hub access, key layout)
        raise TrainerConfigError(
            f"--pretrained_model_name_or_path: cannot load the single-file checkpoint {path!r} ({type(e).__name__}: {str(e)[:300]}). "
            "diffusers needs the SD1.5 model configs and tokenizer to build the pipeline: offline, pass "
            "--single_file_config DIR, a diffusers SD1.5 folder (model_index.json, */config.json, tokenizer/; the weights "
            "are not needed), or run once online so the hub cache holds them, or convert the file to a diffusers folder."
        ) from e
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    return FrozenModels(scheduler=scheduler, unet=pipe.unet, vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)


def image_encoder_arch(arch: str, flag: str = "--image_encoder_arch"):
    """An open_clip architecture name, or a JSON open_clip model config file (custom towers) read as a dict."""
    if arch.endswith(".json"):
        try:
            with open(arch, "r", encoding="utf-8") as fh:
                return json.load(fh)
        except (OSError, ValueError, RecursionError) as e:
            raise TrainerConfigError(f"{flag}: cannot read the open_clip model config {arch!r} ({e}); give an open_clip name such as ViT-H-14 or a JSON model config") from None
    return arch


def load_image_encoder(cfg: TrainConfig):
    """ip_core's encoder backends: a transformers CLIPVisionModelWithProjection folder, or an OpenCLIP checkpoint
    file built as --image_encoder_arch (ip_core.encoders.load_image_encoder picks by folder vs file)."""
    path = cfg.image_encoder_path
    try:
        return encoders.load_image_encoder(path, arch=image_encoder_arch(cfg.image_encoder_arch))
    except IPAdapterError as e:
        raise type(e)(f"--image_encoder_path {path!r}: {e}") from None
    except Exception as e:
        raise TrainerConfigError(
            f"--image_encoder_path: cannot load the image encoder from {path!r} ({type(e).__name__}: {str(e)[:300]}); "
            f"give a transformers CLIPVisionModelWithProjection folder or an OpenCLIP {cfg.image_encoder_arch} checkpoint "
            f"(--image_encoder_arch names its architecture)"
        ) from e


def encoder_module(encoder) -> torch.nn.Module:
    """The nn.Module inside an ip_core encoder (for .to / requires_grad_)."""
    if isinstance(encoder, torch.nn.Module):
        return encoder
    m = getattr(encoder, "module", None)  # ip_core.encoders.ImageEncoder.module
    if isinstance(m, torch.nn.Module):
        return m
    for name in ("model", "module", "visual", "vision_model"):
        m = getattr(encoder, name, None)
        if isinstance(m, torch.nn.Module):
            return m
    raise TypeError(f"cannot find the torch module of encoder {type(encoder).__name__}")


def freeze_(module: Optional[torch.nn.Module], device, dtype) -> None:
    if module is None:
        return
    module.requires_grad_(False)
    module.eval()
    module.to(device=device, dtype=dtype)
