"""Image prompt embeds on disk: safetensors only, with the adapter that made them in the metadata.

A file holds cond / uncond tokens (and the encoder features they were projected from) plus metadata:
the adapter's layout signature, description and weight fingerprint, the encoder, and a free-text note.
Loading reads only safetensors (never a pickle: the widely used pack's .ipadpt files are torch.save
pickles, which can run code), checks every field, and returns embeds that still refuse another adapter.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import atomic_write, sniff_format
from .embeds import ImagePromptEmbeds, check_embeds_values
from .errors import AdapterFileError, IPAdapterError

FORMAT = "ipadapter-image-prompt-embeds"
FORMAT_VERSION = "1"
_TENSORS = ("cond", "uncond", "cond_features", "uncond_features", "region_masks")  # ImagePromptEmbeds.state_dict
_REQUIRED_META = ("signature", "description", "encoder_name", "adapter_fingerprint")


def save_embeds(embeds: ImagePromptEmbeds, path, note: str = "") -> Path:
    """Write `embeds` to `path` (.safetensors, atomically)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in embeds.state_dict().items()}
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "note": str(note), **embeds.metadata()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return path


def load_embeds(path) -> ImagePromptEmbeds:
    path = Path(path)
    if not path.is_file():
        raise AdapterFileError(f"{path}: no such embeds file; check the name and where it was saved.")
    fmt = sniff_format(path)
    if fmt != "safetensors":
        what = "a pickle (torch.save, as the widely used pack's .ipadpt files)" if fmt.startswith("torch") else "not a safetensors file"
        raise AdapterFileError(
            f"{path.name}: {what}. Only safetensors embeds files are read: a pickle can run code, so nothing in it was "
            "loaded. Encode the images again and save them with Save Image Prompt Embeds.")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = set(f.keys())
            tensors = {k: f.get_tensor(k) for k in keys & set(_TENSORS)}
    except Exception as e:
        raise AdapterFileError(f"{path.name}: not a readable safetensors file ({e}); it is truncated or corrupt.") from None
    if meta.get("format") != FORMAT:
        raise AdapterFileError(
            f"{path.name}: not an image prompt embeds file (its metadata has no format '{FORMAT}'; keys: "
            f"{', '.join(sorted(keys)[:5]) or 'none'}). Is it a model? Save embeds with Save Image Prompt Embeds.")
    if meta.get("format_version") != FORMAT_VERSION:
        raise AdapterFileError(f"{path.name}: embeds format version {meta.get('format_version')!r}; this pack reads version {FORMAT_VERSION}. Update the pack.")
    missing = [k for k in _REQUIRED_META if k not in meta] + [k for k in ("cond", "uncond") if k not in tensors]
    if ("cond_features" in tensors) != ("uncond_features" in tensors):
        missing.append("uncond_features" if "cond_features" in tensors else "cond_features")
    if missing or keys - set(_TENSORS):
        raise AdapterFileError(f"{path.name}: damaged embeds file (missing {missing}, unexpected {sorted(keys - set(_TENSORS))}); "
                               "encode the images again and save them with Save Image Prompt Embeds.")
    embeds = ImagePromptEmbeds(tensors["cond"], tensors["uncond"], meta["signature"], meta["description"],
                               meta["encoder_name"], meta["adapter_fingerprint"], tensors.get("cond_features"),
                               tensors.get("uncond_features"), tensors.get("region_masks"))
    try:  # before any conversion: int8 or bool tensors are damage, not numbers to cast
        check_embeds_values(embeds, path.name)
    except IPAdapterError as e:
        raise AdapterFileError(str(e)) from None
    return embeds.to(dtype=torch.float32)


def note_of(path) -> str:
    """The free-text note saved with an embeds file ("" if none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("note", "")
