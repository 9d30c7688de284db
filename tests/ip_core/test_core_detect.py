"""Variant detection from keys and shapes: every released family, and every refusal."""
import pytest
import torch

from ip_core import UnsupportedAdapterError, detect_config
from ip_core.adapter import IPAdapter

from ipa_factories import released_sd

# (variant, base model, context dim, encoder width) -> expected (tokens, layers, encoder, output)
RELEASED = {
    "SD1.5 base / light": (("base", "sd15", 768, 1024), (4, 16, "ViT-H/14", "image_embeds")),
    "SD1.5 vit-G": (("base", "sd15", 768, 1280), (4, 16, "ViT-bigG/14", "image_embeds")),
    "SD1.5 plus / plus-face": (("plus", "sd15", 768, 1280), (16, 16, "ViT-H/14", "penultimate_hidden_states")),
    "SD1.5 full-face": (("full-face", "sd15", 768, 1280), (257, 16, "ViT-H/14", "penultimate_hidden_states")),
    "SDXL base (bigG)": (("base", "sdxl", 2048, 1280), (4, 70, "ViT-bigG/14", "image_embeds")),
    "SDXL base vit-h": (("base", "sdxl", 2048, 1024), (4, 70, "ViT-H/14", "image_embeds")),
    "SDXL plus vit-h": (("plus", "sdxl", 2048, 1280), (16, 70, "ViT-H/14", "penultimate_hidden_states")),
}


@pytest.mark.parametrize("name", list(RELEASED))
def test_released_variants_are_detected_from_shapes(name):
    (variant, base, ctx, width), (tokens, layers, encoder, output) = RELEASED[name]
    config = detect_config(released_sd(variant, base, ctx, width))
    assert (config.variant, config.base_model, config.context_dim) == (variant, base, ctx)
    assert (config.num_tokens, config.num_layers, config.encoder_name, config.encoder_output) == (tokens, layers, encoder, output)
    assert config.encoder_width == width


def test_sd15_base_has_exactly_the_papers_parameter_count():
    sd = released_sd("base", "sd15", 768, 1024)
    assert sum(t.numel() for part in sd.values() for t in part.values()) == 22_319_616
    ip = sum(t.numel() for t in sd["ip_adapter"].values())
    assert ip == 19_169_280


def test_released_key_numbering_sd15():
    sd = released_sd("base", "sd15", 768, 1024)
    numbers = sorted({int(k.split(".")[0]) for k in sd["ip_adapter"]})
    assert numbers == list(range(1, 32, 2))
    widths = {n: sd["ip_adapter"][f"{n}.to_k_ip.weight"].shape[0] for n in numbers}
    assert [n for n in numbers if widths[n] == 320] == [1, 3, 25, 27, 29]
    assert [n for n in numbers if widths[n] == 640] == [5, 7, 19, 21, 23]
    assert [n for n in numbers if widths[n] == 1280] == [9, 11, 13, 15, 17, 31]


def test_plus_resampler_heads_follow_the_release():
    sd15 = detect_config(released_sd("plus", "sd15", 768, 1280)).resampler
    sdxl = detect_config(released_sd("plus", "sdxl", 2048, 1280)).resampler
    assert (sd15.dim, sd15.heads, sd15.depth, sd15.num_queries) == (768, 12, 4, 16)
    assert (sdxl.dim, sdxl.heads, sdxl.output_dim) == (1280, 20, 2048)


def test_detected_config_loads_strictly_on_full_shapes():
    for (variant, base, ctx, width), _ in RELEASED.values():
        sd = released_sd(variant, base, ctx, width)
        adapter = IPAdapter.from_state_dict(sd, detect_config(sd))
        assert adapter.config.variant == variant


def test_unknown_layout_lists_what_was_found():
    sd = {"image_proj": {"weird.weight": torch.empty(3, 4)}, "ip_adapter": {"1.to_k_ip.weight": torch.empty(320, 768)}}
    with pytest.raises(UnsupportedAdapterError, match=r"unknown image projection layout: image_proj has 1 tensors \(weird.weight\[3, 4\]"):
        detect_config(sd)


def test_incomplete_sd15_adapter_is_refused():
    sd = released_sd("base", "sd15", 768, 1024)
    del sd["ip_adapter"]["31.to_k_ip.weight"], sd["ip_adapter"]["31.to_v_ip.weight"]
    with pytest.raises(UnsupportedAdapterError, match="SD1.5, which has 16 cross-attention layers"):
        detect_config(sd)


def test_mixed_context_widths_are_refused():
    sd = released_sd("base", "sd15", 768, 1024)
    sd["ip_adapter"]["1.to_k_ip.weight"] = torch.empty(320, 2048, device="meta")
    with pytest.raises(UnsupportedAdapterError, match="mixes two adapters"):
        detect_config(sd)


def test_missing_half_is_refused():
    sd = released_sd("base", "sd15", 768, 1024)
    with pytest.raises(UnsupportedAdapterError, match="Expected both image_proj and ip_adapter"):
        detect_config({"image_proj": sd["image_proj"], "ip_adapter": {}})
