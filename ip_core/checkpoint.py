"""Reading and writing adapter files without ever running code from them.

Formats are recognised from the bytes, not the extension (renamed files are common): safetensors, the
torch zip format, and legacy torch pickles. Pickles go through torch.load(weights_only=True), which only
rebuilds tensors and plain containers and refuses anything else before it can run.
"""
from __future__ import annotations

import os
import pickle
import struct
import tempfile
from pathlib import Path
from typing import Optional

import torch

from .errors import AdapterFileError, ForeignFileError

PREFIX_ALIASES = {
    "image_proj.": "image_proj",
    "ip_adapter.": "ip_adapter",
    # Some third-party exporters name the two halves after the official training wrapper's attributes.
    "image_proj_model.": "image_proj",
    "adapter_modules.": "ip_adapter",
}
SAFE_EXTENSIONS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")

# Other model files that end up where adapters belong, told apart by their key names (first match wins:
# checkpoints hold text encoders, OpenCLIP files hold a text tower, LoRAs name the layers they change).
# kind -> (what to call it, key prefixes, key substrings).
FOREIGN_KINDS = {
    "checkpoint": ("a model checkpoint (UNet, VAE and text encoder in one file)",
                   ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.", "conditioner."), ()),
    "lora": ("a LoRA", ("lora_unet_", "lora_te", "lycoris_"), (".lora_up.", ".lora_down.", ".lora_A.", ".lora_B.", ".lora.up.", ".lora.down.")),
    "controlnet": ("a ControlNet", ("control_model.", "input_hint_block.", "controlnet_cond_embedding."), ()),
    "clip_vision": ("a CLIP vision model (an image encoder)", ("vision_model.", "visual.", "visual_projection."), ()),
    "vae": ("a VAE", ("encoder.conv_in.", "decoder.conv_in.", "encoder.down.", "decoder.up."), ()),
    "diffusion_model": ("a diffusion model (UNet) on its own", ("input_blocks.", "middle_block.", "down_blocks.", "conv_in."), ()),
    "text_encoder": ("a text encoder", ("text_model.", "transformer.text_model.", "encoder.block."), ()),
}


def foreign_kind(keys) -> Optional[str]:
    """Which FOREIGN_KINDS entry a set of weight names belongs to, or None."""
    keys = [k for k in keys if isinstance(k, str)]
    for kind, (_, prefixes, parts) in FOREIGN_KINDS.items():
        if any(k.startswith(prefixes) or any(p in k for p in parts) for k in keys):
            return kind
    return None


def _foreign_file_error(path: Path, flat: dict) -> Optional[ForeignFileError]:
    inner = flat.get("state_dict")  # training checkpoints wrap their weights
    kind = foreign_kind(inner if isinstance(inner, dict) else flat)
    if kind is None:
        return None
    return ForeignFileError(
        f"{path.name}: this file is {FOREIGN_KINDS[kind][0]}, not an IP-Adapter "
        f"({len(flat)} weights such as {', '.join(sorted(map(str, flat))[:3])}). Load it where that kind of model is "
        "loaded, and give an IP-Adapter file (image_proj and ip_adapter weights) here.",
        kind,
    )


def sniff_format(path) -> str:
    """'safetensors', 'torch-zip', 'torch-pickle' or 'unknown', from the file's first bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 0 < header_len < 100_000_000:
            return "safetensors"
    if head[:1] == b"\x80":
        return "torch-pickle"
    return "unknown"


def _read_safetensors(path: Path, remedy: str = "download it again") -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # SafetensorError is not importable under one stable name across versions
        raise AdapterFileError(
            f"{path.name}: not a readable safetensors file ({e}). It is probably truncated or corrupt: {remedy}."
        ) from None


def _read_pickle(path: Path, safe_alternative: str = "the .safetensors release of this adapter") -> dict:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise AdapterFileError(
            f"{path.name}: refused to load. The pickle holds objects other than tensors and plain containers, "
            f"which could run code, so nothing in it was executed ({str(e).splitlines()[0][:200]}). "
            f"Use {safe_alternative}, or convert the file where you trust it."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, struct.error) as e:
        raise AdapterFileError(
            f"{path.name}: the file is truncated or corrupt ({str(e).splitlines()[0][:200]}); download it again."
        ) from None


def _split_prefixed(flat: dict, path: Path) -> dict:
    out = {"image_proj": {}, "ip_adapter": {}}
    unknown = []
    for key, value in flat.items():
        for prefix, part in PREFIX_ALIASES.items():
            if key.startswith(prefix):
                out[part][key[len(prefix):]] = value
                break
        else:
            unknown.append(key)
    if unknown:
        foreign = _foreign_file_error(path, flat) if len(unknown) == len(flat) else None
        if foreign is not None:
            raise foreign
        sample = ", ".join(sorted(map(str, unknown))[:5])
        raise AdapterFileError(
            f"{path.name}: not an IP-Adapter file: {len(unknown)} of {len(flat)} keys have neither an image_proj. "
            f"nor an ip_adapter. prefix (e.g. {sample}). Use an IP-Adapter file (image_proj and ip_adapter weights)."
        )
    return out


def _check_tensors(sd: dict, path: Path) -> dict:
    for part in ("image_proj", "ip_adapter"):
        for key, value in sd[part].items():
            if not isinstance(value, torch.Tensor):
                raise AdapterFileError(f"{path.name}: {part}.{key} is a {type(value).__name__}, not a tensor; the file is not an adapter.")
    if not sd["image_proj"] and not sd["ip_adapter"]:
        raise AdapterFileError(f"{path.name}: the file holds no IP-Adapter weights.")
    return sd


def read_tensor_file(path, safe_alternative: str = "the .safetensors release of this adapter"):
    """(format, contents) of a weights file, read without running code; every failure names the file.

    safe_alternative: what to use instead when a pickle is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise AdapterFileError(f"{path}: no such file. Check the path.")
    if path.stat().st_size == 0:
        raise AdapterFileError(f"{path.name}: the file is empty (an interrupted download?); download it again.")
    fmt = sniff_format(path)
    if fmt == "safetensors":
        return fmt, _read_safetensors(path)
    if fmt in ("torch-zip", "torch-pickle"):
        return fmt, _read_pickle(path, safe_alternative)
    raise AdapterFileError(
        f"{path.name}: unrecognised file format (neither safetensors nor a torch file); "
        "it may be truncated, an HTML error page, or another kind of file. Download it again."
    )


def load_adapter_state_dict(path) -> dict:
    """{"image_proj": {...}, "ip_adapter": {...}} from a .safetensors or pickle file, safely."""
    path = Path(path)
    fmt, data = read_tensor_file(path)
    if fmt == "safetensors":
        return _check_tensors(_split_prefixed(data, path), path)
    if not isinstance(data, dict):
        raise AdapterFileError(f"{path.name}: holds a {type(data).__name__}, not a dict of weights; not an IP-Adapter file.")
    if "image_proj" in data or "ip_adapter" in data:
        sd = {"image_proj": dict(data.get("image_proj") or {}), "ip_adapter": dict(data.get("ip_adapter") or {})}
        extra = sorted(set(data) - {"image_proj", "ip_adapter"})
        if extra:
            raise AdapterFileError(f"{path.name}: unexpected top-level entries {extra[:5]} beside image_proj / ip_adapter.")
        return _check_tensors(sd, path)
    return _check_tensors(_split_prefixed(data, path), path)


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_adapter_state_dict(sd: dict, path, format: Optional[str] = None) -> Path:
    """Write the released layout: flat prefixed safetensors (default) or the nested .bin dict.

    Tensors are cloned contiguous so nothing shares storage (a shared tensor is what makes some savers
    silently drop weights). The write is atomic: a crash never leaves half a file under the final name.
    """
    path = Path(path)
    if format is None:
        format = "bin" if path.suffix in (".bin", ".pt", ".pth") else "safetensors"
    if format not in ("safetensors", "bin"):
        raise ValueError(f"unknown format {format!r}: use 'safetensors' or 'bin'")
    clean = {
        part: {k: v.detach().to("cpu").contiguous().clone() for k, v in sd[part].items()} for part in ("image_proj", "ip_adapter")
    }
    if format == "safetensors":
        from safetensors.torch import save_file

        flat = {f"{part}.{k}": v for part in ("image_proj", "ip_adapter") for k, v in clean[part].items()}
        _atomic_write(path, lambda tmp: save_file(flat, tmp, metadata={"format": "pt"}))
    else:
        _atomic_write(path, lambda tmp: torch.save(clean, tmp))
    return path
