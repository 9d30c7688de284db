"""Apply IPAdapter's weight-type inputs through the stand-in host, and the layer-weight string syntax."""
import pytest
import torch

from comfy_standin import make_model, run_model
from ip_core.embeds import build_image_prompt
from ip_core.errors import IPAdapterError
from ip_core.layers import layer_specs
from nodes.layer_weights import layer_weights
from nodes.nodes_apply import IPAApplyAdapter

X = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
CTX = torch.randn(2, 8, 768, generator=torch.Generator().manual_seed(2))
UNCTX = torch.randn(2, 8, 768, generator=torch.Generator().manual_seed(3))
SD15 = layer_specs("sd15")
SDXL = layer_specs("sdxl")


def _embeds(adapter, seed=0):
    cond = torch.randn(1, adapter.config.encoder_width, generator=torch.Generator().manual_seed(seed)) * 3
    return build_image_prompt(adapter.adapter, cond, torch.zeros_like(cond))


def _apply(model, adapter, embeds, weight=1.0, **kw):
    return IPAApplyAdapter().apply(model, adapter, embeds, weight, 0.0, 1.0, **kw)[0]


def _branch(m):
    (b,) = {p.branches[0] for p in m.attn2_patches().values()}
    return b


def test_defaults_keep_todays_result_bit_for_bit(host, base):
    model, emb = make_model("sd15"), _embeds(base)
    today = run_model(_apply(model, base, emb, 0.7), X, 5.0, CTX, UNCTX)
    explicit = _apply(model, base, emb, 0.7, attn_mask=None, layer_weights="all layers", layer_weights_custom="",
                      weight_type="linear", embeds_scaling="V only", composition_embeds=None, weight_composition=1.0,
                      expand_style=False, style_boost=1.0, composition_boost=0.0)
    assert torch.equal(run_model(explicit, X, 5.0, CTX, UNCTX), today)


def test_style_transfer_on_sd15_runs_the_packs_layers(host, base):
    patched = _apply(make_model("sd15"), base, _embeds(base), 0.5, weight_type="style transfer")
    b = _branch(patched)
    # SD1.5 style: input 1, 2, 4, 5 and output 5..11 (host transformer index 0-3, 9-15)
    want = {("input", n) for n in (1, 2, 4, 5)} | {("output", n) for n in range(5, 12)}
    assert {s.comfy_block for s in SD15 if b.weight(s.comfy_key)} == want
    run_model(patched, X, 5.0, CTX, UNCTX)
    assert b.calls == len(want)


def test_scaling_folds_lambda_into_kv_once(host, base):
    emb = _embeds(base)
    plain = _branch(_apply(make_model("sd15"), base, emb, 0.5))
    kv = _branch(_apply(make_model("sd15"), base, emb, 0.5, embeds_scaling="K+V w/ C penalty"))
    for s in SD15:
        s_ = 0.5 * s.hidden_size / 1280
        assert kv.output_weight(s.comfy_key) == 1.0 and plain.output_weight(s.comfy_key) == 0.5
        for a, b in zip(kv._kv[s.index], plain._kv[s.index]):
            torch.testing.assert_close(a, b * s_)


def test_precise_swap_and_composition_embeds(host, base):
    style, comp = _embeds(base, 0), _embeds(base, 1)
    b = _branch(_apply(make_model("sd15"), base, style, 1.0, weight_type="style transfer precise", style_boost=2.0))
    for s in SD15:
        kc, vc, ku, vu = b._kv.get(s.index, (None,) * 4)
        if s.comfy_block in (("input", 7), ("input", 8)):  # swapped: cond slot empty, the reference as negative
            assert b.weight(s.comfy_key) == (0.5 if s.comfy_block == ("input", 7) else 2.0)
            assert not kc.any() and not vc.any()
            torch.testing.assert_close(ku, base.adapter.layer_kv(s.index, style.cond)[0])
    sc = _branch(_apply(make_model("sd15"), base, style, 1.0, weight_type="style and composition", composition_embeds=comp,
                        weight_composition=0.8))
    for s in SD15:
        if s.index not in sc._kv:
            continue
        src = comp if s.comfy_block in (("input", 7), ("input", 8)) else style
        torch.testing.assert_close(sc._kv[s.index][0], base.adapter.layer_kv(s.index, src.cond)[0])
        torch.testing.assert_close(sc._kv[s.index][2], base.adapter.layer_kv(s.index, style.uncond)[0])


def test_presets_give_sd15_the_packs_tables():
    style = layer_weights(SD15, "style only")
    assert [s.comfy_block for s, w in zip(SD15, style) if w] == [("input", n) for n in (1, 2, 4, 5)] + [("output", n) for n in range(5, 12)]
    comp = layer_weights(SD15, "composition only")
    assert {s.comfy_block: w for s, w in zip(SD15, comp) if w} == {("input", 7): 0.25, ("input", 8): 1.0}
    assert sum(layer_weights(SDXL, "style only")) == 10  # InstantStyle's up_blocks.0.attentions.1, as before


def test_pack_index_strings_and_their_ambiguity():
    # SD1.5 input blocks: transformer index i is our layer i, so the pack's string is unambiguous
    assert layer_weights(SD15, custom="0:1, 3:0.5") == [1, 0, 0, 0.5] + [0] * 12
    # "t" names the host's transformer index explicitly; SDXL t6 = output.1, all 10 transformer layers
    w = layer_weights(SDXL, custom="t6:1, t3:0.5")
    assert {s.comfy_block for s, x in zip(SDXL, w) if x == 1} == {("output", 1)} and w.count(1.0) == 10
    assert {s.comfy_block for s, x in zip(SDXL, w) if x == 0.5} == {("input", 8)}
    assert layer_weights(SD15, custom="t6:2")[15] == 2.0  # the middle block: ours index 15
    assert layer_weights(SD15, custom="9=1")[9] == 1.0  # '=' with a number: our layer index
    for family, text, readings in ((SD15, "9:1", "output.5.*output.6"), (SDXL, "6:1", "output.1.*input.7"),
                                   (SD15, "6:1", "middle.0.*output.3")):
        with pytest.raises(IPAdapterError, match=f"ambiguous.*{readings}.*'t.:1'"):
            layer_weights(family, custom=text)
    with pytest.raises(IPAdapterError, match="transformer index 11 does not exist.*0..10"):
        layer_weights(SDXL, custom="t11:1")


@pytest.mark.parametrize("text,msg", [
    ("*=1e30", "from -5 to 5"), ("input=-6", "from -5 to 5"), ("²=1", "no layer"), ("input=1_0", "not a number"),
    ("input=inf", "not a number"), ("input=٣", "not a number"), ("input=0x1", "not a number"), ("99=1", "layers 0..15"),
])
def test_layer_weight_strings_are_bounded_and_strict(text, msg):
    with pytest.raises(IPAdapterError, match=msg):
        layer_weights(SD15, custom=text)
    assert layer_weights(SD15, custom="*=-5, input=2.5e-1")[:2] == [0.25, 0.25]
