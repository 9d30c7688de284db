"""SD1.5 / SDXL nodes: every hook is the base's (cross-attention layers through attn2 replace)."""
from __future__ import annotations

from .base import NodeFamily


class SDFamily(NodeFamily):
    NAME = "sd"


FAMILY = SDFamily()
