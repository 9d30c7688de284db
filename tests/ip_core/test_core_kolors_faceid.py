"""Kolors FaceID-Plus (Kolors-IP-Adapter-FaceID-Plus.bin / ipa-faceid-plus.bin): detected from its shapes (6 tokens
4096 wide, 2048-wide K'/V' over SDXL's 70 layers, no LoRA), and its tokens reach K'/V' through the model's
encoder_hid_proj with weight and bias scaled by weight_kolors, written out here from the widely used pack's
reading (To_KV: Sequential(Linear(W * wk, b * wk), to_k_ip)) and the official ProjPlusModel."""
import pytest
import torch

from ip_core.adapter import IPAdapter
from ip_core.config import KOLORS_FACE_TOKEN_DIM, make_config
from ip_core.families import detect_config
from ip_core.errors import AdapterMismatchError, IPAdapterError, UnsupportedAdapterError
from ip_core.families.faceid import build_face_prompt
from ip_core.families.kolors import (KOLORS_FACE_CROP, check_encoder_hid_proj, check_face_clip_tokens, face_crop_size,
                            hid_proj_tokens, kolors_context_embeds)
from ip_core.layers import custom_layer_specs, layer_specs

from faceid_reference import ref_mlp, ref_perceiver


def _released_config():
    return make_config("faceid-plus", layer_specs("sdxl"), 2048, 512, num_tokens=6, clip_width=1024,
                       token_dim=KOLORS_FACE_TOKEN_DIM)


def _meta_sd(config):
    with torch.device("meta"):
        return IPAdapter.from_config(config).released_state_dict()


def test_the_released_layout_is_detected_and_described():
    sd = _meta_sd(_released_config())
    # the pack's rule: the perceiver resampler's to_out gives 4096-wide rows
    assert sd["image_proj"]["perceiver_resampler.layers.0.0.to_out.weight"].shape[0] == 4096
    assert sd["image_proj"]["proj.2.weight"].shape == (6 * 4096, 1024) and sd["ip_adapter"]["1.to_k_ip.weight"].shape == (640, 2048)
    config = detect_config(sd)
    assert config.kolors and config.variant == "faceid-plus" and config.base_model == "sdxl"
    assert (config.token_dim, config.context_dim, config.projection_dim) == (4096, 2048, 4096)
    assert config.num_tokens == 6 and config.num_layers == 70 and config.lora_rank == 0 and config.clip_width == 1024
    assert config.resampler.dim == 4096 and config.resampler.heads == 64 and config.resampler.depth == 4
    assert config.description == (
        "Kolors FaceID Plus/PlusV2 (face embedding + CLIP Resampler), 6 tokens, 70 layers, needs an InsightFace face "
        "embedding (512-d, L2-normalised) and ViT-L/14-336 penultimate_hidden_states (width 1024); its 4096-wide "
        "tokens pass the model's encoder_hid_proj (4096 -> 2048)")
    assert config == _released_config()


def test_sdxl_faceid_plus_is_not_kolors():
    sdxl = make_config("faceid-plus", layer_specs("sdxl"), 2048, 512, clip_width=1280, lora_rank=128)
    config = detect_config(_meta_sd(sdxl))
    assert not config.kolors and config.token_dim == 0 and config.projection_dim == 2048
    assert "encoder_hid_proj" not in config.description and config.signature != _released_config().signature


def test_a_4096_wide_faceid_plus_with_a_lora_or_sd15_layers_is_refused():
    sd = _meta_sd(_released_config())
    sd["ip_adapter"].update({k: torch.empty(s, device="meta") for k, s in {
        "0.to_q_lora.down.weight": (4, 320), "1.to_q_lora.down.weight": (4, 320)}.items()})
    with pytest.raises(UnsupportedAdapterError):
        detect_config(sd)
    sd15 = make_config("faceid-plus", layer_specs("sd15"), 768, 512, num_tokens=6, clip_width=1024, token_dim=4096)
    with pytest.raises(UnsupportedAdapterError, match=r"4096-wide tokens \(Kolors FaceID-Plus's layout\) but 16 K'/V' layers that do not fit"):
        detect_config(_meta_sd(sd15))


# ---- the math, on a small adapter of the same layout (tokens 64 wide, K'/V' read 32) -------------------------


def _small(seed=0):
    config = make_config("faceid-plus", custom_layer_specs([1, 3], [32, 64]), 32, 512, num_tokens=6, clip_width=48,
                         token_dim=64)
    torch.manual_seed(seed)
    adapter = IPAdapter(config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.2 if p.ndim > 1 else 0.5))
    return adapter


def test_tokens_then_encoder_hid_proj_then_kv_equal_the_packs_reading():
    adapter = _small()
    sd = adapter.image_proj.state_dict()
    g = torch.Generator().manual_seed(1)
    raw, clip, uclip = torch.randn(2, 512, generator=g) * 20, torch.randn(2, 10, 48, generator=g), torch.randn(1, 10, 48, generator=g)
    w, b = torch.randn(32, 64, generator=g) * 0.1, torch.randn(32, generator=g)
    heads = adapter.config.resampler.heads

    def tokens(e, c, scale):  # ProjPlusModel.forward with the shortcut (PlusV2: the pack's is_faceidv2 for Kolors)
        x = ref_mlp(sd, e, 6, 64)
        return x + scale * ref_perceiver(sd, "perceiver_resampler.", x, c, heads)

    embeds = build_face_prompt(adapter, raw, clip, uclip, combine="batch", shortcut=True)
    assert embeds.cond.shape == (2, 6, 64)
    normed = raw / raw.norm(dim=-1, keepdim=True)
    for scale, wk in ((1.0, 1.0), (0.7, 1.6), (2.0, -0.5)):
        got = kolors_context_embeds(adapter.config, embeds.with_faceidv2(scale), w, b, wk)
        assert got.cond.shape == (2, 6, 32) and got.parts is None
        for mine, e, c in ((got.cond, normed, clip), (got.uncond, torch.zeros(2, 512), uclip.expand(2, -1, -1))):
            hid = tokens(e, c, scale) @ (w * wk).T + b * wk  # the pack's hid_proj: weight and bias both scaled
            torch.testing.assert_close(mine, hid, rtol=1e-5, atol=1e-5)
            k, v = adapter.layer_kv(1, mine)
            layer = adapter.ip_layers["3"]
            torch.testing.assert_close(k, hid @ layer.to_k_ip.weight.T, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(v, hid @ layer.to_v_ip.weight.T, rtol=1e-5, atol=1e-5)
    # weight_kolors scales K' and V' (not the attention output): 0 gives zero tokens
    zero = kolors_context_embeds(adapter.config, embeds, w, b, 0.0)
    assert torch.count_nonzero(zero.cond) == 0 and torch.count_nonzero(zero.uncond) == 0


def test_hid_proj_scales_the_layer_in_the_models_dtype_then_applies_it():
    g = torch.Generator().manual_seed(2)
    x, w, b = torch.randn(1, 6, 64, generator=g), torch.randn(32, 64, generator=g).half(), torch.randn(32, generator=g).half()
    out = hid_proj_tokens(x, w, b, 1.3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x @ (w * 1.3).float().T + (b * 1.3).float(), rtol=0, atol=1e-5)


def test_other_adapters_embeds_pass_unchanged():
    config = make_config("faceid-plus", custom_layer_specs([1, 3], [32, 64]), 32, 512, clip_width=48, lora_rank=4)
    embeds = object()
    assert kolors_context_embeds(config, embeds, None, None, 2.0) is embeds


def test_a_model_without_a_fitting_encoder_hid_proj_is_refused_naming_both_sides():
    config = _released_config()
    with pytest.raises(AdapterMismatchError, match=r"needs the Kolors UNet's encoder_hid_proj \(Linear 4096 -> 2048\), "
                                                   r"but the SDXL model has none: it is not a Kolors UNet"):
        check_encoder_hid_proj(config, None, None, "the SDXL model")
    with torch.device("meta"):
        w, b = torch.empty(2048, 768), torch.empty(2048)
    with pytest.raises(AdapterMismatchError, match=r"encoder_hid_proj of weight \[2048, 4096\] .* has weight \[2048, 768\]"):
        check_encoder_hid_proj(config, w, b)
    adapter = _small()
    bad = build_face_prompt(adapter, torch.randn(1, 512), torch.randn(1, 10, 48), torch.randn(1, 10, 48))
    bad = type(bad)(bad.cond[..., :32], bad.uncond[..., :32], bad.signature, bad.description, bad.encoder_name, "")
    with pytest.raises(IPAdapterError, match="cond tokens are 32 wide"):
        kolors_context_embeds(adapter.config, bad, torch.zeros(32, 64), torch.zeros(32))


@pytest.mark.parametrize("tokens,ok", [(577, True), (257, False)])
def test_the_clip_part_must_be_the_336_px_vit_l(tokens, ok):
    config = _released_config()
    hidden = torch.empty(1, tokens, 1024, device="meta")
    if ok:
        check_face_clip_tokens(config, hidden, "the CLIP vision model")
    else:
        with pytest.raises(AdapterMismatchError, match=r"needs ViT-L/14-336 hidden states \(577 tokens, 336 px images\), "
                                                       r"but the CLIP vision model gives 257 tokens; load clip-vit-large-patch14-336"):
            check_face_clip_tokens(config, hidden, "the CLIP vision model")
    assert face_crop_size(config) == KOLORS_FACE_CROP == 336
    assert face_crop_size(make_config("faceid-plus", layer_specs("sd15"), 768, 512, clip_width=1280, lora_rank=4)) == 224
    # the widely used pack crops SDXL faces at 256 px (legacy); 224 as the official code otherwise
    sdxl = make_config("faceid-plus", layer_specs("sdxl"), 2048, 512, clip_width=1280, lora_rank=4)
    assert (face_crop_size(sdxl), face_crop_size(sdxl, legacy=True)) == (224, 256)
    assert face_crop_size(config, legacy=True) == 336


def test_inspect_describes_the_file(tmp_path, monkeypatch, capsys):
    """`python -m ip_core inspect` on the released layout (shapes only: the real file is 2.4 GB)."""
    from ip_core import __main__ as cli

    sd = _meta_sd(_released_config())
    path = tmp_path / "Kolors-IP-Adapter-FaceID-Plus.bin"
    path.write_bytes(b"0")
    monkeypatch.setattr(cli, "load_adapter_state_dict", lambda p: sd)
    monkeypatch.setattr(cli, "sniff_format", lambda p: "torch-zip")
    info = cli.inspect_file(path)
    assert info["ok"] and info["token_dim"] == 4096 and info["context_dim"] == 2048 and info["tokens"] == 6
    assert info["base_model"] == "Kolors" and info["lora_rank"] == 0 and info["parameters"] == 1_192_903_680
    assert "ViT-L/14-336 penultimate_hidden_states (width 1024)" in info["needs_clip_vision"]
    cli._print_text(info)
    out = capsys.readouterr().out
    assert "tokens:         6 x 4096, through the model's encoder_hid_proj to 2048 (a Kolors UNet)" in out
    assert "FaceID LoRA:    none" in out


def test_the_official_file_layout_loads(tmp_path):
    """Kwai-Kolors' ipa-faceid-plus.bin is a torch file {"image_proj": ..., "adapter_modules": ...} (the official
    loader reads params["adapter_modules"]); adapter_modules is the ip_adapter half, as in flat files."""
    from ip_core.checkpoint import load_adapter_state_dict
    from ip_core.errors import AdapterFileError

    adapter = _small()
    sd = adapter.released_state_dict()
    path = tmp_path / "ipa-faceid-plus.bin"
    torch.save({"image_proj": sd["image_proj"], "adapter_modules": sd["ip_adapter"]}, path)
    loaded = load_adapter_state_dict(path)
    assert set(loaded) == {"image_proj", "ip_adapter"} and set(loaded["ip_adapter"]) == set(sd["ip_adapter"])
    assert all(torch.equal(loaded["ip_adapter"][k], v) for k, v in sd["ip_adapter"].items())
    torch.save({"image_proj": sd["image_proj"], "adapter_modules": sd["ip_adapter"], "ip_adapter": sd["ip_adapter"]}, path)
    with pytest.raises(AdapterFileError, match="two top-level entries hold the ip_adapter weights"):
        load_adapter_state_dict(path)
