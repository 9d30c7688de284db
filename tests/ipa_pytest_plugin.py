"""pytest plugin (loaded by -p in pyproject.toml).

The repository root is also the ComfyUI package: its __init__.py imports the nodes for the host. Collect the
root as a plain directory so pytest never imports that entry point.

nodes/ uses relative imports only (`from ..ip_core import ...`), as it must inside ComfyUI, where the pack
is a package named after its folder. Tests import it the same way: the root is the package `ipadapter_exact`
(not executed: no host registration at collection), and `nodes` / `nodes.X` are that package's
`ipadapter_exact.nodes[.X]`, so `import nodes.patch` in a test runs the real relative imports. Its `ip_core`
is the top-level one (the trainer's and the tests'), one module object each, so exception classes and
isinstance checks agree everywhere.
"""
import importlib
import importlib.abc
import importlib.util
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "ipadapter_exact"


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serve one module name as another, already-importable one (the same module object)."""

    def _target(self, fullname):
        if fullname == "nodes" or fullname.startswith("nodes."):
            return f"{PACKAGE}.{fullname}"
        prefix = f"{PACKAGE}.ip_core"
        if fullname == prefix or fullname.startswith(prefix + "."):
            return fullname[len(PACKAGE) + 1:]
        return None

    def find_spec(self, fullname, path=None, target=None):
        if self._target(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return importlib.import_module(self._target(spec.name))

    def exec_module(self, module):
        pass


def _install_package():
    if PACKAGE in sys.modules:
        return
    pkg = types.ModuleType(PACKAGE)
    pkg.__path__ = [str(ROOT)]
    pkg.__package__ = PACKAGE
    sys.modules[PACKAGE] = pkg
    sys.meta_path.insert(0, _Alias())


_install_package()


def pytest_collect_directory(path, parent):
    if Path(path).resolve() == ROOT:
        return pytest.Dir.from_parent(parent, path=path)
    return None
