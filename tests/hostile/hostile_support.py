"""Shared pieces of the hostile-input suite: seeded hypothesis settings, tiny adapters, the marker a malicious
pickle would create, and a subprocess that measures peak memory while loading files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from hypothesis import HealthCheck, settings

from ip_core.adapter import IPAdapter
from ip_core.config import make_config
from ip_core.errors import IPAdapterError
from ip_core.layers import custom_layer_specs

ROOT = Path(__file__).resolve().parents[2]
# Seeded (derandomize): the same examples on every run and machine; no example database on disk.
HOSTILE = settings(derandomize=True, database=None, deadline=None, max_examples=30,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / "ipa_hostile_code_ran"
REMEDY_WORDS = ("download", "use ", "give", "check", "connect", "save", "put", "downscale", "divide", "set ", "report",
                "convert", "refused", "close", "pass", "must be", "expects", "at least", "at most", "make ")
# (a remedy is an action, or the valid value/range stated: "must be between 0 and 1", "expects RGB images")


class RunsCode:
    """Unpickling this would create MARKER: proof that no code ran is that the marker never appears."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def tiny_sd(variant: str = "base", seed: int = 0) -> dict:
    torch.manual_seed(seed)
    layers = custom_layer_specs([1, 3, 5], [16, 32, 16])
    adapter = IPAdapter(make_config(variant, layers, 32, 24 if variant == "base" else 40))
    return adapter.released_state_dict()


def assert_clear(error: BaseException) -> None:
    """One of the project's errors, with a message that says what to do."""
    assert isinstance(error, IPAdapterError), f"{type(error).__name__}: {error}"
    text = str(error).lower()
    assert any(w in text for w in REMEDY_WORDS), f"no remedy in: {error}"


def outcome(fn, *args, **kwargs):
    """Run fn: return its result, or the IPAdapterError it raised (checked for a remedy); anything else fails the test."""
    try:
        return fn(*args, **kwargs)
    except IPAdapterError as e:
        assert_clear(e)
        return e


_MEASURE = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
import torch
from ip_core.__main__ import inspect_file
from ip_core.checkpoint import read_tensor_file
torch.ones(1) + 1  # warm up the allocator before the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
results = []
for path in sys.argv[2:]:
    info = inspect_file(path)
    results.append({"file": path, "ok": info["ok"], "error": info.get("error", "")})
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"extra_bytes": (peak - base) * 1024, "results": results}))
"""


def load_in_subprocess(paths) -> dict:
    """Inspect (= read + validate + detect) every file in a fresh process; report the peak memory above its baseline."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", _MEASURE, str(ROOT), *map(str, paths)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])
