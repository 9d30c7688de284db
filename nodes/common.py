"""What every node module shares: the IPA_ADAPTER value, the category, the error boundary, and input checks
with UI advice."""
from __future__ import annotations

import functools
import math
import operator

import torch

from . import host
from ..ip_core.errors import IPAdapterError, log_unexpected, unexpected_message

CATEGORY = "ipadapter"


class LoadedAdapter:
    """The IPA_ADAPTER value: the ip_core adapter plus where it came from. repr shows the detected variant."""

    def __init__(self, adapter, name: str):
        self.adapter = adapter
        self.name = name

    @property
    def config(self):
        return self.adapter.config

    @property
    def description(self) -> str:
        return f"{self.name}: {self.config.description}"

    def __repr__(self) -> str:
        return f"IPAdapter({self.description})"


def error_boundary(function):
    """Decorate every node's FUNCTION with this: the node's one error boundary.

    IPAdapterError (an expected failure with its remedy) and the host's own signals (Cancel, GPU out of memory)
    pass unchanged, so ComfyUI shows them as they are; anything else is a bug: its traceback goes to
    ipadapter-errors.log and the node raises an IPAdapterError that names the node and the log.
    """

    @functools.wraps(function)
    def run(self, *args, **kwargs):
        try:
            return function(self, *args, **kwargs)
        except IPAdapterError:
            raise
        except Exception as e:
            if isinstance(e, host.passthrough_exceptions()):
                raise
            node = type(self).__name__
            raise IPAdapterError(unexpected_message(f"node {node}", e, log_unexpected(e, f"node {node}"))) from e

    return run


def with_advice(error: IPAdapterError, advice: str) -> IPAdapterError:
    """The same error (class and attributes) with ComfyUI advice appended: ip_core's messages are host-neutral
    (the trainer shows them too), the nodes say which node or folder fixes it."""
    new = type(error).__new__(type(error))
    new.__dict__.update(error.__dict__)
    new.args = (f"{error} {advice}",)
    return new


def require(value, type_name: str, input_name: str, cls):
    if not isinstance(value, cls):
        raise IPAdapterError(
            f"input '{input_name}' must be a {type_name} from this pack's nodes, got {type(value).__name__}; "
            f"connect the output of the matching node (Load IPAdapter / Encode Image Prompt)."
        )
    return value


def check_number(value, name: str, low: float, high: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise IPAdapterError(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(value):
        raise IPAdapterError(f"{name} is {value}; give a finite number between {low} and {high}.")
    if not low <= value <= high:
        raise IPAdapterError(f"{name} is {value}, outside {low}..{high}; set it within that range.")
    return value


def check_int(value, name: str, low: int, high: int) -> int:
    """A whole number within low..high. The node's own bound: ComfyUI checks a widget's min / max only for a typed-in
    value, not for one linked from another node (a linked frames of 10**9 would size memory by it)."""
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value = int(value)
    elif not isinstance(value, bool) and hasattr(value, "__index__"):  # int, numpy / torch integer scalars
        try:
            value = operator.index(value)
        except TypeError:  # a tensor of several values or of floats: refused below
            pass
    if isinstance(value, bool) or not isinstance(value, int):
        raise IPAdapterError(f"{name} must be a whole number from {low} to {high}, got {value!r}; set it within that range.")
    if not low <= value <= high:
        raise IPAdapterError(f"{name} is {value}, outside {low}..{high}; set it within that range.")
    return value


def check_images(images, name: str):
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise IPAdapterError(f"'{name}' must be an IMAGE batch [batch, height, width, channels], got {shape}; connect a Load Image node.")
    if images.shape[0] == 0:
        raise IPAdapterError(f"'{name}' is an empty batch (0 images); give at least one image.")
    if images.shape[-1] == 4:
        raise IPAdapterError(f"'{name}' has 4 channels (RGBA); give RGB images: Load Image outputs RGB and the alpha as a separate MASK.")
