"""Reading an adapter state dict's layout: one tensor's dims, a summary for messages, and the comparison of the
shapes a layout expects with the shapes a file holds (used by every family's detection and by the encoders)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .errors import AdapterFileError, UnsupportedAdapterError


def shape_of(part: dict, key: str) -> Optional[tuple]:
    """The shape of part[key], None when it is not a tensor (absent or another type)."""
    t = part.get(key)
    return tuple(t.shape) if isinstance(t, torch.Tensor) else None


def summarize(sd: dict) -> str:
    """A few of the file's image_proj and ip_adapter keys (with shapes), for refusals."""
    proj = sorted(sd.get("image_proj", {}))
    ip = sorted(sd.get("ip_adapter", {}))
    shown = ", ".join(f"{k}{list(getattr(sd['image_proj'][k], 'shape', []))}" for k in proj[:6])
    return (
        f"image_proj has {len(proj)} tensors ({shown}{', ...' if len(proj) > 6 else ''}); "
        f"ip_adapter has {len(ip)} tensors (e.g. {', '.join(ip[:3])})"
    )


def tensor_dims(part: dict, part_name: str, key: str, ndim: int, variant: str) -> tuple:
    """The shape of one tensor the detected layout relies on: present, `ndim`-dimensional, no empty dimension."""
    t = part.get(key)
    if not isinstance(t, torch.Tensor):
        raise AdapterFileError(
            f"{part_name}.{key} is missing, but the other {part_name} keys look like a {variant} adapter; "
            f"the file is incomplete or damaged: download it again. {summarize({part_name: part})}"
        )
    if t.ndim != ndim or min(t.shape) < 1:
        raise AdapterFileError(
            f"{part_name}.{key} has shape {list(t.shape)}; a {variant} adapter needs a {ndim}-D tensor with no empty "
            "dimension there. The file is damaged or not an IP-Adapter: download it again."
        )
    return tuple(t.shape)


def shapes_by_block(ip: dict, key_pattern, file_kind: str, sd: dict) -> dict:
    """The `ip_adapter` part of a per-block adapter (Flux, SD3.5) as {block number: {part: shape}}: each key must
    match `key_pattern` (group 1 the block number, the other groups the part, joined by '.'); any other key means
    a mixed or unknown layout, refused with the file's summary."""
    blocks = {}
    for key, t in ip.items():
        m = key_pattern.match(key)
        if not m:
            raise UnsupportedAdapterError(
                f"unexpected key ip_adapter.{key} in {file_kind} file: {summarize(sd)}. The file mixes layouts or is "
                "a new layout this version does not know; use the released file.")
        blocks.setdefault(int(m.group(1)), {})[".".join(m.groups()[1:])] = tuple(t.shape)
    return blocks


def whole_number(numerator: int, denominator: int, what: str) -> int:
    """numerator / denominator when it divides evenly; a damaged file otherwise."""
    if numerator % denominator:
        raise UnsupportedAdapterError(f"{what}: {numerator} is not a multiple of {denominator}; the file is damaged or not an IP-Adapter: download it again.")
    return numerator // denominator


@dataclass(frozen=True)
class ShapeDifferences:
    """What a set of tensors lacks, has too many of, and holds in other shapes than a layout expects."""

    missing: list
    unexpected: list
    wrong: list  # "key [found] (expected [wanted])"

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong)


def shape_differences(expected: dict, got: dict, sort_key: Optional[Callable] = None) -> ShapeDifferences:
    """Compare `expected` {key: shape} with `got` {key: tensor}; keys listed in `sort_key` order."""
    wrong = [f"{k} {list(got[k].shape)} (expected {list(expected[k])})" for k in sorted(expected, key=sort_key)
             if k in got and tuple(got[k].shape) != tuple(expected[k])]
    return ShapeDifferences(sorted(set(expected) - set(got), key=sort_key), sorted(set(got) - set(expected), key=sort_key),
                            wrong)
