"""ip_core, imported the way that works where we run.

Inside ComfyUI the pack is loaded as a package named after its folder path (nodes.py load_custom_node), and
its folder is not on sys.path: ip_core is a sibling package, reached relatively. In tests and tools the repo
root is on sys.path and nodes/ is top-level, so the relative form fails and the absolute one works.
"""
try:
    from ..ip_core import adapter, attention, embeds, encoder_table, errors, preprocess  # noqa: F401
except ImportError:
    from ip_core import adapter, attention, embeds, encoder_table, errors, preprocess  # noqa: F401
