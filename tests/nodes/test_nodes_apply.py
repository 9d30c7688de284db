"""Apply IPAdapter through the stand-in's UNet walk and sampler call (comfy_standin.py)."""
import copy

import pytest
import torch

import comfy_standin
from comfy_standin import make_model, run_model
from conftest import random_adapter, sdxl_adapter
from ip_core.embeds import build_image_prompt
from ip_core.errors import AdapterMismatchError, IPAdapterError
from ip_core.layers import layer_specs
from nodes.common import LoadedAdapter
from nodes.nodes_apply import IPAApplyAdapter
from nodes.patch import IPAttentionPatch


def _embeds(adapter, n=1, seed=0, combine="concat"):
    g = torch.Generator().manual_seed(seed)
    cfg = adapter.config
    shape = (n, cfg.encoder_width) if cfg.encoder_output == "image_embeds" else (n, 257, cfg.encoder_width)
    cond = torch.randn(shape, generator=g) * 3
    return build_image_prompt(adapter.adapter, cond, torch.zeros_like(cond), combine=combine)


def _apply(model, adapter, embeds, weight=1.0, start=0.0, end=1.0, **kw):
    return IPAApplyAdapter().apply(model, adapter, embeds, weight, start, end, **kw)[0]


X = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
CTX = torch.randn(2, 8, 768, generator=torch.Generator().manual_seed(2))
UNCTX = torch.randn(2, 8, 768, generator=torch.Generator().manual_seed(3))


def _run(m, sigma=5.0, order=(0, 1)):
    return run_model(m, X, sigma, CTX, UNCTX, order)


def _branches(m):
    return {p.branches[0] for p in m.attn2_patches().values()}


def test_sd15_patches_all_16_layers_on_a_clone(host, base):
    model = make_model("sd15")
    patched = _apply(model, base, _embeds(base))
    expected = {s.comfy_key for s in layer_specs("sd15")}
    assert set(patched.attn2_patches()) == expected and len(expected) == 16
    assert ("middle", 0, 0) in expected  # the key the host looks up (openaimodel.py), not ("middle", 1)
    assert model.attn2_patches() == {}  # input untouched
    (branch,) = _branches(patched)
    out = _run(patched)
    assert branch.calls == 16  # every cross-attention layer, middle included, ran the image branch once
    assert not torch.allclose(out, _run(model))
    # the host's attention function was used with the layer's precision and the transformer options
    assert all(call == (None, True) for call in comfy_standin.ATTENTION_CALLS)


def test_weight_zero_is_bit_identical_and_runs_nothing(host, base):
    model = make_model("sd15")
    patched = _apply(model, base, _embeds(base), weight=0.0)
    assert patched.attn2_patches() == {}
    assert torch.equal(_run(patched), _run(model))
    # zero through per-layer weights: patched layers with weight 0 are skipped too
    half = _apply(model, base, _embeds(base), layer_weights_custom="input=1")
    (branch,) = _branches(half)
    assert len(half.attn2_patches()) == 6
    _run(half)
    assert branch.calls == 6


def test_kv_computed_once_per_apply_not_per_step(host, base, monkeypatch):
    calls = []
    orig = base.adapter.layer_kv
    monkeypatch.setattr(base.adapter, "layer_kv", lambda i, t: calls.append(i) or orig(i, t))
    patched = _apply(make_model("sd15"), base, _embeds(base))
    assert len(calls) == 32  # 16 layers x (cond, uncond), at apply time
    for sigma in (10.0, 5.0, 1.0):
        _run(patched, sigma)
        _run(patched, sigma, order=(1, 0))
    assert len(calls) == 32
    (branch,) = _branches(patched)
    assert len(branch._on_device) == 16  # one conversion per layer for this device/dtype


def test_clone_shares_branches_instead_of_copying_tensors(host, base):
    patched = _apply(make_model("sd15"), base, _embeds(base))
    twice = patched.clone().clone()
    for key, p in twice.attn2_patches().items():
        assert p is not patched.attn2_patches()[key]
        assert p.branches[0] is patched.attn2_patches()[key].branches[0]


def test_window_skips_the_image_branch_and_reads_sigma_once_per_call(host, base):
    model = make_model("sd15")
    patched = _apply(model, base, _embeds(base), start=0.5, end=0.8)
    (branch,) = _branches(patched)
    sampling = model.model.model_sampling
    s_start, s_end = sampling.percent_to_sigma(0.5), sampling.percent_to_sigma(0.8)
    assert s_start > s_end
    early, inside, late = s_start * 1.5, (s_start + s_end) / 2, s_end / 2
    assert torch.equal(_run(patched, early), _run(model, early))
    assert torch.equal(_run(patched, late), _run(model, late))
    assert branch.calls == 0
    assert not torch.allclose(_run(patched, inside), _run(model, inside))
    assert branch.calls == 16
    assert branch.window.syncs == 3  # one device read per UNet call, not one per layer


def test_default_window_never_reads_sigma(host, base):
    patched = _apply(make_model("sd15"), base, _embeds(base))
    (branch,) = _branches(patched)
    _run(patched)
    assert branch.window.syncs == 0


def test_zero_mask_is_text_only_and_bad_masks_fail_clearly(host, base):
    model = make_model("sd15")
    patched = _apply(model, base, _embeds(base), attn_mask=torch.zeros(1, 37, 53))
    assert torch.equal(_run(patched), _run(model))
    ones = _apply(model, base, _embeds(base), attn_mask=torch.ones(64, 96))
    assert torch.allclose(_run(ones), _run(_apply(model, base, _embeds(base))), atol=1e-6)
    three = _apply(model, base, _embeds(base), attn_mask=torch.ones(3, 8, 8))
    with pytest.raises(IPAdapterError, match=r"attn_mask masks of .*: 3 given for 2 frames"):
        _run(three)
    for bad, msg in ((torch.ones(2, 2, 2, 2), "MASK"), (torch.ones(1, 0, 5), "empty"),
                     (torch.full((4, 4), float("nan")), "NaN")):
        with pytest.raises(IPAdapterError, match=msg):
            _apply(model, base, _embeds(base), attn_mask=bad)


def test_stacked_adapters_add_up(host, base):
    model = make_model("sd15")
    other = LoadedAdapter(random_adapter("base", seed=5), "other.safetensors")
    a = _apply(model, base, _embeds(base, seed=1), weight=0.7)
    b = _apply(model, other, _embeds(other, seed=2), weight=1.3)
    ab = _apply(a, other, _embeds(other, seed=2), weight=1.3)
    assert all(len(p.branches) == 2 for p in ab.attn2_patches().values())
    assert all(len(p.branches) == 1 for p in a.attn2_patches().values())  # the first clone is unchanged
    ref = _run(model)
    assert torch.allclose(_run(ab) - ref, (_run(a) - ref) + (_run(b) - ref), atol=1e-5)


def test_foreign_patch_is_wrapped_not_dropped(host, base):
    model = make_model("sd15")
    seen = []

    def foreign(q, k, v, extra_options):  # e.g. another pack's attention replacement, 2-key like cubiq's SD1.5
        seen.append(extra_options["block"])
        return comfy_standin.optimized_attention(q, k, v, extra_options["n_heads"]) * 0.5

    model.set_model_attn2_replace(foreign, "input", 1)
    patched = _apply(model, base, _embeds(base), weight=0.0, layer_weights_custom="input.1=1")
    p = patched.attn2_patches()[("input", 1, 0)]
    assert isinstance(p, IPAttentionPatch) and p.wrapped is foreign
    _run(patched)
    assert seen == [("input", 1)]
    # weight 0 everywhere else: only the wrapped layer differs, and it is foreign * 1 + 0 * image
    zero = _apply(model, base, _embeds(base), weight=0.0)
    assert torch.equal(_run(zero), _run(model))


def test_cond_and_uncond_tokens_go_to_their_chunks(host, base):
    emb = _embeds(base)
    branch_model = _apply(make_model("sd15"), base, emb)
    (branch,) = _branches(branch_model)
    key = ("input", 1, 0)
    k, v = branch.kv(key, [1, 0], 4, torch.device("cpu"), torch.float32)
    ku, vu = base.adapter.layer_kv(0, emb.uncond)
    kc, vc = base.adapter.layer_kv(0, emb.cond)
    assert torch.allclose(k[:2], ku.expand(2, -1, -1)) and torch.allclose(k[2:], kc.expand(2, -1, -1))
    assert torch.allclose(v[:2], vu.expand(2, -1, -1)) and torch.allclose(v[2:], vc.expand(2, -1, -1))
    # the sampler may order the chunks either way: same per-chunk result
    out01, out10 = _run(branch_model, order=(0, 1)), _run(branch_model, order=(1, 0))
    assert torch.allclose(out01[:2], out10[2:], atol=1e-6) and torch.allclose(out01[2:], out10[:2], atol=1e-6)


def test_one_reference_per_batch_item(host, base):
    emb = _embeds(base, n=2, combine="batch")
    patched = _apply(make_model("sd15"), base, emb)
    (branch,) = _branches(patched)
    k, _ = branch.kv(("input", 1, 0), [0], 2, torch.device("cpu"), torch.float32)
    kc, _ = base.adapter.layer_kv(0, emb.cond)
    assert torch.allclose(k, kc)
    _run(patched)
    # fewer references than frames: the last one is repeated (the widely used pack's rule)
    k3, _ = branch.kv(("input", 1, 0), [0], 3, torch.device("cpu"), torch.float32)
    assert torch.equal(k3, torch.cat([k, k[1:]]))
    # more references than frames: an error, never a silent drop
    x1 = torch.randn(1, 4, 8, 8)
    with pytest.raises(IPAdapterError, match="references of .*: 2 given for 1 frames"):
        run_model(patched, x1, 5.0, torch.randn(1, 8, 768), torch.randn(1, 8, 768))


def test_bad_inputs_give_node_errors(host, base):
    model = make_model("sd15")
    emb = _embeds(base)
    for w in (float("nan"), float("inf"), 6.0):
        with pytest.raises(IPAdapterError, match="weight"):
            _apply(model, base, emb, weight=w)
    with pytest.raises(IPAdapterError, match="start_at"):
        _apply(model, base, emb, start=0.9, end=0.1)
    plus = LoadedAdapter(random_adapter("plus", seed=3), "plus.bin")
    with pytest.raises(AdapterMismatchError, match="made for another adapter"):
        _apply(model, base, _embeds(plus))
    other_base = LoadedAdapter(random_adapter("base", seed=7), "another_sd15_base.safetensors")
    with pytest.raises(AdapterMismatchError, match=r"same layout, other weights"):
        _apply(model, base, _embeds(other_base))
    nan_emb = copy.copy(emb)
    nan_emb.cond = emb.cond.clone()
    nan_emb.cond[0, 0, 0] = float("nan")
    with pytest.raises(IPAdapterError, match="NaN"):
        _apply(model, base, nan_emb)
    with pytest.raises(IPAdapterError, match="IPA_EMBEDS"):
        _apply(model, base, "embeds?")
    with pytest.raises(IPAdapterError, match="layers"):
        _apply(model, base, emb, layer_weights_custom="1, 2, 3")
    with pytest.raises(IPAdapterError, match="unknown weight_type 'style'.*linear, ease in"):
        _apply(model, base, emb, weight_type="style")
    with pytest.raises(IPAdapterError, match="unknown embeds_scaling 'K'.*V only"):
        _apply(model, base, emb, embeds_scaling="K")
    for name, value, msg in (("weight_composition", 6.0, "-1.0..5.0"), ("style_boost", -5.5, "-5.0..5.0"),
                             ("composition_boost", float("nan"), "finite")):
        with pytest.raises(IPAdapterError, match=f"{name}.*{msg}"):
            _apply(model, base, emb, **{name: value})
    with pytest.raises(IPAdapterError, match="expand_style applies to weight_type 'style and composition' only"):
        _apply(model, base, emb, expand_style=True)
    with pytest.raises(IPAdapterError, match="composition_embeds is used by weight_type 'style and composition' only"):
        _apply(model, base, emb, composition_embeds=emb)
    with pytest.raises(AdapterMismatchError, match="composition_embeds: .*another adapter"):
        _apply(model, base, emb, weight_type="style and composition", composition_embeds=_embeds(other_base))


def test_sd15_adapter_on_sdxl_model_and_back(host, base):
    with pytest.raises(AdapterMismatchError, match="an adapter for SD1.5 but the model is SDXL"):
        _apply(make_model("sdxl"), base, _embeds(base))
    xl = LoadedAdapter(sdxl_adapter(), "xl.safetensors")
    with pytest.raises(AdapterMismatchError, match="an adapter for SDXL but the model is SD1.5"):
        _apply(make_model("sd15"), xl, _embeds(xl))


@pytest.fixture(scope="module")
def xl():
    return LoadedAdapter(sdxl_adapter(), "xl.safetensors")


def test_sdxl_patches_70_layers_middle_included(host, xl):
    model = make_model("sdxl")
    patched = _apply(model, xl, _embeds(xl))
    keys = set(patched.attn2_patches())
    assert keys == {s.comfy_key for s in layer_specs("sdxl")} and len(keys) == 70
    assert {("middle", 0, i) for i in range(10)} <= keys
    (branch,) = _branches(patched)
    ctx = torch.randn(1, 8, 2048)
    out = run_model(patched, torch.randn(1, 4, 8, 8), 3.0, ctx, ctx)
    assert branch.calls == 70
    assert not torch.allclose(out, run_model(model, torch.randn(1, 4, 8, 8), 3.0, ctx, ctx))


@pytest.mark.parametrize("preset,blocks", [("style only", {("output", 1)}), ("composition only", {("input", 8)}),
                                           ("style and composition", {("output", 1), ("input", 8)})])
def test_instantstyle_presets_on_sdxl(host, xl, preset, blocks):
    patched = _apply(make_model("sdxl"), xl, _embeds(xl), layer_weights=preset)
    assert {k[:2] for k in patched.attn2_patches()} == blocks
    assert len(patched.attn2_patches()) == 10 * len(blocks)


def test_other_model_families_are_refused(host, base):
    model = make_model("sd15")
    model.model.model_config.unet_config["context_dim"] = 1024  # SD2.x
    with pytest.raises(AdapterMismatchError, match="1024-wide text context"):
        _apply(model, base, _embeds(base))
