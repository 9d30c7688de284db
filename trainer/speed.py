"""GPU-readiness switches of the trainer: SDPA in every attention, channels_last, torch.compile, 8-bit AdamW.

None of these changes the recipe: SDPA and channels_last compute the same function (to float rounding),
torch.compile runs the same graph, and the 8-bit AdamW is the one approximation, taken only on request.
Each is checked before any model loads (`check_config`) and applied in `Trainer.setup` (`prepare_models`,
`optimizer_class`).
"""
from __future__ import annotations

import importlib
from typing import Optional

import torch

from .errors import TrainerConfigError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
BITSANDBYTES_PIP = "pip install bitsandbytes"


# ---------------------------------------------------------------------------------------------- checks (no model)

def check_config(cfg) -> None:
    """Refuse what cannot run, before any model loads: a missing bitsandbytes, an unknown compile backend/mode."""
    if cfg.use_8bit_adam:
        import_bitsandbytes()
    if cfg.torch_compile:
        import torch._dynamo

        known = torch._dynamo.list_backends(exclude_tags=())
        if cfg.torch_compile_backend not in known:
            raise TrainerConfigError(
                f"--torch_compile_backend: {cfg.torch_compile_backend!r} is not a torch.compile backend here; "
                f"use one of {sorted(known)} (inductor is the fast one)"
            )
        if cfg.torch_compile_mode is not None and cfg.torch_compile_mode not in COMPILE_MODES:
            raise TrainerConfigError(f"--torch_compile_mode: {cfg.torch_compile_mode!r} is not one of {list(COMPILE_MODES)}")
    elif cfg.torch_compile_mode is not None:
        raise TrainerConfigError("--torch_compile_mode needs --torch_compile")


def import_bitsandbytes():
    try:
        return importlib.import_module("bitsandbytes")
    except ImportError as e:
        raise TrainerConfigError(
            f"--use_8bit_adam needs the bitsandbytes package, which is not importable here ({e}); "
            f"install it with `{BITSANDBYTES_PIP}` or leave --use_8bit_adam out (torch's AdamW)"
        ) from None


def check_resume(old: dict, cfg, path: str) -> None:
    """An optimizer state resumes only into the optimizer that wrote it (8-bit and fp32 AdamW states differ)."""
    was = bool(old.get("use_8bit_adam", False))  # checkpoints from before the flag were fp32 AdamW
    if was != cfg.use_8bit_adam:
        raise TrainerConfigError(
            f"--resume_from_checkpoint: {path!r} was trained {'with' if was else 'without'} --use_8bit_adam and its "
            f"optimizer state only fits that optimizer; pass {'--use_8bit_adam' if was else '--no-use_8bit_adam'}, or start a new --output_dir"
        )


# ---------------------------------------------------------------------------------------------- the optimizer

def optimizer_class(use_8bit_adam: bool):
    """torch's AdamW (the official choice), or bitsandbytes' AdamW8bit (same update, 8-bit blockwise moments)."""
    if not use_8bit_adam:
        return torch.optim.AdamW
    return import_bitsandbytes().optim.AdamW8bit


# ---------------------------------------------------------------------------------------------- models

def use_sdpa(models) -> None:
    """Every attention the trainer runs goes through torch's scaled_dot_product_attention.

    UNet: IPAdapterUNet installs IPAttnProcessor (ip_core.attention, SDPA) and diffusers' AttnProcessor2_0 on
    every layer; checked here. VAE: AttnProcessor2_0 set explicitly (a model whose config chose another
    processor would otherwise keep it). transformers encoders: attn_implementation "sdpa". OpenCLIP towers:
    torch.nn.MultiheadAttention without its CPU fast path (which does not use SDPA)."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    from .attn_processor import IPAttnProcessor

    other = sorted({type(p).__name__ for p in models.unet.attn_processors.values() if not isinstance(p, (IPAttnProcessor, AttnProcessor2_0))})
    if other:
        raise TypeError(f"the UNet has attention processors {other}; build it through IPAdapterUNet (IPAttnProcessor / AttnProcessor2_0)")
    if getattr(models, "vae", None) is not None:
        models.vae.set_attn_processor(AttnProcessor2_0())
    for m in _transformers_modules(models):
        if m.config._attn_implementation == "sdpa":
            continue
        if not hasattr(m, "set_attn_implementation"):  # transformers < 4.56 picks the attention class when loading
            raise TrainerConfigError(
                f"{type(m).__name__} was loaded with attn_implementation {m.config._attn_implementation!r}; this transformers "
                f"version cannot switch it to 'sdpa' after loading: upgrade transformers (pip install -U transformers)"
            )
        m.set_attn_implementation("sdpa")
    if getattr(models, "encoder", None) is not None:
        from .frozen_models import encoder_module

        _mha_through_sdpa(encoder_module(models.encoder))


def _mha_through_sdpa(module: torch.nn.Module) -> None:
    """torch.nn.MultiheadAttention (OpenCLIP towers) takes a fused "fast path" for frozen modules that on CPU is
    bmm + softmax; without it, it calls scaled_dot_product_attention. Switched off only during these modules' calls."""
    for m in module.modules():
        if isinstance(m, torch.nn.MultiheadAttention) and not getattr(m, "_sdpa_hooks", False):
            m.register_forward_pre_hook(_fastpath_off)
            m.register_forward_hook(_fastpath_restore, always_call=True)
            m._sdpa_hooks = True


_FASTPATH_SAVED: list = []


def _fastpath_off(module, args):
    _FASTPATH_SAVED.append(torch.backends.mha.get_fastpath_enabled())
    torch.backends.mha.set_fastpath_enabled(False)


def _fastpath_restore(module, args, output):
    torch.backends.mha.set_fastpath_enabled(_FASTPATH_SAVED.pop())


def _transformers_modules(models) -> list:
    from transformers import PreTrainedModel

    from .frozen_models import encoder_module

    found = [getattr(models, "text_encoder", None), getattr(models, "text_encoder_2", None)]
    if getattr(models, "encoder", None) is not None:
        found.append(encoder_module(models.encoder))
    return [m for m in found if isinstance(m, PreTrainedModel)]


def to_channels_last(models) -> None:
    """UNet and VAE convolutions in channels_last (NHWC) memory: faster convolutions on tensor cores and oneDNN."""
    for m in (models.unet, getattr(models, "vae", None)):
        if m is not None:
            m.to(memory_format=torch.channels_last)


def compile_unet(unet, backend: str = "inductor", mode: Optional[str] = None) -> None:
    """torch.compile the frozen UNet in place (nn.Module.compile: same module, same state_dict keys). The adapter's
    K'/V' reach it through the processors' context, so their gradients flow through the compiled graph."""
    unet.compile(backend=backend, mode=mode)


def prepare_models(models, cfg) -> None:
    """Apply the switches to the frozen models (after freezing, processors and gradient checkpointing are set)."""
    use_sdpa(models)
    if cfg.channels_last:
        to_channels_last(models)
    if cfg.torch_compile:
        compile_unet(models.unet, cfg.torch_compile_backend, cfg.torch_compile_mode)
