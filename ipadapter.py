"""The pack's command-line tools, from any folder: `python PATH/TO/THIS/ipadapter.py <command> ...`.

From the ComfyUI folder, for example:
    python custom_nodes/comfyui-ipadapter-exact/ipadapter.py inspect models/ipadapter/ip-adapter_sd15.safetensors
    python custom_nodes/comfyui-ipadapter-exact/ipadapter.py migrate my_workflow.json -o my_workflow.ours.json

`python -m ip_core` and `python -m nodes.migrate` work only inside this folder (and there, from the ComfyUI
folder, `nodes` is ComfyUI's own nodes.py). This script finds the pack's modules next to itself instead, and
loads nodes/ under a name of its own (`ipadapter_exact`), never as `nodes`. ComfyUI never imports this file
(it loads the pack's __init__.py only).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PACKAGE = "ipadapter_exact"  # the pack as a package, for nodes/' relative imports (no host registration runs)

USAGE = """usage: python ipadapter.py <command> [arguments]

commands:
  inspect FILE... [--json]   detect the variant of IP-Adapter files and check they load safely
  example DIR                write random-weight adapter files in three released layouts to DIR
  migrate IN [-o OUT] [--legacy]
                             convert a ComfyUI_IPAdapter_plus workflow to this pack's nodes
  train [flags]              train an IP-Adapter (the official tutorial_train.py flags; train --help)
  demo [flags]               the IP-Adapter reproduction in miniature on the CPU (demo --help)

Each command takes --help. Paths are read relative to the current folder.
"""

COMMANDS = ("inspect", "example", "migrate", "train", "demo")


def _pack_module(name: str):
    """nodes/<name> as ipadapter_exact.nodes.<name>: the package object is made here, so the pack's
    __init__.py (the ComfyUI entry, which needs the host) does not run."""
    if PACKAGE not in sys.modules:
        pkg = types.ModuleType(PACKAGE)
        pkg.__path__ = [str(ROOT)]
        pkg.__package__ = PACKAGE
        sys.modules[PACKAGE] = pkg
    return importlib.import_module(f"{PACKAGE}.nodes.{name}")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"unknown command {cmd!r}\n{USAGE}", file=sys.stderr)
        return 2
    # The pack's top-level packages (ip_core, trainer) are imported from this folder, whatever the current one.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if cmd in ("inspect", "example"):
        from ip_core.__main__ import main as core_main
        return core_main([cmd] + rest)
    if cmd == "migrate":
        return _pack_module("migrate").main(rest)
    from trainer.cli import main as trainer_main
    return trainer_main([cmd] + rest)


if __name__ == "__main__":
    sys.exit(main())
