"""FaceID in the real host (COMFYUI_PATH): Load -> Encode Face (stand-in analyzer) -> Apply with the file's LoRA as
host weight patches, against the official LoRA attention processors on a diffusers UNet; the example workflow
executes headless. Scenarios run in their own process (run_faceid_in_comfy.py). Skipped without COMFYUI_PATH."""
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
SCRIPT = Path(__file__).resolve().parent / "run_faceid_in_comfy.py"


def _run(scenario, tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), scenario, str(tmp_path)], capture_output=True, text=True,
                          timeout=1800, cwd=str(SCRIPT.parents[2]), env={**os.environ, "COMFYUI_PATH": COMFY})
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"{scenario} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    result = json.loads(lines[-1][len("RESULT "):])
    print(scenario, json.dumps(result, indent=1))
    return result


def test_faceid_branch_and_lora_equal_the_official_processors_in_the_host(tmp_path):
    r = _run("faceid_parity", tmp_path)
    assert "SD1.5 FaceID" in r["shown"] and "LoRA rank 16" in r["shown"] and r["crops"] == [1, 224, 224, 3]
    assert r["rel_err"] < 1e-4, r
    assert r["differs_from_plain"] > 1e-3
    assert r["image_branch_layers"] == 16  # every cross-attention layer ran the branch once
    # 32 attention processors x q, k, v, out: every LoRA pair is a host patch on the weight the host itself
    # names for that diffusers weight (comfy.utils.unet_to_diffusers)
    assert r["attention_processors"] == 32 and r["lora_targets"] == r["lora_patched_keys"] == r["landed_on_host_names"] == 128
    assert r["zero_bit_identical"] and r["zero_weight_patches"] == 0  # weight 0, LoRA 0: the unpatched model
    assert r["unloads_bit_identical"] and r["input_model_untouched"]


def test_faceid_example_workflow_executes_with_a_standin_face(tmp_path):
    r = _run("faceid_workflow", tmp_path)
    assert r["valid"], r
    assert "IPAEncodeFace" in r["classes"] and "IPAApplyAdapter" in r["classes"]
    assert r["executed"] and r["error"] is None, r
    assert r["faces_analyzed"] == 1 and any(name.startswith("ipadapter_faceid") for name in r["images"])
