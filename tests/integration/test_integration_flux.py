"""Flux IP-Adapters in a real ComfyUI (COMFYUI_PATH): run_flux.py. Skipped without COMFYUI_PATH, failed in CI."""
from scenario import last_result

SCRIPT = "run_flux.py"


def test_flux_xlabs_equals_diffusers_in_the_host(tmp_path):
    r = last_result(SCRIPT, ["exact"], tmp_path, timeout=1200)
    assert r["unpatched_rel_err"] < 1e-5  # the host's Flux and diffusers' agree before any patch
    assert r["xlabs_rel_err"] < 1e-4 and r["xlabs_changes_output"] > 1e-3
    assert r["xlabs_patched_keys"] == [["double_block", 0], ["double_block", 1]] and r["xlabs_calls_per_call"] == 2
    assert r["xlabs_weight0_identical"] and r["xlabs_outside_window_identical"] and r["instantx_weight0_identical"]
    assert r["per_item_rel_err"] < 1e-5
    assert r["cfg_uncond_rel_err"] < 1e-5 and r["cfg_cond_rel_err"] < 1e-5  # the uncond chunk gets the uncond tokens
    assert r["foreign_patch_calls"] == 1 and r["foreign_wrapped_identical"]  # another pack's dit patch is wrapped
    # InstantX stacked on XLabs: 2 double + 2 single blocks patched, 2 + 4 image terms per call
    assert r["stacked_keys"] == [["double_block", 0], ["double_block", 1], ["single_block", 0], ["single_block", 1]]
    assert r["stacked_calls_per_call"] == 6 and r["instantx_changes_output"] > 1e-4
    assert r["instantx_rel_err"] < 1e-4 and r["instantx_alone_changes_output"] > 1e-4  # vs the InstantX processor as read
    # attn_mask: all ones = no mask, all zeros = the unpatched model (InstantX under a mask leaves the single
    # blocks' text rows alone, so its all-ones mask differs from no mask there)
    assert r["xlabs_mask_ones_identical"] and r["xlabs_mask_zeros_identical_to_unpatched"]
    assert r["instantx_mask_zeros_identical_to_unpatched"] == 0.0
    assert r["sd_on_flux"].startswith("AdapterMismatchError") and "an adapter for SD1.5" in r["sd_on_flux"] and "Flux" in r["sd_on_flux"]


def test_flux_real_width_model_is_detected_and_patched_in_the_host(tmp_path):
    r = last_result(SCRIPT, ["detect"], tmp_path, timeout=1200)
    assert r["unet_config"] == {"image_model": "flux", "hidden_size": 3072, "context_in_dim": 4096, "depth": 1, "depth_single_blocks": 0}
    assert r["loaded_text"] == ("flux-ip-adapter-v2.safetensors: Flux XLabs flux-ip-adapter v2, 16 tokens, 1 double block, "
                                "needs ViT-L/14 image_embeds (width 768)")
    assert r["vit_h"].startswith("AdapterMismatchError") and "ViT-L/14" in r["vit_h"] and "(ViT-H/14)" in r["vit_h"]
    assert r["patched_keys"] == [["double_block", 0]] and r["calls"] == 1
    assert r["finite"] and r["changes_output"] > 1e-3 and r["weight0_identical"]


def test_flux_example_workflow_executes_in_the_host(tmp_path):
    r = last_result(SCRIPT, ["workflow"], tmp_path, timeout=1200)
    assert r["valid"] and r["executed"] and r["error"] is None and r["finite"], r
    assert r["images"] == ["ipadapter_flux_00001_.png"]
    assert r["block_calls"] == r["image_terms"] == 2 * 2  # 2 steps x 2 double blocks (cfg 1: one batch chunk)


def test_instantx_siglip_encoder_in_the_host(tmp_path):
    r = last_result(SCRIPT, ["siglip"], tmp_path, timeout=1200)
    assert r["pixels_max_diff"] < 1e-5  # our squash + 0.5 / 0.5 normalisation = SiglipImageProcessor (PIL)
    # transformers' pooler_output vs ComfyUI's SigLIP tower (fp16-stored weights) + our pooling head: the
    # difference is the host tower's own (tower_rel_err); our head on the host's tokens is exact (ip_core test)
    assert r["pooled_rel_err"] < 2e-3 and abs(r["pooled_rel_err"] - r["tower_rel_err"]) < 1e-5
    assert r["plain_siglip"].startswith("AdapterMismatchError") and "Load SigLIP Vision, pooled" in r["plain_siglip"]
    assert r["calls"] == 4 and r["finite"]  # 2 double + 2 single blocks
    assert r["no_head"].startswith("AdapterFileError") and "no SigLIP attention-pooling head" in r["no_head"]
