"""ComfyUI nodes for IP-Adapter. The only package that imports the host (lazily, through nodes/host.py)."""
from .nodes_ipadapter import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

try:  # inside ComfyUI: make models/ipadapter a model folder as soon as the pack loads
    from .host import register_model_folder

    register_model_folder()
except ImportError:  # imported outside the host (tests, tools): registration happens on first use
    pass

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
