"""Run by ComfyUI-Manager after cloning: make sure models/ipadapter exists.

Nothing is downloaded or pip-installed here (registry rule); dependencies are in requirements.txt.
"""
import os
import sys
from pathlib import Path


def comfy_root() -> Path:
    """custom_nodes/<this pack>/install.py -> the ComfyUI folder, unless COMFYUI_PATH says otherwise."""
    env = os.environ.get("COMFYUI_PATH")
    return Path(env) if env else Path(__file__).resolve().parent.parent.parent


def main() -> int:
    root = comfy_root()
    if not (root / "models").is_dir():
        print(f"[ipadapter-exact] {root} does not look like a ComfyUI folder (no models/); nothing to do.")
        return 0
    folder = root / "models" / "ipadapter"
    folder.mkdir(exist_ok=True)
    print(f"[ipadapter-exact] IP-Adapter files go in {folder} (any name, .safetensors or .bin).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
