"""pytest plugin (loaded by -p in pyproject.toml). The repository root is also the ComfyUI package: its
__init__.py imports the nodes for the host. Collect the root as a plain directory so pytest never imports
that entry point; tests import ip_core, nodes and trainer as top-level packages (pythonpath in pyproject.toml)."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_collect_directory(path, parent):
    if Path(path).resolve() == ROOT:
        return pytest.Dir.from_parent(parent, path=path)
    return None
