"""The nodes' side of each model family, one module each (model and encoder checks, "no image", how it patches
the host), found from the loaded adapter's config through ip_core's family registry."""
from __future__ import annotations

from ...ip_core.families import family_for as core_family_for
from . import faceid, flux, kolors, sd, sd3

NODE_FAMILIES = {m.FAMILY.NAME: m.FAMILY for m in (sd, faceid, kolors, flux, sd3)}


def family_for(config):
    """The node family of an adapter config (the NodeFamily whose NAME is its ip_core family's)."""
    return NODE_FAMILIES[core_family_for(config).NAME]


# Apply IPAdapter's family-specific inputs, each named by the family that reads it
FAMILY_INPUTS = tuple(dict.fromkeys(name for f in NODE_FAMILIES.values() for name in f.APPLY_INPUTS))


def unused_inputs(config) -> list:
    """Apply IPAdapter's family-specific inputs the adapter of `config` does not read (hidden by the web extension;
    their values stay in the workflow and mean nothing to this adapter)."""
    used = set(family_for(config).apply_inputs(config))
    return [name for name in FAMILY_INPUTS if name not in used]
