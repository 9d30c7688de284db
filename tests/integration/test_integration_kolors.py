"""Kolors IP-Adapter-Plus against the widely used pack (its only other implementation), both loaded in a real
ComfyUI (COMFYUI_PATH): run_kolors.py. Skipped without COMFYUI_PATH, failed in CI (conftest.py)."""
from scenario import last_result


def test_kolors_plus_embeds_equal_the_packs_and_a_224px_encoder_is_refused(tmp_path):
    """Encode Image Prompt with legacy (the pack's black "no image") equals the pack's 336 px encoding and Kolors
    Resampler (12 heads) for both prompts; without legacy the image prompt is the same, only "no image" follows
    the official recipe. The attention the tokens then enter is SDXL's, tested against the pack elsewhere."""
    r = last_result("run_kolors.py", ["embeds"], tmp_path, timeout=1800)
    assert r["description"].startswith("Kolors plus (Resampler), 16 tokens, 70 layers, needs ViT-L/14-336")
    assert r["features_tokens"] == 577 and r["tokens"] == r["uncond_tokens"] == [1, 32, 2048]
    assert r["cond_rel"] < 1e-5 and r["uncond_rel"] < 1e-5 and r["official_cond_rel"] < 1e-5, r
    assert r["vit_l_224"].startswith("AdapterMismatchError: ")
    assert "needs ViT-L/14-336 hidden states (577 tokens, 336 px images)" in r["vit_l_224"]
    assert "gives 257 tokens" in r["vit_l_224"] and "clip-vit-large-patch14-336" in r["vit_l_224"]


def test_kolors_faceid_plus_equals_the_packs_faceid_kolors_node(tmp_path):
    """Encode Face + Apply IPAdapter (weight_kolors) against the pack's IPAdapter FaceID Kolors, released shapes
    (1.2B parameters), a narrow host SDXL UNet with Kolors' encoder_hid_proj: every attn2 image term for the cond
    and the uncond row, at defaults and at other weight / weight_faceidv2 / weight_kolors values."""
    r = last_result("run_kolors.py", ["faceid"], tmp_path, timeout=3600)
    assert r["detected_equal"] and r["parameters"] > 1_190_000_000
    assert r["description"].startswith("Kolors FaceID Plus/PlusV2 (face embedding + CLIP Resampler), 6 tokens, 70 layers")
    assert r["crops"] == [1, 336, 336, 3] and r["pack_crop_sizes"] == [336] and r["tokens"] == [1, 6, 4096]
    assert r["zero_bit_identical"]
    assert len(r["cases"]) == 2
    for name, c in r["cases"].items():
        assert c["layers_compared"] == 60 and c["layers_with_image_term"] == 60, (name, c)
        assert c["term_rel_cond"] < 1e-4 and c["term_rel_uncond"] < 1e-4, (name, c)
        assert c["face_image"] == [1, 336, 336, 3]
    assert r["plain_sdxl"].startswith("AdapterMismatchError: ") and "it is not a Kolors UNet" in r["plain_sdxl"]
    assert "Kolors-IP-Adapter-FaceID-Plus.bin needs a Kolors model" in r["plain_sdxl"]


def test_the_kolors_example_workflow_executes(tmp_path):
    """example_workflows/ipadapter_kolors.json validated and executed by the host (the loaders and text encodes
    retyped to random stand-ins of Kolors' shapes); the image branch runs in all 70 layers on every UNet call."""
    r = last_result("run_kolors.py", ["workflow"], tmp_path, timeout=3600)
    assert r["valid"], r
    assert {"IPALoadAdapter", "IPAEncodeImagePrompt", "IPAApplyAdapter", "KSampler"} <= set(r["classes"])
    assert r["executed"] and r["error"] is None, r
    assert len(r["images"]) == 1 and r["images"][0].startswith("ipadapter_kolors")
    assert r["image_branch_calls"] > 0 and r["image_branch_calls"] % 70 == 0, r
