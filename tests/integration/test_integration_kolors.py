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
