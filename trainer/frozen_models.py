"""Loading the frozen models: SD1.5 or SDXL from a diffusers folder (or hub id), SD1.5 from a single-file
.safetensors, and the image encoder through ip_core's backends (transformers folder or OpenCLIP checkpoint).

SDXL is read from the model itself (never from a flag that could disagree with it): a UNet whose config has
addition_embed_type "text_time" is SDXL-like and needs the second text encoder (text_encoder_2 / tokenizer_2);
a folder with only one of the two is refused."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from ip_core import encoders
from ip_core.errors import IPAdapterError
from ip_core.text import read_text

from .errors import TrainerConfigError


@dataclass
class FrozenModels:
    scheduler: Any  # DDPMScheduler (training noise)
    unet: Any
    vae: Any = None
    text_encoder: Any = None
    tokenizer: Any = None
    encoder: Any = None  # ip_core.encoders.ImageEncoder
    text_encoder_2: Any = None  # SDXL: CLIPTextModelWithProjection (pooled embedding + penultimate states)
    tokenizer_2: Any = None

    @property
    def cross_attention_dim(self) -> int:
        return int(self.unet.config.cross_attention_dim)

    @property
    def sdxl(self) -> bool:
        return is_sdxl_unet_config(self.unet.config)


def is_sdxl_unet_config(config) -> bool:
    """SDXL's extra conditioning: pooled text embedding + size/crop time ids (UNet addition_embed_type text_time)."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    return get("addition_embed_type", None) == "text_time"


def detect_sdxl(path: str) -> bool:
    """Whether the pretrained model is SDXL, from its UNet config alone (no weights read); a folder whose UNet and
    text encoders disagree is refused here, before anything heavy loads. Single files are SD1.5 (load_sd)."""
    if os.path.isfile(path):
        return False
    try:
        config = UNet2DConditionModel.load_config(path, subfolder="unet")
    except (OSError, ValueError) as e:
        raise TrainerConfigError(f"--pretrained_model_name_or_path: cannot read the UNet config of {path!r}: {e}") from e
    sdxl = is_sdxl_unet_config(config)
    if os.path.isdir(path):
        has_2 = [sub for sub in ("text_encoder_2", "tokenizer_2") if os.path.isdir(os.path.join(path, sub))]
        if sdxl and len(has_2) < 2:
            raise TrainerConfigError(
                f"--pretrained_model_name_or_path: {path!r} has an SDXL UNet (addition_embed_type 'text_time', "
                f"cross_attention_dim {config.get('cross_attention_dim')}) but no text_encoder_2/ and tokenizer_2/ "
                f"subfolders; give a complete diffusers SDXL folder"
            )
        if not sdxl and has_2:
            raise TrainerConfigError(
                f"--pretrained_model_name_or_path: {path!r} has {'/'.join(has_2)} (SDXL's second text encoder) but its "
                f"UNet has addition_embed_type {config.get('addition_embed_type')!r}, not SDXL's 'text_time'; the folder "
                f"mixes two models: give a consistent diffusers SD1.5 or SDXL folder"
            )
    return sdxl


def load_sd(path: str, single_file_config: Optional[str] = None, need_all: bool = True) -> FrozenModels:
    """UNet + DDPM scheduler (+ VAE, text encoder(s), tokenizer(s) when need_all) from a diffusers folder, a hub id
    or a single-file .safetensors (configs from single_file_config when offline). SDXL (detect_sdxl) adds
    text_encoder_2 / tokenizer_2."""
    if os.path.isfile(path):
        return _load_single_file(path, single_file_config)
    sdxl = detect_sdxl(path)
    try:
        scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet")
        if not need_all:
            return FrozenModels(scheduler=scheduler, unet=unet)
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder")
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae")
        if sdxl:
            tokenizer_2 = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer_2")
            text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(path, subfolder="text_encoder_2")
    except (OSError, ValueError) as e:
        raise TrainerConfigError(f"--pretrained_model_name_or_path: cannot load the SD model from {path!r}: {e}") from e
    models = FrozenModels(scheduler=scheduler, unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer)
    if sdxl:
        models.text_encoder_2, models.tokenizer_2 = text_encoder_2, tokenizer_2
        width = text_encoder.config.hidden_size + text_encoder_2.config.hidden_size
        if width != models.cross_attention_dim:
            raise TrainerConfigError(
                f"--pretrained_model_name_or_path: {path!r}: the two text encoders give {text_encoder.config.hidden_size} + "
                f"{text_encoder_2.config.hidden_size} = {width} channels but the UNet's cross_attention_dim is "
                f"{models.cross_attention_dim}; the folder mixes models"
            )
    return models


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
            return json.loads(read_text(arch))
        except (OSError, ValueError, RecursionError) as e:
            raise TrainerConfigError(f"{flag}: cannot read the open_clip model config {arch!r} ({e}); give an open_clip name such as ViT-H-14 or a JSON model config") from None
    return arch


def load_image_encoder(cfg):  # cfg: a TrainConfig (not imported: train_config's checks import this module)
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


def encode_text(models: FrozenModels, input_ids: torch.Tensor, input_ids_2: Optional[torch.Tensor] = None):
    """Token ids -> (text embeddings for cross-attention, pooled embedding or None).

    SD1.5: the text encoder's last hidden state (tutorial_train.py). SDXL (tutorial_train_sdxl.py): both encoders'
    penultimate hidden states concatenated on channels, and text_encoder_2's projected pooled embedding.
    """
    if models.text_encoder_2 is None:
        return models.text_encoder(input_ids)[0], None
    if input_ids_2 is None:
        raise ValueError("SDXL text encoding needs the second tokenizer's ids (input_ids_2)")
    h1 = models.text_encoder(input_ids, output_hidden_states=True).hidden_states[-2]
    out2 = models.text_encoder_2(input_ids_2, output_hidden_states=True)
    return torch.cat([h1, out2.hidden_states[-2]], dim=-1), out2[0]
