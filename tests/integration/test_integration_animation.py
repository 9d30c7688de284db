"""Frames and tiles in the real host against the widely used pack (run_animation.py, one process).

Skipped when COMFYUI_PATH is unset. The pack comes from ../shared/hosts or IPADAPTER_PLUS_PATH (comfy_host).
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
SCRIPT = Path(__file__).resolve().parent / "run_animation.py"


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("animation")
    proc = subprocess.run([sys.executable, str(SCRIPT), "parity", str(out)], capture_output=True, text=True,
                          timeout=3600, cwd=str(SCRIPT.parents[2]), env={**os.environ, "COMFYUI_PATH": COMFY})
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    r = json.loads(lines[-1][len("RESULT "):])
    print(json.dumps(r, indent=1))
    return r


def test_tiles_and_masks_equal_the_pack(result):
    cases = result["tiles"]
    assert len(cases) == 10 and {c["tiles"] for c in cases} >= {2, 3, 4}
    for c in cases:
        assert c["tiles_equal"] and c["masks_equal"], c
    (tok,) = [c for c in cases if "tokens_same_pixels_max_abs" in c]
    assert tok["pack_tiles_applied"] == tok["tiles"]
    assert tok["tokens_same_pixels_max_abs"] <= 1e-5 * tok["tokens_scale"]  # same pixels: same tokens
    # end to end our preprocessing (PIL-exact bicubic) differs from the host's clip_preprocess by <= 1/255
    assert tok["tokens_end_to_end_max_abs"] <= 0.05 * tok["tokens_scale"]


def test_enhance_merges_equal_the_pack(result):
    e = result["enhance"]
    assert e["split_equal"] and e["merge_embeds_equal"] and e["merge_hidden_equal"]
    assert e["image_embeds_same_pixels_max_abs"] < 1e-5


def test_weight_schedules_equal_the_pack(result):
    assert result["weights"]["equal"] == result["weights"]["cases"] == 540


def test_context_windows_equal_the_packs_attention(result):
    w = result["windows"]
    assert w["max_abs"] <= 1e-5 * max(1.0, w["scale"]), w
    assert w["held_frames"] == [12]  # only the current window (6 frames, cond + uncond) stays arranged
