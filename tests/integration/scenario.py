"""Run one real-host scenario script in its own process and read its results.

ComfyUI needs `--cpu` in sys.argv before its first import and owns the top-level module name `nodes`, so each
scenario (run_*.py) runs in a subprocess and prints `RESULT [NAME] <json>` lines.
"""
import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
_current = {"host": None}


def hosts() -> list:
    """The hosts to test: COMFYUI_PATHS (folders joined by os.pathsep), else COMFYUI_PATH."""
    many = [p for p in os.environ.get("COMFYUI_PATHS", "").split(os.pathsep) if p]
    return many or [p for p in [os.environ.get("COMFYUI_PATH")] if p]


def use_host(path) -> None:
    """Scenarios run from now on run in the host at `path` (conftest's comfyui fixture sets it per test)."""
    _current["host"] = path


def run_scenario(script: str, args, out_dir, timeout: int = 3600, env: dict | None = None) -> list:
    """Run `python tests/integration/<script> ARGS... OUT_DIR` against the current host; the payloads of its RESULT
    lines."""
    comfy = _current["host"]
    if not comfy or not (Path(comfy) / "comfy").is_dir():
        pytest.fail(f"the real-host tests need a ComfyUI checkout: COMFYUI_PATH(S)={comfy!r} (.ci/run extracts them)")
    env = {**os.environ, "COMFYUI_PATH": comfy, **(env or {})}
    proc = subprocess.run([sys.executable, str(HERE / script), *args, str(out_dir)], capture_output=True, text=True,
                          timeout=timeout, cwd=str(HERE.parents[1]), env=env)
    results = [line[len("RESULT "):] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and results, f"{script} {args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return results


@contextlib.contextmanager
def scratch(tmp_path_factory, name: str):
    """A folder for one module's scenario outputs, deleted when done: random full-shape models and adapter files
    take gigabytes per host, and a whole run must fit the disk of the machine that runs it."""
    out = tmp_path_factory.mktemp(name)
    try:
        yield out
    finally:
        shutil.rmtree(out, ignore_errors=True)


def last_result(script: str, args, out_dir, **kw) -> dict:
    """The JSON of a scenario's last RESULT line (scenarios that print one)."""
    result = json.loads(run_scenario(script, args, out_dir, **kw)[-1])
    print(script, args, json.dumps(result, indent=1))
    return result
