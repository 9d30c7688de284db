"""FaceID in the real host (COMFYUI_PATH): Load -> Encode Face (stand-in analyzer) -> Apply with the file's LoRA as
host weight patches, against the official LoRA attention processors on a diffusers UNet; the example workflow
executes headless. Scenarios run in their own process (run_faceid_in_comfy.py). Skipped without COMFYUI_PATH, failed in CI (conftest.py)."""
from scenario import last_result

SCRIPT = "run_faceid_in_comfy.py"


def _run(scenario, tmp_path):
    return last_result(SCRIPT, [scenario], tmp_path, timeout=1800)


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
