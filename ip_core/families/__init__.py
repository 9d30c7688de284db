"""The model families, one module each, and the registry the loader loops over (as ComfyUI's detector loops over
supported_models).

A family module provides: NAME (the registry's key, reported to the nodes and the web extension), LABEL (for
messages), detect(sd) -> its AdapterConfig or None (a damaged file of its layout is refused there), owns(config)
-> whether a config is its own, and adapter_class (IPAdapter, or a subclass overriding the base-class hooks).
Order matters: a family is asked before the ones whose layouts would also read its files (SD3.5's Resampler
before SD's plus, FaceID's and Kolors' projections before SD's); sd, the last, refuses what nobody knows."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch

from ..adapter import IPAdapter
from ..checkpoint import load_adapter_state_dict
from ..config import AdapterConfig
from ..errors import IPAdapterError, UnsupportedAdapterError
from . import faceid, flux, kolors, sd, sd3

FAMILIES = (sd3, flux, faceid, kolors, sd)


def detect_config(state_dict: dict) -> AdapterConfig:
    """Read the variant, base model, token count and encoder needs from an adapter state dict.

    `state_dict` is {"image_proj": {...}, "ip_adapter": {...}} as ip_core.checkpoint loads it. Every tensor of
    the detected layout is checked against the shapes that layout needs, so what passes here builds and runs.
    """
    for family in FAMILIES:
        found = family.detect(state_dict)
        if found is not None:
            return found
    raise UnsupportedAdapterError("no model family knows this file's layout; use a released IP-Adapter file.")


def family_for(config: AdapterConfig):
    """The family module a config belongs to."""
    for family in FAMILIES:
        if family.owns(config):
            return family
    raise ValueError(f"no model family owns {config.description}")


def adapter_from_state_dict(state_dict: dict, config: Optional[AdapterConfig] = None, source: str = "state dict") -> IPAdapter:
    """The adapter of a loaded state dict (its family's adapter class), detected when no config is given."""
    config = config or detect_config(state_dict)
    return family_for(config).adapter_class.from_state_dict(state_dict, config, source=source)


def load_adapter(path, device: Union[str, torch.device] = "cpu", dtype: Optional[torch.dtype] = torch.float32) -> IPAdapter:
    """Load any released (or trainer-exported) adapter file, detected from its contents."""
    path = Path(path)
    state_dict = load_adapter_state_dict(path)
    try:
        config = detect_config(state_dict)
    except IPAdapterError as e:
        raise type(e)(f"{path.name}: {e}") from None
    adapter = adapter_from_state_dict(state_dict, config, source=path.name)
    return adapter.to(device=device, dtype=dtype).eval()
