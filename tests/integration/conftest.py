"""The real-host tests' one policy: without COMFYUI_PATH they are skipped, except in CI (CI=true), where a
missing host is a failure (scenario.run_scenario fails): .ci/run extracts the host and sets COMFYUI_PATH."""
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
COMFY = os.environ.get("COMFYUI_PATH")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
sys.path.insert(0, str(HERE))  # the test files import scenario.py


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="set COMFYUI_PATH to a ComfyUI checkout to run the real-host tests")
    for item in items:
        if Path(str(item.fspath)).resolve().parent == HERE:
            item.add_marker(pytest.mark.integration)
            if not COMFY and not IN_CI:
                item.add_marker(skip)
