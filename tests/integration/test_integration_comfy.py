"""Real-host integration: the pack inside a ComfyUI checkout (COMFYUI_PATH), random full-shape models.

The SD1.5 scenarios share one host process (run_in_comfy.py: one boot, one pack load, one random UNet);
SDXL runs in a second one. ComfyUI needs `--cpu` in sys.argv before its first import and owns the
top-level module name `nodes`, hence the subprocesses. Without COMFYUI_PATH these tests are skipped, except
in CI (CI=true), where a missing host is a failure: .ci/run extracts the host and sets COMFYUI_PATH.
"""
import json
from pathlib import Path

import pytest

import comfy_host
from scenario import run_scenario, scratch

SCRIPT = "run_in_comfy.py"
SD15_SCENARIOS = ("pack", "parity", "parity_plus", "ksampler", "workflows")


def _run(scenarios, out_dir):
    """Several scenarios in one host process: {name: result}."""
    results = {}
    for line in run_scenario(SCRIPT, [",".join(scenarios)], out_dir, timeout=2400):
        name, payload = line.split(" ", 1)
        results[name] = json.loads(payload)
        print(name, json.dumps(results[name], indent=1))
    assert set(results) == set(scenarios), f"{scenarios}: got {sorted(results)}"
    return results


@pytest.fixture(scope="module")
def sd15(tmp_path_factory, comfyui):  # made again for each host
    with scratch(tmp_path_factory, "comfy_sd15") as out:
        return _run(SD15_SCENARIOS, out)


def test_comfyui_loads_the_pack_and_its_web_extension(sd15):
    r = sd15["pack"]
    assert r["nodes"]["IPALoadAdapter"] == "Load IPAdapter" and "IPAApplyAdapter" in r["nodes"]
    assert r["web_dir_registered"] and r["web_files"] == ["ipadapter_info.js"]


def test_patched_comfy_unet_equals_diffusers_ip_adapter(sd15):
    r = sd15["parity"]
    assert "SD1.5 base" in r["shown"]
    for w in ("weight_1.0", "weight_0.5"):
        assert r[w]["rel_err"] < 1e-4, r[w]
        assert r[w]["image_branch_layers"] == 16 and r[w]["patched_keys"] == 16
        assert r[w]["middle_key"] == [["middle", 0, 0]]
    assert r["weight_0_bit_identical"] and r["input_model_untouched"]


def test_plus_adapter_equals_diffusers_with_official_uncond(sd15):
    r = sd15["parity_plus"]
    assert "plus (Resampler), 16 tokens" in r["shown"] and r["tokens"] == [1, 16, 768]
    assert r["rel_err"] < 1e-4 and r["image_branch_layers"] == 16


def test_load_encode_apply_ksampler(sd15):
    r = sd15["ksampler"]
    assert r["finite"] and r["differs_from_plain"]
    assert r["image_branch_calls"] > 0 and r["image_branch_calls"] % 16 == 0  # all 16 layers in every UNet call
    assert 0 < r["windowed_calls"] < r["image_branch_calls"]  # end_at 0.5: only the early steps
    assert r["windowed_sigma_reads"] <= r["steps"] * 2  # per UNet call, not per layer


def test_example_workflows_execute_headless(sd15):
    r = sd15["workflows"]
    # every example but those of other models (FaceID, Flux, Kolors, SD3.5: comfy_host.EXECUTED_ELSEWHERE names
    # the scenario that executes each)
    expected = [p for p in (Path(__file__).resolve().parents[2] / "example_workflows").glob("*.json")
                if not comfy_host.executed_elsewhere(p.stem)]
    assert sorted(r) == sorted(p.stem for p in expected)
    for name, res in r.items():
        assert res["valid"], (name, res)
        if "sdxl" not in name:
            assert res["executed"] and res["error"] is None, (name, res)


def test_sdxl_all_70_layers_equal_diffusers_ip_adapter(tmp_path):
    r = _run(("parity_sdxl",), tmp_path)["parity_sdxl"]
    assert "SDXL base" in r["shown"] and "70 layers" in r["shown"]
    assert r["image_branch_layers"] == 70 and r["patched_keys"] == 70 and r["ip_processors"] == 70
    assert r["middle_keys"] == 10  # the middle block's 10 transformers, under the key the host reads
    assert r["rel_err"] < 1e-4 and r["differs_from_plain"] > 1e-3
    assert r["host_dtype"] == "torch.float16"  # stored as released SDXL files are; computed in fp32 on the CPU
