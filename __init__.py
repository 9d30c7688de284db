"""ComfyUI entry point: the node mappings and the folder of the frontend extension, nothing else."""
from .nodes.registry import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

# The frontend extension that shows the detected variant on Load IPAdapter (served at /extensions/<pack>/).
WEB_DIRECTORY = "./web"
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
