"""Loader presets: which adapter file and which CLIP vision file a preset means, found by name, then by contents.

A preset names a released adapter per base model (the widely used pack's preset labels, so its workflows
keep their meaning). Files are first looked up by their released names; a file renamed by the user is
found by what its weights are (variant, tokens, encoder), read from the safetensors header without loading
the weights. FaceID presets' adapters take an InsightFace embedding; like the pack, they also return the
ViT-H CLIP vision model (FaceID Plus / PlusV2 need it). Host-neutral: callers pass the file names and a way
to turn a name into a path.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from .checkpoint import split_prefixed, load_adapter_state_dict, sniff_format
from .config import KOLORS_ENCODER, AdapterConfig
from .families import detect_config
from .encoder_table import ENCODERS, FACE_ENCODER, PENULTIMATE, encoder_file_for, encoder_name_for
from .errors import AdapterMismatchError, IPAdapterError
from .layers import BASE_MODEL_NAMES

_H, _G, _FACE = "ViT-H/14", "ViT-bigG/14", FACE_ENCODER[0]
_H_HIDDEN = next(e.dims.width for e in ENCODERS if e.name == _H)  # FaceID Plus's CLIP input width
# Released files are .safetensors or .bin; other extensions are not looked up by name.
NAME_EXTENSIONS = (".safetensors", ".bin")


@dataclass(frozen=True)
class Layout:
    """What an adapter's weights show for a preset (read from keys and shapes)."""

    variant: str
    num_tokens: int
    encoder_name: str
    clip_width: int = 0  # FaceID Plus: the CLIP hidden states' width it also takes (0: none)

    def fits(self, config: AdapterConfig, family: str) -> bool:
        return (config.base_model, config.variant, config.num_tokens, config.encoder_name, config.clip_width) == (
            family, self.variant, self.num_tokens, self.encoder_name, self.clip_width)

    def describe(self, family: str) -> str:
        clip = f" + {encoder_name_for(PENULTIMATE, self.clip_width)} CLIP" if self.clip_width else ""
        return f"{BASE_MODEL_NAMES.get(family, family)} {self.variant}, {self.num_tokens} tokens, {self.encoder_name}{clip}"


@dataclass(frozen=True)
class Release:
    """A preset's adapter for one base model: released names (most preferred first) and the layout."""

    names: tuple
    layout: Layout
    lora: bool = False  # released with a LoRA file: each name + LORA_SUFFIX (FaceID, FaceID Plus / PlusV2)


@dataclass(frozen=True)
class Preset:
    name: str  # the widget value (the widely used pack's label)
    releases: dict  # base model ("sd15" / "sdxl") -> Release
    clip_vision: Optional[str] = None  # FaceID: the CLIP vision model returned (None: the adapters' own encoder)
    plus_v2: Optional[bool] = None  # FaceID Plus files: PlusV2 (True) or Plus (False); one layout, so the user says

    @property
    def clip_vision_name(self) -> str:
        """The CLIP vision model the preset loads."""
        if self.clip_vision is not None:
            return self.clip_vision
        encoders = {r.layout.encoder_name for r in self.releases.values()}
        assert len(encoders) == 1, self.name
        return encoders.pop()


def _r(names, variant, tokens, encoder=_H, clip_width=0, lora=False):
    return Release(tuple(names) if isinstance(names, tuple) else (names,), Layout(variant, tokens, encoder, clip_width), lora)


def _face(names, variant, tokens):
    # FaceID and FaceID Plus / PlusV2 came with a LoRA file for the UNet; the portrait adapters did not
    return _r(names, variant, tokens, _FACE, _H_HIDDEN if variant == "faceid-plus" else 0,
              lora=variant in ("faceid", "faceid-plus"))


# One line per preset; FaceID ones last (the pack has them on a second loader node). The LIGHT v11 and the
# portrait v11 releases replaced older files: both names are looked up, v11 first.
PRESETS = (
    Preset("LIGHT - SD1.5 only (low strength)", {"sd15": _r(("ip-adapter_sd15_light_v11", "ip-adapter_sd15_light"), "base", 4)}),
    Preset("STANDARD (medium strength)", {"sd15": _r("ip-adapter_sd15", "base", 4), "sdxl": _r("ip-adapter_sdxl_vit-h", "base", 4)}),
    Preset("VIT-G (medium strength)", {"sd15": _r("ip-adapter_sd15_vit-G", "base", 4, _G), "sdxl": _r("ip-adapter_sdxl", "base", 4, _G)}),
    Preset("PLUS (high strength)", {"sd15": _r("ip-adapter-plus_sd15", "plus", 16), "sdxl": _r("ip-adapter-plus_sdxl_vit-h", "plus", 16)}),
    Preset("PLUS FACE (portraits)", {"sd15": _r("ip-adapter-plus-face_sd15", "plus", 16), "sdxl": _r("ip-adapter-plus-face_sdxl_vit-h", "plus", 16)}),
    Preset("FULL FACE - SD1.5 only (portraits stronger)", {"sd15": _r("ip-adapter-full-face_sd15", "full-face", 257)}),
    Preset("FACEID", {"sd15": _face("ip-adapter-faceid_sd15", "faceid", 4), "sdxl": _face("ip-adapter-faceid_sdxl", "faceid", 4)}, _H),
    Preset("FACEID PLUS - SD1.5 only", {"sd15": _face("ip-adapter-faceid-plus_sd15", "faceid-plus", 4)}, _H, plus_v2=False),
    Preset("FACEID PLUS V2", {"sd15": _face("ip-adapter-faceid-plusv2_sd15", "faceid-plus", 4), "sdxl": _face("ip-adapter-faceid-plusv2_sdxl", "faceid-plus", 4)}, _H, plus_v2=True),
    Preset("FACEID PORTRAIT (style transfer)", {"sd15": _face(("ip-adapter-faceid-portrait-v11_sd15", "ip-adapter-faceid-portrait_sd15"), "faceid-portrait", 16), "sdxl": _face("ip-adapter-faceid-portrait_sdxl", "faceid-portrait", 16)}, _H),
    Preset("FACEID PORTRAIT UNNORM - SDXL only (strong)", {"sdxl": _face("ip-adapter-faceid-portrait_sdxl_unnorm", "faceid-portrait-unnorm", 16)}, _H),
    # The pack's community loader; Kolors' UNet is SDXL-shaped, so its adapter is listed under "sdxl".
    Preset("Kolors", {"sdxl": _r(("ip_adapter_plus_general", "Kolors-IP-Adapter-Plus"), "plus", 16, KOLORS_ENCODER)}),
    # The pack's other community preset: the composition adapters (plus layout on ViT-H), one per base model.
    Preset("Composition", {"sd15": _r("ip_plus_composition_sd15", "plus", 16), "sdxl": _r("ip_plus_composition_sdxl", "plus", 16)}),
)
PRESET_NAMES = tuple(p.name for p in PRESETS)
_BY_NAME = {p.name: p for p in PRESETS}


def preset(name: str) -> Preset:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise IPAdapterError(f"unknown preset {name!r}; choose one of: {', '.join(PRESET_NAMES)}.") from None


def _name_pattern(stem: str) -> re.Pattern:
    # Separators in released names ('-', '_') stand for any one character (users write sd15_vit-G or
    # sd15-vit_G); the name must end the file name (sub folders and prefixes allowed) before the extension.
    parts = [re.escape(p) for p in re.split(r"[-_]", stem)]
    ext = "|".join(re.escape(e) for e in NAME_EXTENSIONS)
    return re.compile(".".join(parts) + f"({ext})$", re.IGNORECASE)


def matches_release(file_name: str, stem: str) -> bool:
    return _name_pattern(stem).search(file_name.replace("\\", "/")) is not None


LORA_SUFFIX = "_lora"  # the LoRA file of a FaceID release: ip-adapter-faceid_sd15_lora.safetensors (models/loras)


def lora_names(preset_name: str, family: str) -> tuple:
    """Released names (no extension) of the LoRA file that goes with a preset's adapter for this base model; ()
    when that release has none."""
    release = preset(preset_name).releases.get(family)
    return tuple(n + LORA_SUFFIX for n in release.names) if release is not None and release.lora else ()


def choose_lora(preset_name: str, family: str, names: Sequence[str]) -> Optional[str]:
    """The preset's LoRA file among the host's LoRA file names, by its released name (first in host order), or None."""
    for stem in lora_names(preset_name, family):
        for name in names:
            if matches_release(name, stem):
                return name
    return None


def _released_anywhere(file_name: str) -> bool:
    return any(matches_release(file_name, n) for p in PRESETS for r in p.releases.values() for n in r.names)


def adapter_config_of_file(path) -> AdapterConfig:
    """Detect an adapter file's variant; safetensors from the header only (no weights are read)."""
    if sniff_format(path) == "safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                flat = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
        except Exception as e:  # the header is unreadable: the full loader gives the precise message
            raise IPAdapterError(f"{os.path.basename(str(path))}: unreadable safetensors header ({e})") from None
        return detect_config(split_prefixed(flat, Path(path)))
    return detect_config(load_adapter_state_dict(path))


def vision_encoder_of_file(path) -> Optional[str]:
    """'ViT-H/14' / 'ViT-bigG/14' / ... for a CLIP vision safetensors file, from its header; None if unknown."""
    if sniff_format(path) != "safetensors":
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                if key.endswith(("embeddings.patch_embedding.weight", "visual.conv1.weight")):
                    return encoder_name_for(PENULTIMATE, f.get_slice(key).get_shape()[0])
    except Exception:
        return None
    return None


@dataclass(frozen=True)
class Choice:
    name: str  # the file name as the host lists it
    how: str  # "by name" / "by contents"


def _describe(name: str, detect: Callable[[str], object]) -> str:
    try:
        found = detect(name)
    except IPAdapterError as e:
        return f"{name}: {str(e).split('; ')[0]}"
    if isinstance(found, AdapterConfig):
        return f"{name}: {found.description}"
    return f"{name}: {found or 'not a recognised CLIP vision model'}"


def choose_adapter(preset_name: str, family: str, names: Sequence[str], config_of: Callable[[str], AdapterConfig],
                   folders: Sequence[str] = ()) -> Choice:
    """The adapter file for a preset and base model: the first released name in host order, else the one
    file whose contents fit (files named as another preset's release are not taken)."""
    p = preset(preset_name)
    release = p.releases.get(family)
    if release is None:
        have = BASE_MODEL_NAMES.get(family, family)
        raise AdapterMismatchError(
            f"preset '{p.name}' has no {have} adapter (it exists for {', '.join(BASE_MODEL_NAMES[f] for f in p.releases)}); "
            f"choose another preset, or use a {'/'.join(BASE_MODEL_NAMES[f] for f in p.releases)} model.")
    for stem in release.names:
        for name in names:
            if matches_release(name, stem):
                return Choice(name, "by name")
    fitting, seen = [], []
    for name in names:
        if _released_anywhere(name):
            seen.append(_describe(name, config_of))
            continue
        try:
            config = config_of(name)
        except IPAdapterError as e:
            seen.append(f"{name}: {str(e).split('; ')[0]}")
            continue
        seen.append(f"{name}: {config.description}")
        if release.layout.fits(config, family):
            fitting.append(name)
    if len(fitting) == 1:
        return Choice(fitting[0], "by contents")
    wanted = " or ".join(f"{n}.safetensors" for n in release.names)
    where = f" in {', '.join(folders)}" if folders else ""
    if fitting:
        raise IPAdapterError(
            f"preset '{p.name}': {len(fitting)} files{where} hold a {release.layout.describe(family)} adapter "
            f"({', '.join(fitting)}) and their names do not say which is which; rename the one you mean to {wanted}, "
            "or choose the file directly.")
    listing = "; ".join(seen) if seen else "no files"
    raise IPAdapterError(
        f"preset '{p.name}' needs {wanted} (or any file holding a {release.layout.describe(family)} adapter); "
        f"none found{where}. Files found: {listing}. Download the file into one of those folders.")


def choose_encoder(encoder_name: str, names: Sequence[str], encoder_of: Callable[[str], Optional[str]],
                   folders: Sequence[str] = ()) -> Choice:
    """The CLIP vision file for an encoder: its released name first, else the first file whose header shows it."""
    stem = encoder_file_for(encoder_name)
    if stem is not None:
        pattern = re.compile(".*".join(re.escape(p) for p in stem.split("-")) + r"\.(safetensors|bin)$", re.IGNORECASE)
        for name in names:
            if pattern.search(name.replace("\\", "/")):
                return Choice(name, "by name")
    seen = []
    for name in names:
        found = encoder_of(name)
        seen.append(f"{name}: {found or 'not read (only .safetensors headers are read)'}")
        if found == encoder_name:
            return Choice(name, "by contents")
    where = f" in {', '.join(folders)}" if folders else ""
    raise IPAdapterError(
        f"no {encoder_name} CLIP vision model found{where} (looked for {stem or encoder_name}.safetensors, then "
        f"by contents). Files found: {'; '.join(seen) if seen else 'no files'}. Download {stem or 'it'}.safetensors "
        "into the CLIP vision folder.")
