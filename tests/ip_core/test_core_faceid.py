"""FaceID: detection of every released layout from keys and shapes, and exactness against the official
formulas (tencent-ailab/IP-Adapter ip_adapter_faceid*.py, attention_processor_faceid.py) written out here
from their reading: projections, unconditional tokens, the PlusV2 shortcut, and LoRA + image branch in a UNet."""
import pytest
import torch

from ip_core import UnsupportedAdapterError, detect_config, layer_specs, layer_specs_from_unet, make_config
from ip_core.adapter import IPAdapter, save_adapter
from ip_core.families import load_adapter
from ip_core.attention import decoupled_attention
from ip_core.families.faceid import build_face_prompt
from ip_core.lora import lora_targets, merge_lora

from faceid_reference import OfficialLoRAProcessor, ref_mlp, ref_perceiver

# ---- released layouts: shapes written from the official constructors, not from our modules -----------------


def _mlp(ctx, tokens):  # official MLPProjModel(cross_attention_dim, id_embeddings_dim=512, num_tokens)
    return {"proj.0.weight": (1024, 512), "proj.0.bias": (1024,), "proj.2.weight": (ctx * tokens, 1024),
            "proj.2.bias": (ctx * tokens,), "norm.weight": (ctx,), "norm.bias": (ctx,)}


def _perceiver(prefix, dim, inner, embedding, out, depth=4, mult=4):
    sd = {f"{prefix}proj_in.weight": (dim, embedding), f"{prefix}proj_in.bias": (dim,),
          f"{prefix}proj_out.weight": (out, dim), f"{prefix}proj_out.bias": (out,),
          f"{prefix}norm_out.weight": (out,), f"{prefix}norm_out.bias": (out,)}
    for i in range(depth):
        p = f"{prefix}layers.{i}."
        sd.update({f"{p}0.norm1.weight": (dim,), f"{p}0.norm1.bias": (dim,), f"{p}0.norm2.weight": (dim,),
                   f"{p}0.norm2.bias": (dim,), f"{p}0.to_q.weight": (inner, dim), f"{p}0.to_kv.weight": (2 * inner, dim),
                   f"{p}0.to_out.weight": (dim, inner), f"{p}1.0.weight": (dim,), f"{p}1.0.bias": (dim,),
                   f"{p}1.1.weight": (dim * mult, dim), f"{p}1.3.weight": (dim, dim * mult)})
    return sd


def _ip_layers(base, ctx, rank):
    sd = {}
    for spec in layer_specs(base):
        n, h = spec.key_number, spec.hidden_size
        sd[f"{n}.to_k_ip.weight"] = (h, ctx)
        sd[f"{n}.to_v_ip.weight"] = (h, ctx)
        if rank:  # official LoRAAttnProcessor (n - 1, self) and LoRAIPAttnProcessor (n, cross)
            for number, kv_in in ((n - 1, h), (n, ctx)):
                for proj, fin in (("to_q", h), ("to_k", kv_in), ("to_v", kv_in), ("to_out", h)):
                    sd[f"{number}.{proj}_lora.down.weight"] = (rank, fin)
                    sd[f"{number}.{proj}_lora.up.weight"] = (h, rank)
    return sd


RELEASED = {  # file -> (image_proj shapes, base, ctx, LoRA rank, expected variant, tokens, clip width)
    "ip-adapter-faceid_sd15.bin": (_mlp(768, 4), "sd15", 768, 128, "faceid", 4, 0),
    "ip-adapter-faceid-plus_sd15.bin": ({**_mlp(768, 4), **_perceiver("perceiver_resampler.", 768, 768, 1280, 768)},
                                        "sd15", 768, 128, "faceid-plus", 4, 1280),
    "ip-adapter-faceid-plusv2_sd15.bin": ({**_mlp(768, 4), **_perceiver("perceiver_resampler.", 768, 768, 1280, 768)},
                                          "sd15", 768, 128, "faceid-plus", 4, 1280),
    "ip-adapter-faceid-portrait_sd15.bin": (_mlp(768, 16), "sd15", 768, 0, "faceid-portrait", 16, 0),
    "ip-adapter-faceid-portrait-v11_sd15.bin": (_mlp(768, 16), "sd15", 768, 0, "faceid-portrait", 16, 0),
    "ip-adapter-faceid_sdxl.bin": (_mlp(2048, 4), "sdxl", 2048, 128, "faceid", 4, 0),
    "ip-adapter-faceid-plusv2_sdxl.bin": ({**_mlp(2048, 4), **_perceiver("perceiver_resampler.", 2048, 2048, 1280, 2048)},
                                          "sdxl", 2048, 128, "faceid-plus", 4, 1280),
    "ip-adapter-faceid-portrait_sdxl.bin": (_mlp(2048, 16), "sdxl", 2048, 0, "faceid-portrait", 16, 0),
    "ip-adapter-faceid-portrait_sdxl_unnorm.bin": ({"latents": (1, 16, 1280), **_perceiver("", 1280, 1280, 512, 2048)},
                                                   "sdxl", 2048, 0, "faceid-portrait-unnorm", 16, 0),
}


def _meta_sd(proj, base, ctx, rank):
    with torch.device("meta"):
        return {"image_proj": {k: torch.empty(s) for k, s in proj.items()},
                "ip_adapter": {k: torch.empty(s) for k, s in _ip_layers(base, ctx, rank).items()}}


@pytest.mark.parametrize("name", list(RELEASED))
def test_released_faceid_layouts_are_detected_and_load_strictly(name):
    proj, base, ctx, rank, variant, tokens, clip = RELEASED[name]
    sd = _meta_sd(proj, base, ctx, rank)
    config = detect_config(sd)
    assert (config.variant, config.base_model, config.num_tokens, config.lora_rank, config.clip_width) == (
        variant, base, tokens, rank, clip)
    assert config.is_faceid and config.encoder_output == "face_embedding" and config.encoder_width == 512
    assert config.face_embedding_normalized == (variant != "faceid-portrait-unnorm")
    adapter = IPAdapter.from_state_dict(sd, detect_config(sd))  # strict: every key and shape of the file has its place
    assert set(adapter.released_state_dict()["ip_adapter"]) == set(sd["ip_adapter"])
    if rank:
        assert len(lora_targets(adapter)) == 8 * config.num_layers  # q, k, v, out of attn1 and attn2


def test_faceid_description_says_what_it_needs():
    proj, base, ctx, rank, *_ = RELEASED["ip-adapter-faceid-plusv2_sdxl.bin"]
    d = detect_config(_meta_sd(proj, base, ctx, rank)).description
    assert "SDXL FaceID Plus/PlusV2" in d and "LoRA rank 128" in d and "InsightFace" in d and "ViT-H/14 penultimate" in d


def test_damaged_lora_is_refused_naming_what_is_wrong():
    proj, base, ctx, rank, *_ = RELEASED["ip-adapter-faceid_sd15.bin"]
    sd = _meta_sd(proj, base, ctx, rank)
    del sd["ip_adapter"]["6.to_v_lora.up.weight"]
    with pytest.raises(UnsupportedAdapterError, match=r"1 missing \(e.g. \['6.to_v_lora.up.weight'\]\)"):
        detect_config(sd)
    sd = _meta_sd(proj, base, ctx, rank)
    sd["ip_adapter"]["1.to_k_lora.down.weight"] = torch.empty(128, 2048, device="meta")
    with pytest.raises(UnsupportedAdapterError, match=r"wrong shape .*1.to_k_lora.down.weight \[128, 2048\] \(expected \[128, 768\]\)"):
        detect_config(sd)


def test_lora_on_a_non_faceid_projection_is_refused():
    proj = {"proj.weight": (3072, 1024), "proj.bias": (3072,), "norm.weight": (768,), "norm.bias": (768,)}
    with pytest.raises(UnsupportedAdapterError, match="FaceID LoRA weights .* base image projection"):
        detect_config(_meta_sd(proj, "sd15", 768, 4))


def test_kolors_faceid_is_refused_clearly():
    with pytest.raises(UnsupportedAdapterError, match="4096-wide tokens .*Kolors"):
        detect_config({"image_proj": {k: torch.empty(s, device="meta") for k, s in _mlp(4096, 6).items()},
                       "ip_adapter": {"1.to_k_ip.weight": torch.empty(320, 4096, device="meta")}})


def test_lora_targets_name_real_diffusers_weights():
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
                                              attention_head_dim=8)
        adapter = IPAdapter(make_config("faceid", layer_specs("sd15"), 768, 512, lora_rank=8))
    weights = dict(unet.named_parameters())
    targets = lora_targets(adapter)
    assert len(targets) == 128 and len({t.diffusers_key for t in targets}) == 128
    for t in targets:
        assert tuple(weights[t.diffusers_key].shape) == t.shape, t.diffusers_key
    first = targets[0]
    assert first.ldm_key == "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    assert targets[-1].ldm_key == "middle_block.1.transformer_blocks.0.attn2.to_out.0.weight"


def test_file_round_trip_keeps_lora(tmp_path):
    torch.manual_seed(0)
    layers = layer_specs("sd15")
    adapter = IPAdapter(make_config("faceid", layers, 768, 512, lora_rank=4)).eval()
    path = save_adapter(adapter, tmp_path / "renamed.safetensors")
    loaded = load_adapter(path)
    assert loaded.config == adapter.config
    for a, b in zip(lora_targets(adapter), lora_targets(loaded)):
        assert torch.equal(a.lora.delta_weight(), b.lora.delta_weight())


# ---- the official formulas, written out --------------------------------------------------------------------


def _randomize(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.2 if p.ndim > 1 else 0.5))


def small_faceid(variant, ctx=64, rank=4, clip_width=48, seed=0):
    from ip_core.layers import custom_layer_specs

    layers = custom_layer_specs([1, 3], [32, 64])
    kw = {"lora_rank": rank} if variant in ("faceid", "faceid-plus") else {}
    if variant == "faceid-plus":
        kw["clip_width"] = clip_width
    torch.manual_seed(seed)
    adapter = IPAdapter(make_config(variant, layers, ctx, 512, **kw)).eval()
    _randomize(adapter, seed)
    return adapter


def _normed(e):
    return e / e.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("variant", ["faceid", "faceid-portrait"])
def test_faceid_mlp_tokens_and_uncond_equal_the_official_formula(variant):
    adapter = small_faceid(variant)
    sd = adapter.image_proj.state_dict()
    raw = torch.randn(3, 512) * 20  # insightface raw embeddings have norms around 20
    embeds = build_face_prompt(adapter, raw, combine="batch")
    c = adapter.config
    torch.testing.assert_close(embeds.cond, ref_mlp(sd, _normed(raw), c.num_tokens, 64), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(embeds.uncond, ref_mlp(sd, torch.zeros(3, 512), c.num_tokens, 64), rtol=1e-5, atol=1e-5)
    # Several faces (portrait): the official code concatenates each face's tokens into one prompt.
    concat = build_face_prompt(adapter, raw, combine="concat")
    assert concat.cond.shape == (1, 3 * c.num_tokens, 64)
    torch.testing.assert_close(concat.cond[0], embeds.cond.reshape(-1, 64), rtol=0, atol=0)


def test_faceid_plus_and_plusv2_equal_the_official_formula():
    adapter = small_faceid("faceid-plus")
    sd = adapter.image_proj.state_dict()
    raw, clip, uclip = torch.randn(2, 512) * 20, torch.randn(2, 10, 48), torch.randn(1, 10, 48)
    heads = adapter.config.resampler.heads

    def official(e, c, shortcut, scale):  # ProjPlusModel.forward
        x = ref_mlp(sd, e, 4, 64)
        psd = {k: v for k, v in sd.items()}
        out = ref_perceiver(psd, "perceiver_resampler.", x, c, heads)
        return x + scale * out if shortcut else out

    v1 = build_face_prompt(adapter, raw, clip, uclip, combine="batch", shortcut=False)
    torch.testing.assert_close(v1.cond, official(_normed(raw), clip, False, 1.0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v1.uncond, official(torch.zeros(2, 512), uclip.expand(2, -1, -1), False, 1.0), rtol=1e-5, atol=1e-5)
    assert v1.with_faceidv2(3.0) is v1  # v1 has no shortcut: the scale does not apply
    v2 = build_face_prompt(adapter, raw, clip, uclip, combine="batch", shortcut=True)
    for scale in (1.0, 0.3, 2.0):
        got = v2.with_faceidv2(scale)
        torch.testing.assert_close(got.cond, official(_normed(raw), clip, True, scale), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.uncond, official(torch.zeros(2, 512), uclip.expand(2, -1, -1), True, scale), rtol=1e-5, atol=1e-5)


def test_portrait_unnorm_takes_the_raw_embedding_as_one_token():
    adapter = small_faceid("faceid-portrait-unnorm")
    sd = adapter.image_proj.state_dict()
    raw = torch.randn(2, 512) * 20
    got = build_face_prompt(adapter, raw, combine="batch")
    heads = adapter.config.resampler.heads
    want = ref_perceiver(sd, "", sd["latents"].repeat(2, 1, 1), raw[:, None], heads)
    torch.testing.assert_close(got.cond, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.uncond, ref_perceiver(sd, "", sd["latents"].repeat(2, 1, 1), torch.zeros(2, 1, 512), heads),
                               rtol=1e-5, atol=1e-5)


# ---- LoRA + image branch in a UNet: merged weights + our attention == the official LoRA processors -----------

diffusers = pytest.importorskip("diffusers")


def tiny_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    ).eval()


class OursProcessor:
    def __init__(self, ip, tokens_ref, weight):
        self.ip, self.tokens_ref, self.weight = ip, tokens_ref, weight

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        q, k, v = attn.to_q(hidden_states), attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        t = self.tokens_ref[0]
        out = decoupled_attention(q, k, v, self.ip.to_k_ip(t), self.ip.to_v_ip(t), attn.heads, self.weight)
        return attn.to_out[1](attn.to_out[0](out)) / attn.rescale_output_factor


@pytest.mark.parametrize("scale,lora_scale", [(0.0, 1.0), (1.0, 1.0), (0.6, 0.5)])
def test_unet_with_faceid_lora_and_branch_equals_official_processors(scale, lora_scale):
    unet = tiny_unet()
    layers = layer_specs_from_unet(unet)
    torch.manual_seed(3)
    adapter = IPAdapter(make_config("faceid", layers, 32, 512, lora_rank=4), layers).eval()
    _randomize(adapter.lora_layers, 5)
    x, t, text = torch.randn(2, 4, 8, 8), torch.tensor([10, 700]), torch.randn(2, 7, 32)
    with torch.no_grad():
        embeds = build_face_prompt(adapter, torch.randn(2, 512), combine="batch")
        tokens = [embeds.cond]
        ref = tiny_unet()
        procs = {}
        for spec in layers:
            procs[spec.diffusers_name.replace("attn2", "attn1")] = OfficialLoRAProcessor(
                adapter.lora_layers[str(spec.key_number - 1)], lora_scale)
            procs[spec.diffusers_name] = OfficialLoRAProcessor(
                adapter.lora_layers[str(spec.key_number)], lora_scale, adapter.ip_layers[str(spec.key_number)], tokens, scale)
        assert set(procs) == set(ref.attn_processors)  # every attention layer of the UNet carries the LoRA
        ref.set_attn_processor(procs)
        want = ref(x, t, encoder_hidden_states=text).sample

        ours = tiny_unet()
        weights = dict(ours.named_parameters())
        for target in lora_targets(adapter):
            w = weights[target.diffusers_key]
            w.copy_(merge_lora(w, target.lora, lora_scale))
        ours.set_attn_processor({**ours.attn_processors, **{s.diffusers_name: OursProcessor(adapter.ip_layers[str(s.key_number)], tokens, scale) for s in layers}})
        got = ours(x, t, encoder_hidden_states=text).sample
        plain = tiny_unet()(x, t, encoder_hidden_states=text).sample
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3  # the LoRA really changes the model


def test_cli_inspect_describes_a_faceid_file(tmp_path, capsys):
    from ip_core.__main__ import inspect_file, main

    torch.manual_seed(0)
    path = save_adapter(IPAdapter(make_config("faceid-plus", layer_specs("sd15"), 768, 512, lora_rank=4, clip_width=1280)),
                        tmp_path / "face.bin", format="bin")
    info = inspect_file(path)
    assert info["ok"] and info["variant"] == "faceid-plus" and info["lora_rank"] == 4 and info["tokens"] == 4
    assert info["needs_insightface"] and "ViT-H/14 penultimate_hidden_states (width 1280)" in info["needs_clip_vision"]
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "FaceID LoRA:    rank 4 on to_q/k/v/out" in out and "InsightFace (buffalo_l or antelopev2) + CLIP vision" in out


def test_face_embeds_stay_face_embeds_when_moved():
    adapter = small_faceid("faceid-plus")
    e = build_face_prompt(adapter, torch.randn(1, 512), torch.randn(1, 10, 48), torch.randn(1, 10, 48))
    moved = e.to(dtype=torch.float64)
    assert type(moved) is type(e) and moved.shortcut and moved.parts[0].dtype == torch.float64
    torch.testing.assert_close(moved.with_faceidv2(0.5).cond, e.with_faceidv2(0.5).cond.double())
