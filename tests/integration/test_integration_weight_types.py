"""Weight types and embeds scaling in the real host, against the widely used pack loaded beside ours
(run_weight_types.py). Skipped when COMFYUI_PATH is unset."""
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
SCRIPT = Path(__file__).resolve().parent / "run_weight_types.py"


def _run(family, tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), family, str(tmp_path)], capture_output=True, text=True,
                          timeout=3600, cwd=str(SCRIPT.parents[2]), env={**os.environ, "COMFYUI_PATH": COMFY})
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"{family} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.parametrize("family,layers,blocks", [("sd15", 16, 16), ("sdxl", 70, 11)])
def test_attn2_outputs_equal_the_widely_used_pack(tmp_path, family, layers, blocks):
    r = _run(family, tmp_path)
    # the translation table is the host's own transformer_index, recorded from a real UNet forward
    assert r["recorded_layers"] == layers and r["host_blocks"] == blocks and r["table_matches_host"]
    assert r["n_cases"] >= (68 if family == "sd15" else 19)
    for name, c in r["cases"].items():
        assert c["layers_compared"] == layers - (1 if family == "sd15" else 10), name  # all but the middle block
        assert c["max_rel_err"] < 1e-5, (name, c)
        assert c["layers_with_image_term"] > 0, name  # the pack's image term is really there
    # the one intended difference: where the table weights the middle block, ours applies it
    assert r["cases"]["strong style transfer / " + ("V only" if family == "sd15" else "K+mean(V) w/ C penalty")][
        "middle_layers_changed_by_ours"] == (1 if family == "sd15" else 10)
    assert r["cases"]["style transfer / " + ("V only" if family == "sd15" else "K+V")]["middle_layers_changed_by_ours"] == 0
