"""The drop-in ids' switch (IPADAPTER_DROPIN), read by the registration and by the computation alike."""
from __future__ import annotations

import os

ENV = "IPADAPTER_DROPIN"
MODES = ("pack", "corrected", "off")


def mode() -> str:
    value = os.environ.get(ENV, "pack").strip().lower() or "pack"
    if value not in MODES:
        raise ValueError(f"{ENV}={value!r} is not a mode; use one of {', '.join(MODES)}")
    return value


def legacy() -> bool:
    """True when the ids give the pack's own results (the default; an unknown mode was reported at startup)."""
    return os.environ.get(ENV, "pack").strip().lower() != "corrected"
