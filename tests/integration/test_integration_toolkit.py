"""The toolkit against the widely used pack, both loaded in a real ComfyUI (COMFYUI_PATH): run_toolkit.py.

Skipped without COMFYUI_PATH, failed in CI (conftest.py). The pack comes from IPADAPTER_PLUS_PATH or ../shared/hosts (comfy_host).
"""
from scenario import last_result

SCRIPT = "run_toolkit.py"


def _run(scenario, tmp_path):
    return last_result(SCRIPT, [scenario], tmp_path, timeout=1800)


def test_toolkit_presets_choose_what_the_packs_loader_chooses(tmp_path):
    r = _run("presets", tmp_path)
    assert r["cases"] == 5 * 13 * 3 and r["mismatches"] == []  # folders x 13 presets x (SD1.5, SDXL, CLIP vision)


def test_toolkit_preset_node_in_the_host(tmp_path):
    r = _run("preset_node", tmp_path)
    assert r["STANDARD (medium strength)"]["adapter"] == "ip-adapter_sd15.safetensors"
    assert r["PLUS (high strength)"]["adapter"] == "ip-adapter-plus_sd15.safetensors"
    assert r["FULL FACE - SD1.5 only (portraits stronger)"]["adapter"] == "ip-adapter-full-face_sd15.safetensors"
    for p in ("STANDARD (medium strength)", "PLUS (high strength)"):
        assert r[p]["clip_vision"] == "my_vit_h.safetensors" and "(by contents)" in r[p]["text"]
        assert r[p]["model_is_input"] and r[p]["clip_vision_is_host_model"]
    assert r["renamed plus"]["adapter"] == "renamed_x-plus_sd15.safetensors" and "(by contents)" in r["renamed plus"]["text"]
    assert r["missing"].startswith("IPAdapterError") and "ip-adapter_sd15_vit-G.safetensors" in r["missing"]
    assert "renamed_x_sd15.safetensors: SD1.5 base" in r["missing"]


def test_toolkit_combine_equals_the_packs_combine_embeds(tmp_path):
    r = _run("combine", tmp_path)
    assert len(r["methods"]) == 34 and all(r["methods"].values()), r["methods"]
    assert all(v["equal"] for v in r["node"].values()), r["node"]


def test_toolkit_encoder_weight_and_mask_equal_the_packs_encoder(tmp_path):
    r = _run("encoder", tmp_path)
    assert len(r) == 6
    for k, v in r.items():
        assert v["pixels_equal"] and v["preprocess_equal"] and v["features_equal"], (k, v)
        assert v["node_features_max_abs_diff"] < 1e-5, (k, v)


def test_toolkit_noise_equals_the_packs_noise(tmp_path):
    r = _run("noise", tmp_path)
    assert len(r["cases"]) == 108
    assert all(v["equal"] and v["rng_untouched"] for v in r["cases"].values()), r["cases"]
    assert r["node_equal"] and r["seeded_repeatable"] and r["seeded_differs"]


def test_toolkit_save_and_load_embeds_in_the_host(tmp_path):
    r = _run("embeds_files", tmp_path)
    assert r["files"] == ["ipadapter/test_00001_.safetensors"] and r["round_trip"] and r["applies_with_its_adapter"]
    assert "test.safetensors" in r["listed"] and "two references" in r["loaded_text"]
    assert "AdapterMismatchError" in r["other_adapter_apply"] and "another adapter" in r["other_adapter_load"]
    assert "a pickle" in r["pickle"] and "not an image prompt embeds file" in r["foreign"]
    for label in ("save_dotdot", "save_absolute"):  # the host's refusal, in its words, as the user's error
        assert r[label].startswith("InputRefusedError: filename_prefix") and "outside the output folder" in r[label], r[label]
    assert not r["escaped"]
    assert r["load_dotdot"].startswith("InputRefusedError") and "points outside its folder" in r["load_dotdot"]
    for label in ("load_wide", "apply_wide"):  # before any matmul: both widths named, never "This is a bug"
        assert r[label].startswith("AdapterMismatchError") and "769" in r[label] and "width 768" in r[label], r[label]
