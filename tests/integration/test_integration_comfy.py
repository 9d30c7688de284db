"""Real-host integration: the pack inside a ComfyUI checkout (COMFYUI_PATH), random full-shape SD1.5 models.

Each scenario runs in its own process (run_in_comfy.py): ComfyUI needs `--cpu` in sys.argv before its
first import and owns the top-level module name `nodes`. Skipped when COMFYUI_PATH is unset.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

COMFY = os.environ.get("COMFYUI_PATH")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not COMFY, reason="set COMFYUI_PATH to a ComfyUI checkout to run the real-host tests"),
]
SCRIPT = Path(__file__).resolve().parent / "run_in_comfy.py"


def _run(scenario, tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), scenario, str(tmp_path)], capture_output=True, text=True,
                          timeout=1800, cwd=str(SCRIPT.parents[2]), env={**os.environ, "COMFYUI_PATH": COMFY})
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"{scenario} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    result = json.loads(lines[-1][len("RESULT "):])
    print(scenario, json.dumps(result, indent=1))
    return result


def test_patched_comfy_unet_equals_diffusers_ip_adapter(tmp_path):
    r = _run("parity", tmp_path)
    assert "SD1.5 base" in r["shown"]
    for w in ("weight_1.0", "weight_0.5"):
        assert r[w]["rel_err"] < 1e-4, r[w]
        assert r[w]["image_branch_layers"] == 16 and r[w]["patched_keys"] == 16
        assert r[w]["middle_key"] == [["middle", 0, 0]]
    assert r["weight_0_bit_identical"] and r["input_model_untouched"]


def test_plus_adapter_equals_diffusers_with_official_uncond(tmp_path):
    r = _run("parity_plus", tmp_path)
    assert "plus (Resampler), 16 tokens" in r["shown"] and r["tokens"] == [1, 16, 768]
    assert r["rel_err"] < 1e-4 and r["image_branch_layers"] == 16


def test_load_encode_apply_ksampler(tmp_path):
    r = _run("ksampler", tmp_path)
    assert r["finite"] and r["differs_from_plain"]
    assert r["image_branch_calls"] > 0 and r["image_branch_calls"] % 16 == 0  # all 16 layers in every UNet call
    assert 0 < r["windowed_calls"] < r["image_branch_calls"]  # end_at 0.5: only the early steps
    assert r["windowed_sigma_reads"] <= r["steps"] * 2  # per UNet call, not per layer


def test_example_workflows_execute_headless(tmp_path):
    r = _run("workflows", tmp_path)
    assert len(r) == len(list((SCRIPT.parents[2] / "example_workflows").glob("*.json")))
    for name, res in r.items():
        assert res["valid"], (name, res)
        if "sdxl" not in name:
            assert res["executed"] and res["error"] is None, (name, res)
