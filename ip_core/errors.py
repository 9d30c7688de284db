"""Error types. Every message names the problem and the remedy; callers (nodes, trainer) show them as-is."""


class IPAdapterError(Exception):
    """Base class for every error ip_core raises on purpose."""


class AdapterFileError(IPAdapterError):
    """A file that cannot be read safely: missing, empty, truncated, unsafe pickle, not an adapter, wrong shapes."""


class UnsupportedAdapterError(IPAdapterError):
    """A readable adapter of a family this package does not implement (FaceID) or an unknown layout."""


class AdapterMismatchError(IPAdapterError):
    """Two things that must fit do not: adapter vs image encoder, adapter vs base model, embeds vs adapter."""
