"""The workflow converter on what older versions of the widely used pack saved (its public git history):
older widget layouts (the pack only appended widgets: the missing trailing ones take its defaults, as the
frontend fills them), older choice names, and its first-generation nodes, removed in its 2024 rewrite
(IPAdapterApply, IPAdapterApplyEncoded, IPAdapterApplyFaceID, InsightFaceLoader, PrepImageForInsightFace).
"""
import pytest
import torch

from pack_workflows import VALUES, _Graph, api_of, pack_workflow
from test_migrate import _node, _types, _values, fits_our_nodes
from nodes import migrate, migrate_table as table
from nodes.migrate import convert, validate_api, validate_ui
from ip_core.attention import image_attention, multihead_attention, scaled_image_kv

OLD = [(t, layout) for t, layouts in table.OLD_LAYOUTS.items() for layout in layouts]


def _converted(wf):
    new, report = convert(wf)
    assert validate_ui(new) == []
    assert not report.of("problem"), report.text()
    assert not [t for t in _types(new) if t in table.PACK], report.text()
    return new, report


@pytest.mark.parametrize("node_type, layout", OLD, ids=[f"{t}-{len(l)}" for t, l in OLD])
def test_every_older_widget_layout_converts_with_the_packs_defaults(host, node_type, layout):
    wf = pack_workflow(node_type)
    node = _node(wf, node_type)
    given = {**VALUES, "weight_type": "original" if "Apply" in node_type else VALUES["weight_type"], "weight": 0.8}
    node["widgets_values"] = [given[n] for n in layout]
    if migrate.entry_status(table.PACK[node_type]) is not None:  # no counterpart yet: kept, its layout no problem
        new, report = convert(wf)
        assert not report.of("problem") and node_type in _types(new)
        return
    new, report = _converted(wf)
    missing = [w for w in migrate.pack_widgets(table.PACK[node_type]) if w not in layout]
    line = next(n.text for n in report.of("mapped") if "older version of the pack" in n.text)
    assert all(f"{w}=" in line for w in missing)
    if "weight" in layout and "IPAApplyAdapter" in _types(new):
        assert _values(new, "IPAApplyAdapter")["weight"] == 0.8  # read by its name, not by today's position
    assert fits_our_nodes(new, convert(api_of(pack_workflow(node_type)))[0])


def test_a_layout_no_version_saved_is_kept_and_named():
    wf = pack_workflow("IPAdapterBatch")
    _node(wf, "IPAdapterBatch")["widgets_values"] = [1.0, "linear"]
    new, report = convert(wf)
    assert "IPAdapterBatch" in _types(new)
    assert any("2 widget values" in n.text for n in report.of("problem"))


def test_the_first_generation_encoder_layout_is_kept_with_its_reason():
    wf = pack_workflow("IPAdapterEncoder")
    _node(wf, "IPAdapterEncoder")["widgets_values"] = [False, 0.0, 1.0, 1.0, 1.0, 1.0]
    new, report = convert(wf)
    assert "IPAdapterEncoder" in _types(new)
    assert any("first-generation layout" in n.text and "Encode Image Prompt" in n.text for n in report.of("problem"))


@pytest.mark.parametrize("node_type, old, new_name", [
    ("IPAdapterAdvanced", "style transfer (SDXL)", "style transfer"),
    ("IPAdapterAdvanced", "composition (SDXL)", "composition"),
    ("IPAdapterBatch", "style transfer and composition", "style and composition"),
    ("IPAdapter", "style transfer (SDXL only)", "style transfer"),
])
def test_older_choice_names_map_to_todays(host, node_type, old, new_name):
    wf = pack_workflow(node_type, {"weight_type": old})
    for source in (wf, api_of(wf)):
        new, report = convert(source)
        assert not report.of("problem") and not report.of("not supported"), report.text()
        assert any(f"{old!r} is an older name of {new_name!r}" in n.text for n in report.of("mapped"))
        assert any(n.text.startswith(f"weight_type={new_name!r}") for n in report.of("mapped"))
    assert _values(convert(wf)[0], "IPAApplyAdapter")["weight_type"] == new_name
    assert fits_our_nodes(convert(wf)[0], convert(api_of(wf))[0])


# ------------------------------------------------------------------------------------------ the first generation

@pytest.mark.parametrize("weight_type, scaling", [("original", "V only"), ("linear", "K+V"),
                                                  ("channel penalty", "K+mean(V) w/ C penalty")])
def test_first_generation_apply_weight_types_become_embeds_scalings(host, weight_type, scaling):
    wf = pack_workflow("IPAdapterApply", {"weight_type": weight_type, "weight": 0.6, "start_at": 0.1, "end_at": 0.9})
    new, report = _converted(wf)
    apply = _values(new, "IPAApplyAdapter")
    assert (apply["weight_type"], apply["embeds_scaling"], apply["weight"], apply["start_at"], apply["end_at"]) == (
        "linear", scaling, 0.6, 0.1, 0.9)
    api, api_report = convert(api_of(wf))
    assert validate_api(api) == [] and fits_our_nodes(new, api)


@pytest.mark.parametrize("weight_type, scaling", [("original", "V only"), ("linear", "K+V"),
                                                  ("channel penalty", "K+mean(V) w/ C penalty")])
def test_the_first_generations_weight_types_are_these_scalings(weight_type, scaling):
    """The first generation's image term, written from its definition: 'original' scales the attention
    output, 'linear' scales K and V, 'channel penalty' scales K and V's token mean by weight * C / 1280.
    Ours (ip_core) with the mapped scaling gives the same numbers."""
    g = torch.Generator().manual_seed(0)
    heads, width = 4, 64  # small: one thread does it
    q = torch.randn(1, 16, width, generator=g, dtype=torch.float64)
    k, v = (torch.randn(1, 4, width, generator=g, dtype=torch.float64) for _ in range(2))
    w = 0.7
    if weight_type == "original":
        ref = multihead_attention(q, k, v, heads) * w
    elif weight_type == "linear":
        ref = multihead_attention(q, k * w, v * w, heads)
    else:
        big_w = w * width / 1280.0
        mean = v.mean(dim=1, keepdim=True)
        ref = multihead_attention(q, k * big_w, (v - mean) + mean * big_w, heads)
    k2, v2, out_w = scaled_image_kv(k, v, w, scaling)
    torch.testing.assert_close(image_attention(q, k2, v2, heads, out_w), ref, rtol=1e-12, atol=1e-12)


def test_first_generation_apply_noise_and_unfold_batch():
    wf = pack_workflow("IPAdapterApply", {"noise": 0.3, "unfold_batch": True})
    new, report = convert(wf)
    assert validate_ui(new) == []
    assert any(n.text.startswith("noise (0.3)") and "IPAdapter Noise" in n.text for n in report.of("not supported"))
    assert _values(new, "IPAEncodeImagePrompt")["combine"] == "batch"
    assert any("unfold_batch=True" in n.text for n in report.of("approximated"))
    new, report = _converted(pack_workflow("IPAdapterApply"))
    assert _values(new, "IPAEncodeImagePrompt")["combine"] == "concat"


def _faceid_v1(faceid_v2, weight_v2=1.4):
    g = _Graph()
    face_loader = g.b.node("InsightFaceLoader", {"provider": "CUDA"})
    prep = g.b.node("PrepImageForInsightFace")
    g.b.link(g.ids["LoadImage"], 0, prep, "image")
    g.providers["LoadImage"] = prep
    nid = g.add("IPAdapterApplyFaceID", {"faceid_v2": faceid_v2, "weight_v2": weight_v2, "weight_type": "original"},
                skip=("insightface",))
    g.b.link(face_loader, 0, nid, "insightface")
    g.b.link(nid, 0, g.ids["KSampler"], "model")
    return g.b.wf


@pytest.mark.parametrize("faceid_v2, plus_version", [(True, "v2 (shortcut)"), (False, "v1")])
def test_first_generation_faceid_with_its_insightface_loader_and_prep(host, faceid_v2, plus_version):
    wf = _faceid_v1(faceid_v2)
    new, report = _converted(wf)
    face, apply = _values(new, "IPAEncodeFace"), _values(new, "IPAApplyAdapter")
    assert (face["provider"], face["plus_version"]) == ("CUDA", plus_version)
    assert (apply["weight_faceidv2"], apply["faceid_lora_strength"], apply["embeds_scaling"]) == (1.4, 0.0, "V only")
    link = next(l for l in new["links"] if l[3] == _node(new, "IPAEncodeFace")["id"] and l[5] == "IMAGE")
    assert next(n for n in new["nodes"] if n["id"] == link[1])["type"] == "LoadImage"  # Prep passed through
    api, api_report = convert(api_of(wf))
    assert validate_api(api) == [] and not api_report.of("problem") and fits_our_nodes(new, api)


def test_first_generation_apply_encoded_takes_loaded_embeds(host):
    g = _Graph()
    load = g.b.node("IPAdapterLoadEmbeds")
    nid = g.add("IPAdapterApplyEncoded", {"weight_type": "channel penalty"}, skip=("embeds",))
    g.b.link(load, 0, nid, "embeds")
    g.b.link(nid, 0, g.ids["KSampler"], "model")
    new, report = convert(g.b.wf)
    assert validate_ui(new) == [] and "IPAdapterApplyEncoded" not in _types(new)
    assert _values(new, "IPAApplyAdapter")["embeds_scaling"] == "K+mean(V) w/ C penalty"
    apply = _node(new, "IPAApplyAdapter")
    embeds_in = next(i["link"] for i in apply["inputs"] if i["name"] == "embeds")
    assert next(n for n in new["nodes"] if n["id"] == next(l for l in new["links"] if l[0] == embeds_in)[1])["type"] == (
        "IPALoadEmbeds")
