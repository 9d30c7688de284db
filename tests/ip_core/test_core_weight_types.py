"""Weight types x {SD1.5, SDXL} x embeds scaling against the widely used pack's formulas, written out here
independently (literal tables keyed by the host's transformer index, as the pack writes them), and the
host-index table against ip_core.layers."""

import pytest
import torch

from ip_core.attention import image_attention, multihead_attention, scaled_image_kv
from ip_core.errors import IPAdapterError
from ip_core.layers import layer_specs
from ip_core.weight_types import EMBEDS_SCALINGS, HOST_TRANSFORMER_INDEX, WEIGHT_TYPES, layer_plan

W, WC, SB, CB = 0.8, 0.6, 1.3, 0.4  # weight, weight_composition, style_boost, composition_boost
SD15_STYLE = [0, 1, 2, 3, 9, 10, 11, 12, 13, 14, 15]

# The pack's tables by host transformer index (IPAdapterPlus.py), for weight W etc.; missing index = 0.
TABLES = {
    ("sd15", "style transfer"): {t: W for t in SD15_STYLE},
    ("sdxl", "style transfer"): {6: W},
    ("sd15", "composition"): {4: W * 0.25, 5: W},
    ("sdxl", "composition"): {3: W},
    ("sd15", "strong style transfer"): {t: W for t in [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]},
    ("sdxl", "strong style transfer"): {t: W for t in [0, 1, 2, 4, 5, 6, 7, 8, 9, 10]},
    ("sd15", "style and composition"): {**{t: W for t in SD15_STYLE}, 4: WC * 0.25, 5: WC},
    ("sdxl", "style and composition"): {3: WC, 6: W},
    ("sd15", "strong style and composition"): {**{t: W for t in range(16)}, 4: WC, 5: WC},
    ("sdxl", "strong style and composition"): {**{t: W for t in range(11)}, 3: WC},
    ("sd15", "style transfer precise"): {**{t: W for t in SD15_STYLE}, 4: SB * 0.25, 5: SB},
    ("sdxl", "style transfer precise"): {3: SB, 6: W},
    ("sd15", "composition precise"): {**{t: CB for t in range(16)}, 4: W * 0.25, 5: W, 6: CB * .1, 7: CB * .1, 8: CB * .1},
    ("sdxl", "composition precise"): {**{t: CB * .1 for t in range(11)}, 3: W, 6: CB},
}
# precise types: where the cond tokens move to the uncond slot
SWAPS = {
    ("sd15", "style transfer precise"): {4, 5}, ("sdxl", "style transfer precise"): {3},
    ("sd15", "composition precise"): set(range(16)) - {4, 5}, ("sdxl", "composition precise"): set(range(11)) - {3},
}


def _host_index(family):
    """The host's transformer_index per our layer, derived from the block order the host walks (input blocks
    ascending, middle, output blocks ascending), not from ip_core's table."""
    specs = layer_specs(family)
    order = {"input": 0, "middle": 1, "output": 2}
    blocks = sorted({s.comfy_block for s in specs}, key=lambda b: (order[b[0]], b[1]))
    return [blocks.index(s.comfy_block) for s in specs]


def _expected_weight(family, weight_type, t, block, expand_style):
    n = 16 if family == "sd15" else 11
    if weight_type == "ease in":
        return W * (0.05 + 0.95 * (1 - t / n))
    if weight_type == "ease out":
        return W * (0.05 + 0.95 * (t / n))
    if weight_type == "ease in-out":
        return W * (0.05 + 0.95 * (1 - abs(t - n / 2) / (n / 2)))
    if weight_type == "reverse in-out":
        return W * (0.05 + 0.95 * (abs(t - n / 2) / (n / 2)))
    weak = {"weak input": ("input",), "weak output": ("output",), "weak middle": ("middle",),
            "strong middle": ("input", "output")}
    if weight_type in weak:
        return W * 0.2 if block in weak[weight_type] else W
    if weight_type == "linear":
        return W
    key = "strong style and composition" if expand_style else weight_type
    return TABLES[(family, key)].get(t, 0.0)


def test_host_index_table_matches_the_layer_maps():
    for family in ("sd15", "sdxl"):
        specs = layer_specs(family)
        assert set(HOST_TRANSFORMER_INDEX[family]) == {s.comfy_block for s in specs}
        assert [HOST_TRANSFORMER_INDEX[family][s.comfy_block] for s in specs] == _host_index(family)
    # spot checks from REFERENCE.md section 7: SD1.5 middle 6, output 3 -> 7; SDXL input 8 -> 3, output 1 -> 6
    assert HOST_TRANSFORMER_INDEX["sd15"][("middle", 0)] == 6 and HOST_TRANSFORMER_INDEX["sd15"][("output", 3)] == 7
    assert HOST_TRANSFORMER_INDEX["sdxl"][("input", 8)] == 3 and HOST_TRANSFORMER_INDEX["sdxl"][("output", 1)] == 6


def test_fifteen_names_in_the_packs_order():
    assert WEIGHT_TYPES == ("linear", "ease in", "ease out", "ease in-out", "reverse in-out", "weak input",
                            "weak output", "weak middle", "strong middle", "style transfer", "composition",
                            "strong style transfer", "style and composition", "style transfer precise",
                            "composition precise")
    assert EMBEDS_SCALINGS == ("V only", "K+V", "K+V w/ C penalty", "K+mean(V) w/ C penalty")


def _pack_image_term(q, k, v, heads, weight, scaling):
    """The pack's image term for one slot, written out (CrossAttentionPatch.py)."""
    if scaling == "K+mean(V) w/ C penalty":
        s = weight * k.shape[2] / 1280.0
        m = v.mean(dim=1, keepdim=True)
        return multihead_attention(q, k * s, (v - m) + m * s, heads)
    if scaling == "K+V w/ C penalty":
        s = weight * k.shape[2] / 1280.0
        return multihead_attention(q, k * s, v * s, heads)
    if scaling == "K+V":
        return multihead_attention(q, k * weight, v * weight, heads)
    return multihead_attention(q, k, v, heads) * weight


CASES = [(f, t, s, e) for f in ("sd15", "sdxl") for t in WEIGHT_TYPES for s in EMBEDS_SCALINGS for e in (False, True)
         if not e or t == "style and composition"]


@pytest.mark.parametrize("family,weight_type,scaling,expand", CASES,
                         ids=lambda x: str(x).replace(" ", "_").replace("/", ""))
def test_weight_type_and_scaling_match_the_pack(family, weight_type, scaling, expand):
    specs = layer_specs(family)
    plan = layer_plan(family, specs, weight_type, W, weight_composition=WC, expand_style=expand, style_boost=SB,
                      composition_boost=CB)
    assert len(plan) == len(specs)
    g = torch.Generator().manual_seed(0)
    comp_ts = {4, 5} if family == "sd15" else {3}
    seen = {}
    for spec, p, t in zip(specs, plan, _host_index(family)):
        want = _expected_weight(family, weight_type, t, spec.comfy_block[0], expand)
        assert p.weight == pytest.approx(want, rel=1e-12, abs=0), (spec.comfy_block, t)
        assert p.swap == (t in SWAPS.get((family, weight_type), ())), (spec.comfy_block, t)
        assert p.composition == (t in comp_ts)
        if (spec.comfy_block, spec.hidden_size) in seen:
            continue  # SDXL: the block's other transformer layers share weight and swap (checked above)
        seen[(spec.comfy_block, spec.hidden_size)] = True
        # the image term with both slots [cond, uncond], ours (resolved once) vs the pack's (per call)
        heads, width = 2, spec.hidden_size
        q = torch.randn(2, 6, width, generator=g, dtype=torch.float64)
        kc, vc, ku, vu = (torch.randn(1, 4, width, generator=g, dtype=torch.float64) for _ in range(4))
        if p.weight == 0:
            continue  # neither runs the layer
        slots = [(kc * 0, vc * 0), (kc, vc)] if p.swap else [(kc, vc), (ku, vu)]
        ours = []
        for k, v in slots:
            k2, v2, out_w = scaled_image_kv(k, v, p.weight, scaling)
            ours.append(k2), ours.append(v2)
        ours_k, ours_v = torch.cat(ours[0::2]), torch.cat(ours[1::2])
        got = image_attention(q, ours_k, ours_v, heads, out_w)
        # the pack: K'/V' of zero tokens for the cond slot when swapped (no bias: zeros), the reference's in uncond
        pk = torch.cat([kc * 0, kc]) if t in SWAPS.get((family, weight_type), ()) else torch.cat([kc, ku])
        pv = torch.cat([vc * 0, vc]) if t in SWAPS.get((family, weight_type), ()) else torch.cat([vc, vu])
        ref = _pack_image_term(q, pk, pv, heads, want, scaling)
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


def test_linear_v_only_is_the_plain_weight_everywhere():
    for family in ("sd15", "sdxl"):
        assert [p.weight for p in layer_plan(family, layer_specs(family), "linear", 0.7)] == [0.7] * len(layer_specs(family))
        assert not any(p.swap for p in layer_plan(family, layer_specs(family), "linear", 0.7))
    k, v = torch.randn(1, 4, 8), torch.randn(1, 4, 8)
    k2, v2, w = scaled_image_kv(k, v, 0.7, "V only")
    assert k2 is k and v2 is v and w == 0.7


def test_bad_names_and_expand_style():
    specs = layer_specs("sd15")
    with pytest.raises(IPAdapterError, match="unknown weight_type 'style'"):
        layer_plan("sd15", specs, "style")
    with pytest.raises(IPAdapterError, match="expand_style applies to weight_type 'style and composition' only"):
        layer_plan("sd15", specs, "linear", expand_style=True)


def test_decoupled_attention_is_text_plus_the_image_term():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 5, 16, generator=g) for _ in range(3))
    ik, iv = torch.randn(2, 4, 16, generator=g), torch.randn(2, 4, 16, generator=g)
    mask = torch.rand(2, 5, 1, generator=g)
    from ip_core.attention import decoupled_attention
    want = multihead_attention(q, k, v, 2) + image_attention(q, ik, iv, 2, 0.7, mask)
    assert torch.equal(decoupled_attention(q, k, v, ik, iv, 2, 0.7, mask), want)
    torch.testing.assert_close(image_attention(q, ik, iv, 2, 0.7, mask), 0.7 * mask * multihead_attention(q, ik, iv, 2))
