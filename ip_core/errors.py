"""Error types. Every message names the problem and the remedy in host-neutral words (a file, an adapter, an
image encoder): the trainer shows them as-is, the ComfyUI nodes append advice about nodes and model folders."""


class IPAdapterError(Exception):
    """Base class for every error ip_core raises on purpose."""


class AdapterFileError(IPAdapterError):
    """A file that cannot be read safely: missing, empty, truncated, unsafe pickle, not an adapter, wrong shapes."""


class ForeignFileError(AdapterFileError):
    """A readable weights file of another kind (a CLIP vision model, a checkpoint, a LoRA...) where an adapter
    was expected. `kind` is a key of ip_core.checkpoint.FOREIGN_KINDS, so a host can say where it belongs."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


class UnsupportedAdapterError(IPAdapterError):
    """A readable adapter of a family this package does not implement (FaceID) or an unknown layout."""


class AdapterMismatchError(IPAdapterError):
    """Two things that must fit do not: adapter vs image encoder, adapter vs base model, embeds vs adapter."""
