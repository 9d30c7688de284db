"""Toolkit math and tables: presets, combine methods, reference weights, encoder masks, embeds files, noise.

Parity with the widely used pack on the same inputs is tested in the real host (tests/integration/
run_toolkit.py); here: hand-checked values, choices and every refusal.
"""

import pytest
import torch

from ip_core.config import make_config
from ip_core.embeds import ImagePromptEmbeds, combine_rows, parse_reference_weights, weight_references
from ip_core.embeds_file import load_embeds, save_embeds
from ip_core.encoder_mask import apply_encoder_masks, encoder_masks
from ip_core.families import detect_config
from ip_core.errors import AdapterFileError, AdapterMismatchError, IPAdapterError
from ip_core.layers import layer_specs
from ip_core.noise import make_noise
from ip_core.presets import PRESET_NAMES, PRESETS, Choice, choose_adapter, choose_encoder, choose_lora, lora_names, matches_release, vision_encoder_of_file

SD15, SDXL = layer_specs("sd15"), layer_specs("sdxl")
CONFIGS = {
    "base15": make_config("base", SD15, 768, 1024), "plus15": make_config("plus", SD15, 768, 1280),
    "full15": make_config("full-face", SD15, 768, 1280), "vitg15": make_config("base", SD15, 768, 1280),
    "basexl": make_config("base", SDXL, 2048, 1024),
    # FaceID (configs only, nothing allocated): the released layouts' variants, tokens, LoRA and CLIP widths
    "faceid15": make_config("faceid", SD15, 768, 512, lora_rank=128),
    "faceidxl": make_config("faceid", SDXL, 2048, 512, lora_rank=128),
    "fplus15": make_config("faceid-plus", SD15, 768, 512, lora_rank=128, clip_width=1280),
    "fplusxl": make_config("faceid-plus", SDXL, 2048, 512, lora_rank=128, clip_width=1280),
    "fplus15_vitl": make_config("faceid-plus", SD15, 768, 512, lora_rank=128, clip_width=1024),
    "portrait15": make_config("faceid-portrait", SD15, 768, 512),
    "portraitxl": make_config("faceid-portrait", SDXL, 2048, 512),
    "unnormxl": make_config("faceid-portrait-unnorm", SDXL, 2048, 512),
}
STANDARD, PLUS, LIGHT, VITG = PRESET_NAMES[1], PRESET_NAMES[3], PRESET_NAMES[0], PRESET_NAMES[2]
FACEID, FPLUS, FPLUSV2, PORTRAIT, UNNORM, KOLORS, COMPOSITION = PRESET_NAMES[6:]


def no_contents(name):
    raise IPAdapterError(f"{name}: empty file; download it again")


def test_preset_table_has_the_packs_labels_and_one_encoder_each():
    assert PRESET_NAMES == ("LIGHT - SD1.5 only (low strength)", "STANDARD (medium strength)", "VIT-G (medium strength)",
                            "PLUS (high strength)", "PLUS FACE (portraits)", "FULL FACE - SD1.5 only (portraits stronger)",
                            "FACEID", "FACEID PLUS - SD1.5 only", "FACEID PLUS V2", "FACEID PORTRAIT (style transfer)",
                            "FACEID PORTRAIT UNNORM - SDXL only (strong)", "Kolors", "Composition")
    # FaceID adapters take InsightFace; like the pack's loader, every FaceID preset returns ViT-H (Plus uses it)
    assert [p.clip_vision_name for p in PRESETS] == ["ViT-H/14", "ViT-H/14", "ViT-bigG/14"] + ["ViT-H/14"] * 8 + ["ViT-L/14-336", "ViT-H/14"]
    assert [p.plus_v2 for p in PRESETS] == [None] * 7 + [False, True, None, None, None, None]


def test_the_kolors_preset_finds_the_kolors_files_by_name_or_contents(kolors_plus_sd):
    """The pack's community preset 'Kolors': ip_adapter_plus_general (SDXL-shaped UNet) and CLIP ViT-L/14-336."""
    names = ["ip-adapter-plus_sdxl_vit-h.safetensors", "sub/ip_adapter_plus_general.bin"]
    assert choose_adapter(KOLORS, "sdxl", names, no_contents) == Choice("sub/ip_adapter_plus_general.bin", "by name")
    kolors = detect_config(kolors_plus_sd)
    assert choose_adapter(KOLORS, "sdxl", ["mine.bin"], lambda n: kolors) == Choice("mine.bin", "by contents")
    with pytest.raises(AdapterMismatchError, match="preset 'Kolors' has no SD1.5 adapter"):
        choose_adapter(KOLORS, "sd15", names, no_contents)
    clips = ["CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors", "clip-vit-large-patch14-336.bin", "clip-vit-large-patch14.bin"]
    assert choose_encoder("ViT-L/14-336", clips, lambda n: None).name == "clip-vit-large-patch14-336.bin"


def test_the_composition_preset_finds_the_composition_files_of_each_base_model():
    """The pack's other community preset: ip_plus_composition_sd15 / _sdxl (plus, 16 tokens) on ViT-H."""
    names = ["ip-adapter-plus_sd15.safetensors", "ip_plus_composition_sd15.safetensors", "ip_plus_composition_sdxl.safetensors"]
    assert choose_adapter(COMPOSITION, "sd15", names, no_contents) == Choice("ip_plus_composition_sd15.safetensors", "by name")
    assert choose_adapter(COMPOSITION, "sdxl", names, no_contents) == Choice("ip_plus_composition_sdxl.safetensors", "by name")
    with pytest.raises(IPAdapterError, match="needs ip_plus_composition_sd15"):
        choose_adapter(COMPOSITION, "sd15", names[:1], no_contents)


def test_released_names_match_with_any_separator_in_sub_folders_not_other_releases():
    assert matches_release("sd15/IP-Adapter_SD15.safetensors", "ip-adapter_sd15")
    assert matches_release("ip_adapter-sd15.bin", "ip-adapter_sd15")
    assert not matches_release("ip-adapter-plus_sd15.safetensors", "ip-adapter_sd15")
    assert not matches_release("ip-adapter_sd15_light.safetensors", "ip-adapter_sd15")
    assert not matches_release("ip-adapter_sd15.pth", "ip-adapter_sd15")  # released files are .safetensors / .bin


def test_choose_by_name_in_host_order_with_v11_light_first():
    names = ["a/ip-adapter_sd15_light.safetensors", "ip-adapter-plus_sd15.bin", "ip-adapter-plus_sd15.safetensors",
             "z/ip-adapter_sd15_light_v11.bin"]
    assert choose_adapter(LIGHT, "sd15", names, no_contents).name == "z/ip-adapter_sd15_light_v11.bin"
    assert choose_adapter(LIGHT, "sd15", names[:1], no_contents).name == names[0]
    c = choose_adapter(PLUS, "sd15", names, no_contents)
    assert (c.name, c.how) == ("ip-adapter-plus_sd15.bin", "by name")


def test_preset_without_a_release_for_the_family_is_refused():
    with pytest.raises(AdapterMismatchError, match="has no SDXL adapter.*SD1.5"):
        choose_adapter(LIGHT, "sdxl", ["ip-adapter_sd15_light_v11.bin"], no_contents)
    with pytest.raises(IPAdapterError, match="unknown preset 'ULTRA'"):
        choose_adapter("ULTRA", "sd15", [], no_contents)


def test_renamed_files_are_chosen_by_contents():
    files = {"mine/a.safetensors": CONFIGS["plus15"], "b.bin": CONFIGS["base15"], "c.safetensors": CONFIGS["basexl"],
             "g.safetensors": CONFIGS["vitg15"], "ip-adapter-plus-face_sd15.safetensors": CONFIGS["plus15"]}
    config_of = files.__getitem__
    assert choose_adapter(PLUS, "sd15", sorted(files), config_of).name == "mine/a.safetensors"  # not the plus-face release
    c = choose_adapter(STANDARD, "sdxl", sorted(files), config_of)
    assert (c.name, c.how) == ("c.safetensors", "by contents")
    assert choose_adapter(VITG, "sd15", sorted(files), config_of).name == "g.safetensors"
    assert choose_adapter(STANDARD, "sd15", sorted(files), config_of).name == "b.bin"


def test_ambiguous_contents_and_missing_files_are_errors_listing_what_was_found():
    files = {"one.safetensors": CONFIGS["base15"], "two.safetensors": CONFIGS["base15"]}
    with pytest.raises(IPAdapterError, match=r"2 files in /m/ipadapter hold a SD1.5 base, 4 tokens, ViT-H/14 adapter \(one.safetensors, two.safetensors\).*rename"):
        choose_adapter(STANDARD, "sd15", sorted(files), files.__getitem__, ["/m/ipadapter"])
    files = {"x.safetensors": CONFIGS["base15"], "broken.bin": None}

    def config_of(name):
        if files[name] is None:
            raise IPAdapterError("broken.bin: the file is truncated or corrupt; download it again")
        return files[name]

    with pytest.raises(IPAdapterError) as e:
        choose_adapter(PRESET_NAMES[5], "sd15", sorted(files), config_of, ["/m/ipadapter", "/extra"])
    msg = str(e.value)
    assert "needs ip-adapter-full-face_sd15.safetensors" in msg and "SD1.5 full-face, 257 tokens" in msg
    assert "/m/ipadapter, /extra" in msg and "x.safetensors: SD1.5 base (linear projection)" in msg
    assert "broken.bin: broken.bin: the file is truncated or corrupt" in msg


# The released FaceID files (h94/IP-Adapter-FaceID), as the pack's get_ipadapter_file looks them up.
FACEID_RELEASED = ["ip-adapter-faceid_sd15.bin", "ip-adapter-faceid_sdxl.bin", "ip-adapter-faceid-plus_sd15.bin",
                   "ip-adapter-faceid-plusv2_sd15.bin", "ip-adapter-faceid-plusv2_sdxl.bin",
                   "ip-adapter-faceid-portrait_sd15.bin", "ip-adapter-faceid-portrait-v11_sd15.bin",
                   "ip-adapter-faceid-portrait_sdxl.bin", "ip-adapter-faceid-portrait_sdxl_unnorm.bin"]


@pytest.mark.parametrize("name, family, expected", [
    (FACEID, "sd15", "ip-adapter-faceid_sd15.bin"), (FACEID, "sdxl", "ip-adapter-faceid_sdxl.bin"),
    (FPLUS, "sd15", "ip-adapter-faceid-plus_sd15.bin"),
    (FPLUSV2, "sd15", "ip-adapter-faceid-plusv2_sd15.bin"), (FPLUSV2, "sdxl", "ip-adapter-faceid-plusv2_sdxl.bin"),
    (PORTRAIT, "sd15", "ip-adapter-faceid-portrait-v11_sd15.bin"), (PORTRAIT, "sdxl", "ip-adapter-faceid-portrait_sdxl.bin"),
    (UNNORM, "sdxl", "ip-adapter-faceid-portrait_sdxl_unnorm.bin"),
])
def test_faceid_presets_choose_the_released_names(name, family, expected):
    for names in (sorted(FACEID_RELEASED), sorted(FACEID_RELEASED, reverse=True)):
        c = choose_adapter(name, family, ["x/" + n for n in names], no_contents)
        assert (c.name, c.how) == ("x/" + expected, "by name")


def test_faceid_presets_name_the_lora_file_released_with_their_adapter():
    """FaceID and FaceID Plus / PlusV2 came with a LoRA file (models/loras): the adapter's name + _lora; the
    portrait adapters and the image presets with none."""
    assert lora_names(FACEID, "sd15") == ("ip-adapter-faceid_sd15_lora",)
    assert lora_names(FPLUSV2, "sdxl") == ("ip-adapter-faceid-plusv2_sdxl_lora",)
    assert lora_names(PORTRAIT, "sd15") == lora_names(UNNORM, "sdxl") == lora_names(PRESET_NAMES[1], "sd15") == ()
    assert lora_names(FPLUS, "sdxl") == ()  # no SDXL release
    loras = ["style.safetensors", "faces/ip-adapter-faceid-plusv2_sd15_lora.safetensors",
             "ip-adapter-faceid-plus_sd15_lora.safetensors", "ip-adapter-faceid_sd15_lora.safetensors"]
    assert choose_lora(FACEID, "sd15", loras) == "ip-adapter-faceid_sd15_lora.safetensors"
    assert choose_lora(FPLUSV2, "sd15", loras) == "faces/ip-adapter-faceid-plusv2_sd15_lora.safetensors"
    assert choose_lora(FPLUS, "sd15", loras) == "ip-adapter-faceid-plus_sd15_lora.safetensors"
    assert choose_lora(FACEID, "sdxl", loras) is None


def test_faceid_presets_old_portrait_name_and_refusals_by_family():
    old = [n for n in FACEID_RELEASED if "v11" not in n]
    assert choose_adapter(PORTRAIT, "sd15", old, no_contents).name == "ip-adapter-faceid-portrait_sd15.bin"
    with pytest.raises(AdapterMismatchError, match="has no SDXL adapter"):
        choose_adapter(FPLUS, "sdxl", FACEID_RELEASED, no_contents)
    with pytest.raises(AdapterMismatchError, match="has no SD1.5 adapter"):
        choose_adapter(UNNORM, "sd15", FACEID_RELEASED, no_contents)


def test_faceid_presets_find_renamed_files_by_contents():
    files = {"a.bin": CONFIGS["faceid15"], "b.bin": CONFIGS["portrait15"], "c.bin": CONFIGS["fplus15"],
             "d.bin": CONFIGS["faceidxl"], "e.bin": CONFIGS["portraitxl"], "f.bin": CONFIGS["unnormxl"],
             "g.bin": CONFIGS["fplusxl"], "h.bin": CONFIGS["fplus15_vitl"], "ip-adapter-faceid_sd15.bin": CONFIGS["faceid15"]}
    config_of = files.__getitem__
    for name, family, expected in [(FACEID, "sd15", "ip-adapter-faceid_sd15.bin"), (PORTRAIT, "sd15", "b.bin"),
                                   (FPLUS, "sd15", "c.bin"), (FPLUSV2, "sd15", "c.bin"), (FACEID, "sdxl", "d.bin"),
                                   (PORTRAIT, "sdxl", "e.bin"), (UNNORM, "sdxl", "f.bin"), (FPLUSV2, "sdxl", "g.bin")]:
        assert choose_adapter(name, family, sorted(files), config_of).name == expected, (name, family)
    del files["ip-adapter-faceid_sd15.bin"]
    c = choose_adapter(FACEID, "sd15", sorted(files), config_of)
    assert (c.name, c.how) == ("a.bin", "by contents")
    # a FaceID Plus file taking another CLIP width than ViT-H's (h.bin) is not the preset's
    assert "h.bin: SD1.5 FaceID Plus/PlusV2" in str(pytest.raises(IPAdapterError, choose_adapter, FPLUS, "sd15",
                                                                    ["h.bin"], config_of).value)


def test_faceid_plus_and_plusv2_renamed_are_ambiguous_by_contents():
    files = {"mine/plus.bin": CONFIGS["fplus15"], "mine/v2.bin": CONFIGS["fplus15"]}
    for name, wanted in ((FPLUS, "ip-adapter-faceid-plus_sd15"), (FPLUSV2, "ip-adapter-faceid-plusv2_sd15")):
        with pytest.raises(IPAdapterError, match=rf"2 files in /m hold a SD1.5 faceid-plus, 4 tokens, InsightFace "
                                                 rf"ArcFace \+ ViT-H/14 CLIP adapter \(mine/plus.bin, mine/v2.bin\).*"
                                                 rf"rename the one you mean to {wanted}\."):
            choose_adapter(name, "sd15", sorted(files), files.__getitem__, ["/m"])
    # named as released: each preset takes its own file, the other one is not a candidate
    named = {"ip-adapter-faceid-plus_sd15.bin": CONFIGS["fplus15"], "ip-adapter-faceid-plusv2_sd15.bin": CONFIGS["fplus15"]}
    assert choose_adapter(FPLUS, "sd15", sorted(named), named.__getitem__).name == "ip-adapter-faceid-plus_sd15.bin"
    assert choose_adapter(FPLUSV2, "sd15", sorted(named), named.__getitem__).name == "ip-adapter-faceid-plusv2_sd15.bin"


def test_faceid_preset_with_missing_files_lists_what_was_found():
    files = {"ip-adapter-faceid-plusv2_sd15.bin": CONFIGS["fplus15"], "mine.bin": CONFIGS["faceid15"],
             "xl.safetensors": CONFIGS["portraitxl"]}
    with pytest.raises(IPAdapterError) as e:
        choose_adapter(PORTRAIT, "sd15", sorted(files), files.__getitem__, ["/m/ipadapter"])
    msg = str(e.value)
    assert ("needs ip-adapter-faceid-portrait-v11_sd15.safetensors or ip-adapter-faceid-portrait_sd15.safetensors "
            "(or any file holding a SD1.5 faceid-portrait, 16 tokens, InsightFace ArcFace adapter); none found in /m/ipadapter") in msg
    assert "ip-adapter-faceid-plusv2_sd15.bin: SD1.5 FaceID Plus/PlusV2" in msg
    assert "mine.bin: SD1.5 FaceID (face embedding MLP), 4 tokens" in msg and "xl.safetensors: SDXL FaceID portrait" in msg


def test_choose_encoder_by_name_then_contents(tmp_path):
    from safetensors.torch import save_file

    names = ["CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors", "h/CLIP-ViT-H-14-laion2B-s32B-b79K.bin"]
    assert choose_encoder("ViT-H/14", names, lambda n: None).name == names[1]
    assert choose_encoder("ViT-bigG/14", names, lambda n: None).name == names[0]
    save_file({"vision_model.embeddings.patch_embedding.weight": torch.zeros(1664, 3, 14, 14)}, str(tmp_path / "g.safetensors"))
    save_file({"visual.conv1.weight": torch.zeros(1280, 3, 14, 14)}, str(tmp_path / "h.safetensors"))
    torch.save({"x": torch.zeros(1)}, str(tmp_path / "p.bin"))
    of = lambda n: vision_encoder_of_file(tmp_path / n)  # noqa: E731
    assert [of(n) for n in ("g.safetensors", "h.safetensors", "p.bin")] == ["ViT-bigG/14", "ViT-H/14", None]
    c = choose_encoder("ViT-bigG/14", ["h.safetensors", "g.safetensors"], of)
    assert (c.name, c.how) == ("g.safetensors", "by contents")
    with pytest.raises(IPAdapterError, match=r"no ViT-bigG/14 CLIP vision model found in /cv.*h.safetensors: ViT-H/14; p.bin: not read"):
        choose_encoder("ViT-bigG/14", ["h.safetensors", "p.bin"], of, ["/cv"])


def test_combine_rows_and_its_refusals():
    x = torch.tensor([[1.0, -2.0], [3.0, 4.0], [5.0, 0.0]])
    assert torch.equal(combine_rows(x, "concat"), x)
    assert torch.equal(combine_rows(x, "add"), torch.tensor([[9.0, 2.0]]))
    assert torch.equal(combine_rows(x, "subtract"), torch.tensor([[-3.0, -4.0]]))
    assert torch.equal(combine_rows(x, "max"), torch.tensor([[5.0, 4.0]]))
    assert torch.equal(combine_rows(x, "min"), torch.tensor([[1.0, -2.0]]))
    with pytest.raises(IPAdapterError, match="subtract.*at least two"):
        combine_rows(x[:1], "subtract")
    with pytest.raises(IPAdapterError, match="norm average.*NaN.*use 'average'"):
        combine_rows(torch.zeros(2, 3), "norm average")


def test_reference_weights_parse_and_scale_like_a_scalar_weight():
    assert parse_reference_weights("", 3) is None and parse_reference_weights("  ", 1) is None
    assert parse_reference_weights("1, 0.5", 2) == [1.0, 0.5]
    assert parse_reference_weights("0.7", 3) == [0.7] * 3
    assert parse_reference_weights("1\n-0.5,", 2) == [1.0, -0.5]
    for bad, match in (("1, 2, 3", "3 numbers for 2 reference images"), ("1, x", "'x' is not a number"),
                       ("4", "outside -1.0..3.0"), ("nan", "outside")):
        with pytest.raises(IPAdapterError, match=match):
            parse_reference_weights(bad, 2)
    f = torch.randn(2, 257, 1280)
    w = weight_references(f, [0.3, 1.7])
    assert torch.equal(w[0], f[0] * 0.3) and torch.equal(w[1], f[1] * 1.7)  # as the pack's `embeds * weight`
    assert weight_references(f, None) is f


def test_encoder_mask_center_equals_torchvision_centre_crop_and_bicubic_resize():
    import torchvision.transforms.v2 as T

    m = torch.rand(1, 257, 301)
    ref = T.Compose([T.CenterCrop(257), T.Resize((224, 224), interpolation=T.InterpolationMode.BICUBIC, antialias=True)])(m[:, None])[:, 0]
    assert torch.equal(encoder_masks(m, 3, (10, 10), "center"), ref)
    same = torch.rand(2, 224, 224)
    assert encoder_masks(same, 2, (224, 224), "center") is not None
    assert torch.equal(encoder_masks(same, 2, (224, 224), "center"), same)
    pad = encoder_masks(torch.ones(100, 200), 1, (100, 200), "pad")
    assert pad.shape == (1, 224, 224) and pad[0, 0].sum() == 0 and torch.allclose(pad[0, 112], torch.ones(224))  # padded rows are 0
    assert encoder_masks(torch.rand(5, 40), 1, (5, 40), "squash").shape == (1, 224, 224)
    px = torch.randn(2, 3, 224, 224)
    assert torch.equal(apply_encoder_masks(px, same), px * same[:, None])


def test_encoder_mask_refusals():
    with pytest.raises(IPAdapterError, match="mask holds 2 masks of \\(8, 8\\) for 3 reference images"):
        encoder_masks(torch.ones(2, 8, 8), 3, (8, 8))
    with pytest.raises(IPAdapterError, match="MASK \\[height, width\\]"):
        encoder_masks(torch.ones(8), 1, (8, 8))
    with pytest.raises(IPAdapterError, match="NaN"):
        encoder_masks(torch.full((8, 8), float("nan")), 1, (8, 8))


def _embeds(features=True):
    c = torch.randn(1, 8, 32)
    return ImagePromptEmbeds(c, c * 0, "sd15/base/4x32/image_embeds:64", "tiny", "ViT-H/14", "abc123",
                             torch.randn(2, 64) if features else None, torch.zeros(2, 64) if features else None)


def test_embeds_file_round_trip(tmp_path):
    for features in (True, False):
        e = _embeds(features)
        path = save_embeds(e, tmp_path / "e.safetensors", note="two cats")
        back = load_embeds(path)
        assert back.metadata() == e.metadata()
        assert back.state_dict().keys() == e.state_dict().keys()
        assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), e.state_dict().values()))


def test_embeds_file_refuses_pickles_foreign_and_damaged_files(tmp_path):
    from safetensors.torch import save_file

    torch.save(torch.randn(1, 1024), tmp_path / "theirs.ipadpt")  # what the other pack's Save Embeds writes
    with pytest.raises(AdapterFileError, match="a pickle.*nothing in it was loaded"):
        load_embeds(tmp_path / "theirs.ipadpt")
    save_file({"image_proj.proj.weight": torch.zeros(2, 2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(AdapterFileError, match="not an image prompt embeds file.*image_proj.proj.weight"):
        load_embeds(tmp_path / "model.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"<html>")
    with pytest.raises(AdapterFileError, match="not a safetensors file"):
        load_embeds(tmp_path / "junk.safetensors")
    with pytest.raises(AdapterFileError, match="no such embeds file"):
        load_embeds(tmp_path / "missing.safetensors")
    meta = {"format": "ipadapter-image-prompt-embeds", "format_version": "1", "signature": "s", "description": "d",
            "encoder_name": "e", "adapter_fingerprint": "f"}
    save_file({"cond": torch.zeros(1, 4, 8)}, str(tmp_path / "half.safetensors"), metadata=meta)
    with pytest.raises(AdapterFileError, match="damaged embeds file \\(missing \\['uncond'\\]"):
        load_embeds(tmp_path / "half.safetensors")
    save_file({"cond": torch.zeros(1, 4, 8), "uncond": torch.zeros(1, 4, 8)}, str(tmp_path / "v2.safetensors"),
              metadata={**meta, "format_version": "2"})
    with pytest.raises(AdapterFileError, match="version '2'"):
        load_embeds(tmp_path / "v2.safetensors")


def test_noise_is_seeded_leaves_the_global_rng_alone_and_checks_inputs():
    img = torch.rand(1, 240, 200, 3, generator=torch.Generator().manual_seed(0))
    state = torch.get_rng_state()
    a = make_noise("dissolve", 0.5, 3, img)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a, make_noise("dissolve", 0.5, 3, img)) and a.shape == (1, 224, 224, 3)
    assert not torch.equal(a, make_noise("dissolve", 0.5, 3, img, seed=1))
    assert torch.equal(make_noise("fade", 0.0, 0, None), torch.zeros(1, 224, 224, 3))
    assert 0 <= float(make_noise("gaussian", 1.0, 0).min()) and float(make_noise("gaussian", 1.0, 0).max()) <= 1
    with pytest.raises(IPAdapterError, match="unknown noise type 'pink'"):
        make_noise("pink", 0.5, 0)
    with pytest.raises(IPAdapterError, match="strength is 2"):
        make_noise("fade", 2, 0)
    with pytest.raises(IPAdapterError, match="non-empty IMAGE"):
        make_noise("fade", 0.5, 0, torch.zeros(0, 8, 8, 3))
