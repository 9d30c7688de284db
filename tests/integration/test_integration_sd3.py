"""The SD3.5 IP-Adapter (InstantX) in a real ComfyUI (COMFYUI_PATH): run_sd3.py. Skipped without COMFYUI_PATH,
failed in CI."""
from scenario import last_result

SCRIPT = "run_sd3.py"


def test_sd35_instantx_equals_diffusers_in_the_host(tmp_path):
    r = last_result(SCRIPT, ["exact"], tmp_path, timeout=1200)
    assert r["unpatched_rel_err"] < 1e-5  # the host's MMDiT and diffusers' SD3 transformer agree before any patch
    # our Apply node on the host's model = diffusers' SD3 transformer with the adapter loaded by diffusers' loader
    assert r["per_item_rel_err"] < 1e-4 and r["changes_output"] > 1e-3
    assert r["cfg_rel_err"] < 1e-4  # the uncond chunk reads zero features, as diffusers' SD3 pipeline
    assert r["patched_keys"] == [["double_block", 0], ["double_block", 1]] and r["calls_per_call"] == 2
    assert r["resampler_runs_per_call"] == 1  # the timestep-conditioned resampler once per call, not per block
    # the adapter's weights under the host's memory management: listed by the patches, loaded with the model
    assert r["managed_models"] == ["ModelPatcher"] and r["managed_is_the_adapter"]
    assert r["managed_loaded_with_model"] and r["after_load_identical"]
    assert r["weight0_identical"] and r["outside_window_identical"]
    assert r["mask_ones_identical"] and r["mask_zeros_identical_to_unpatched"] and r["half_mask_between"]
    assert r["stacked_calls_per_call"] == 4 and r["stacked_resampler_runs"] == [1, 2] and r["stacked_changes_output"] > 1e-4
    assert r["foreign_patch_calls"] == 1 and r["foreign_wrapped_identical"]  # another pack's dit patch is wrapped
    assert r["sd_on_sd3"].startswith("AdapterMismatchError") and "an adapter for SD1.5" in r["sd_on_sd3"] and "SD3" in r["sd_on_sd3"]
    assert r["sd3_on_flux"].startswith("AdapterMismatchError") and "an adapter for SD3.5 but the model is Flux" in r["sd3_on_flux"]
    assert "Use 'V only'" in r["kv_scaling"] and "Use weight_type 'linear'" in r["style_transfer"]
    assert "Turn legacy off" in r["legacy"]
    assert "Q/K norm has zero weights" in r["zero_norm_weight"]
    assert r["large_on_small"].startswith("AdapterMismatchError") and "2432 wide" in r["large_on_small"] and "128 wide" in r["large_on_small"]


def test_sd35_real_widths_and_siglip_features_in_the_host(tmp_path):
    r = last_result(SCRIPT, ["detect"], tmp_path, timeout=1200)
    assert r["loaded_text"] == ("ip-adapter.bin: SD3.5 InstantX IP-Adapter (timestep-conditioned Resampler), 64 tokens, "
                                "1 joint block, needs SigLIP so400m-patch14-384 penultimate_hidden_states (width 1152)")
    # the host's SigLIP at 384 px: 729 tokens, transformers' hidden_states[-2]; the difference is the host tower's
    # own (it stores CLIP vision weights in fp16 and uses LayerNorm eps 1e-5: see the Flux SigLIP test)
    assert r["features_shape"] == [1, 729, 1152] and r["features_rel_err"] < 2e-3 and r["uncond_zero"]
    assert r["enhanced_shape"] == [1, 2 * 729, 1152]  # enhance: the whole image and its merged 2 x 2 grid, concatenated
    assert r["vit_h"].startswith("AdapterMismatchError") and "(ViT-H/14)" in r["vit_h"] and "SigLIP so400m" in r["vit_h"]
    assert r["model_class"] == "SD3" and r["patched_keys"] == [["double_block", 0]] and r["calls"] == 1
    assert r["finite"] and r["changes_output"] > 1e-3 and r["weight0_identical"]


def test_sd35_example_workflow_executes_in_the_host(tmp_path):
    r = last_result(SCRIPT, ["workflow"], tmp_path, timeout=1200)
    assert r["valid"] and r["executed"] and r["error"] is None and r["finite"], r
    assert r["images"] == ["ipadapter_sd35_00001_.png"]
    # 2 steps x 2 joint blocks, cond and uncond in one batch of 2 (cfg 4.5): one image term per block call
    assert r["block_calls"] == r["image_terms"] == 2 * 2 and r["batch_sizes"] == [2]
