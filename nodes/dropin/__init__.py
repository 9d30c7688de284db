"""The widely used pack's node ids (ComfyUI_IPAdapter_plus), served by this pack's nodes.

Interface: nodes/pack_interface.py, exactly (what /object_info shows). Computation: nodes/dropin/compute.py,
through our public node functions. Registered only where that pack is not installed (it serves its own ids
then), and never when IPADAPTER_DROPIN=off.

IPADAPTER_DROPIN (environment variable):
  pack       (default) the pack's own results: its preprocessing, its unconditional image, its middle block left
             out (the converter's --legacy), its face path, the FaceID LoRA file of models/loras;
  corrected  our corrected behaviour: the official preprocessing and unconditional tokens, the middle block on,
             the LoRA stored in the FaceID adapter file;
  off        the ids are not registered.
"""
from __future__ import annotations

import logging
import os
import sys

from .. import pack_interface
from .settings import ENV, MODES, legacy, mode  # noqa: F401  (the switch, public here)

PACK_FILE = "IPAdapterPlus.py"  # the file that defines the pack's nodes: how an installed copy is recognised


def _pack_in(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, PACK_FILE)) and not folder.rstrip("/\\").endswith(".disabled")


def installed_pack() -> str | None:
    """Where the widely used pack is installed in this host, or None: already imported (it loaded before us), or
    a folder of custom_nodes that holds it (it loads after us and overwrites the ids then anyway)."""
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None) or ""
        if os.path.basename(path) == PACK_FILE and "NODE_CLASS_MAPPINGS" in vars(module):
            return os.path.dirname(path)
    try:
        import folder_paths
        roots = folder_paths.get_folder_paths("custom_nodes")
    except (ImportError, KeyError):
        return None
    for root in roots:
        try:
            entries = sorted(os.listdir(root))
        except OSError:
            continue
        for entry in entries:
            if _pack_in(os.path.join(root, entry)):
                return os.path.join(root, entry)
    return None


def _input_types(spec):
    """INPUT_TYPES of one id: choices as lists, file lists read now, number options as the pack gives them."""
    from .compute import dynamic_choices

    def one(item):
        kind = item[1]
        if kind in pack_interface.DYNAMIC:
            kind = dynamic_choices(kind)
        elif isinstance(kind, tuple):
            kind = list(kind)
        return (kind, dict(item[2])) if len(item) > 2 else (kind,)

    types = {"required": {i[0]: one(i) for i in spec["required"]}}
    if spec["optional"]:
        types["optional"] = {i[0]: one(i) for i in spec["optional"]}
    return types


def check_numbers(spec: dict, inputs: dict) -> None:
    """Every INT / FLOAT input within the range the interface advertises, NaN and infinity refused, before any work:
    ComfyUI checks a widget's range only for a typed-in value, not for one linked from another node (an
    encode_batch_size or a frame count linked in would size memory by it). A FLOAT may arrive as a list (a weight
    schedule from IPAdapter Weights): each value is checked."""
    from ..common import check_int, check_number

    for item in (*spec["required"], *spec["optional"]):
        name, kind = item[0], item[1]
        value = inputs.get(name)
        if kind not in ("INT", "FLOAT") or value is None:
            continue
        low, high = item[2]["min"], item[2]["max"]
        if kind == "INT":
            check_int(value, name, low, high)
        else:
            for one in (value if isinstance(value, (list, tuple)) else (value,)):
                check_number(one, name, low, high)


def _node_class(node_id: str, spec: dict):
    from ..common import error_boundary
    from . import compute

    @error_boundary
    def run(self, **inputs):
        check_numbers(spec, inputs)
        return compute.run(node_id, inputs)

    return type(node_id, (), {
        "INPUT_TYPES": classmethod(lambda cls: _input_types(spec)),
        "RETURN_TYPES": tuple(spec["outputs"]), "RETURN_NAMES": tuple(spec["output_names"]),
        "FUNCTION": "run", "CATEGORY": spec["category"], "OUTPUT_NODE": spec["output_node"], "run": run,
        "DESCRIPTION": (f"{spec['display_name']}: the ComfyUI_IPAdapter_plus node of this id (same inputs and outputs), "
                        f"computed by this pack. By default it gives that pack's results; {ENV}=corrected gives the "
                        "corrected ones (official preprocessing and unconditional image, middle block applied)."),
        "__module__": __name__,
    })


def registrations() -> tuple[dict, dict]:
    """(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS) of the drop-in ids for this host: empty where the pack
    is installed or the opt-out is set. Logs one line saying which pack serves the ids."""
    log = logging.getLogger("ipadapter")
    try:
        chosen = mode()
    except ValueError as e:  # a typo must not stop the pack from loading: say so, keep the default
        log.error(f"[IPAdapter] {e}; using 'pack'")
        chosen = "pack"
    if chosen == "off":
        log.info(f"[IPAdapter] the ComfyUI_IPAdapter_plus node ids are not served by this pack ({ENV}=off)")
        return {}, {}
    where = installed_pack()
    if where:
        log.info(f"[IPAdapter] the ComfyUI_IPAdapter_plus node ids are served by that pack itself ({where})")
        return {}, {}
    log.info(f"[IPAdapter] the ComfyUI_IPAdapter_plus node ids are served by this pack (drop-in, {ENV}={chosen}: "
             + ("the pack's own results)" if chosen == "pack" else "corrected behaviour)"))
    classes = {node_id: _node_class(node_id, spec) for node_id, spec in pack_interface.NODES.items()}
    return classes, {node_id: spec["display_name"] for node_id, spec in pack_interface.NODES.items()}
