"""The real-host tests' one policy: each test runs once per host in COMFYUI_PATHS (folders of ComfyUI checkouts,
joined by os.pathsep) or COMFYUI_PATH (one), the host's version in the test id (`[comfyui-0.33.0]`). Without a
host they are skipped, except in CI (CI=true), where a missing host is a failure (scenario.run_scenario fails):
.ci/run extracts the hosts and sets COMFYUI_PATHS. The other test folders run once, without a host."""
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
sys.path.insert(0, str(HERE))  # the test files import scenario.py

import scenario  # noqa: E402

HOSTS = scenario.hosts()


def host_id(path) -> str:
    """comfyui-<version> from the host's own comfyui_version.py, else the folder's name."""
    if path is None:
        return "no-host"
    version = Path(path) / "comfyui_version.py"
    found = re.search(r"__version__\s*=\s*[\"']([^\"']+)", version.read_text()) if version.is_file() else None
    return f"comfyui-{found.group(1)}" if found else Path(path).name


def pytest_generate_tests(metafunc):
    if "comfyui" in metafunc.fixturenames:
        params = HOSTS or [None]
        ids = [host_id(p) for p in params]
        if len(set(ids)) < len(ids):
            ids = [f"{i}-{n}" for n, i in enumerate(ids)]
        metafunc.parametrize("comfyui", params, ids=ids, indirect=True, scope="module")


@pytest.fixture(scope="module", autouse=True)
def comfyui(request):
    """The host every scenario of this test runs in (module-scoped results depend on it, so they are made again
    for each host)."""
    scenario.use_host(request.param)
    return request.param


@pytest.fixture(autouse=True)
def _scenario_files_deleted(request):
    """A test's scenario outputs (random full-shape models, adapters: gigabytes) are deleted after it, so a run
    keeps one test's files on disk at a time (scenario.scratch does the same for module-scoped results)."""
    path = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="set COMFYUI_PATH (or COMFYUI_PATHS) to ComfyUI checkouts to run the real-host tests")
    for item in items:
        if Path(str(item.fspath)).resolve().parent == HERE:
            item.add_marker(pytest.mark.integration)
            if not HOSTS and not IN_CI:
                item.add_marker(skip)
