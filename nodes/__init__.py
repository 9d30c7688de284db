"""ComfyUI nodes for IP-Adapter: the only package that imports the host (lazily, through nodes/host.py).

Nothing is imported here, so tools that need no host and no torch (`python -m nodes.migrate`) run from the
repository root; the node list is nodes/registry.py, which the pack's __init__.py exports.
"""
