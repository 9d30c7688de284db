"""Load IPAdapter and Inspect IPAdapter: files from models/ipadapter, described by their detected variant."""
from __future__ import annotations

import os

import torch

from . import host
from ..ip_core.families import load_adapter
from ..ip_core.errors import AdapterFileError, ForeignFileError
from .common import CATEGORY, LoadedAdapter, error_boundary, require, with_advice
from .families import family_for, unused_inputs

# ip_core.checkpoint.FOREIGN_KINDS -> (ComfyUI's folder for it, the core node that loads it).
FOLDER_FOR_KIND = {
    "checkpoint": ("checkpoints", "Load Checkpoint"),
    "lora": ("loras", "Load LoRA"),
    "controlnet": ("controlnet", "Load ControlNet Model"),
    "clip_vision": ("clip_vision", "Load CLIP Vision"),
    "vae": ("vae", "Load VAE"),
    "diffusion_model": ("diffusion_models", "Load Diffusion Model"),
    "text_encoder": ("text_encoders", "Load CLIP"),
}


class IPALoadAdapter:
    DESCRIPTION = (
        "Loads an IP-Adapter file from the models/ipadapter folder (and ipadapter paths in extra_model_paths.yaml). "
        "The variant (base/plus/full-face, SD1.5/SDXL, tokens, which CLIP vision it needs) is read from the file's "
        "contents, so any file name works. .safetensors, and .bin/.pt/.pth read without running pickled code."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IPA_ADAPTER",)
    RETURN_NAMES = ("ipadapter",)
    OUTPUT_TOOLTIPS = ("The loaded adapter; its detected variant is shown on the node after it runs.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        try:
            files = host.adapter_files()
        except Exception:  # listing must never break the node menu
            files = []
        return {
            "required": {
                "adapter_name": (files, {"tooltip": "An IP-Adapter weight file from models/ipadapter (any name)."}),
            }
        }

    @error_boundary
    def load(self, adapter_name):
        path, folders = host.adapter_path(adapter_name)
        if path is None:
            raise AdapterFileError(
                f"IP-Adapter file '{adapter_name}' was not found in the ipadapter folders ({', '.join(folders)}). "
                "Put the file in models/ipadapter (or a folder listed under 'ipadapter:' in extra_model_paths.yaml) "
                "and refresh (press R)."
            )
        try:
            adapter = load_adapter(path, device="cpu", dtype=torch.float32)
        except ForeignFileError as e:
            folder, loader = FOLDER_FOR_KIND[e.kind]
            raise with_advice(e, f"Move it to models/{folder} ({loader} reads it from there); models/ipadapter is for IP-Adapter files.") from None
        loaded = LoadedAdapter(adapter, os.path.basename(path))
        # The web extension (web/ipadapter_info.js) shows the text and hides, on the Apply IPAdapter nodes this
        # output feeds, the family-specific inputs (FAMILY_INPUTS) this adapter does not read.
        ui = {"text": [loaded.description], "family": [family_for(adapter.config).NAME],
              "unused_inputs": unused_inputs(adapter.config)}
        return {"ui": ui, "result": (loaded,)}


class IPAInspectAdapter:
    DESCRIPTION = "Describes a loaded IP-Adapter: variant, base model, tokens, layers, parameters and the CLIP vision model it needs."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("info",)
    OUTPUT_TOOLTIPS = ("One line of text describing the adapter.",)
    FUNCTION = "inspect"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ipadapter": ("IPA_ADAPTER", {"tooltip": "The adapter from Load IPAdapter."})}}

    @error_boundary
    def inspect(self, ipadapter):
        a = require(ipadapter, "IPA_ADAPTER", "ipadapter", LoadedAdapter)
        text = f"{a.description}; {a.adapter.num_parameters():,} parameters"
        return {"ui": {"text": [text]}, "result": (text,)}
