"""The pack's regional nodes converted: per region an Encode Image Prompt + Apply IPAdapter (the region's
mask as attn_mask, its weight, weight type and window), chained by the model in the pack's order (Combine
Params joins params_1 ... params_5 in turn), and the host's ConditioningSetMask (strength = prompt_weight,
area 'default') on each text prompt when the region has a mask.
"""
from pack_workflows import _Graph, api_of
from test_migrate import fits_our_nodes
from nodes import migrate, migrate_table as table
from nodes.migrate import convert, validate_api, validate_ui


def _values(node):
    return dict(zip(migrate.our_widgets(node["type"]), node["widgets_values"]))


def _regional_workflow(with_mask=True):
    """Two regions (the second with an older weight type name) joined by Combine Params into From Params;
    the first region masks the prompts, which feed the KSampler."""
    g = _Graph()
    regions = []
    for i, (weight, weight_type, start) in enumerate([(0.7, "ease in", 0.1), (1.2, "style transfer (SDXL)", 0.3)]):
        r = g.b.node("IPAdapterRegionalConditioning", {"image_weight": weight, "prompt_weight": 1.5 + i,
                                                       "weight_type": weight_type, "start_at": start, "end_at": 0.9})
        g.b.link(g.ids["LoadImage"], 0, r, "image")
        if with_mask or i:
            mask = g.b.node("LoadImageMask")
            g.b.link(mask, 0, r, "mask")
        regions.append(r)
    ks = g.ids["KSampler"]
    ks_node = g.b.get(ks)
    for side in ("positive", "negative"):  # the prompts go through the first region
        slot = next(i for i, x in enumerate(ks_node["inputs"]) if x["name"] == side)
        lid = ks_node["inputs"][slot]["link"]
        link = next(l for l in g.b.wf["links"] if l[0] == lid)
        g.b.wf["links"].remove(link)
        g.b.get(link[1])["outputs"][link[2]]["links"].remove(lid)
        ks_node["inputs"][slot]["link"] = None
        g.b.link(link[1], link[2], regions[0], side)
        g.b.link(regions[0], 1 if side == "positive" else 2, ks, side)
    combine = g.b.node("IPAdapterCombineParams")
    g.b.link(regions[0], 0, combine, "params_1")
    g.b.link(regions[1], 0, combine, "params_2")
    fp = g.add("IPAdapterFromParams", {"combine_embeds": "average", "embeds_scaling": "K+V"}, skip=("ipadapter_params",))
    g.b.link(combine, 0, fp, "ipadapter_params")
    g.b.link(fp, 0, ks, "model")
    return g.b.wf


def _by_id(wf):
    return {n["id"]: n for n in wf["nodes"]}


def _source(wf, node, name):
    lid = next(i["link"] for i in node["inputs"] if i["name"] == name)
    link = next(l for l in wf["links"] if l[0] == lid)
    return _by_id(wf)[link[1]]


def test_regions_become_encode_and_apply_per_region_chained_by_the_model(host):
    wf = _regional_workflow()
    new, report = convert(wf)
    assert validate_ui(new) == [] and not report.of("problem"), report.text()
    assert not [n for n in new["nodes"] if n["type"] in table.PACK]
    applies = [n for n in new["nodes"] if n["type"] == "IPAApplyAdapter"]
    assert len(applies) == 2
    first, second = sorted(applies, key=lambda n: n["id"])
    assert _source(new, second, "model")["id"] == first["id"]  # chained in the pack's order
    assert _source(new, first, "model")["type"] == "CheckpointLoaderSimple"
    ks = next(n for n in new["nodes"] if n["type"] == "KSampler")
    assert _source(new, ks, "model")["id"] == second["id"]
    v1, v2 = _values(first), _values(second)
    assert (v1["weight"], v1["weight_type"], v1["start_at"], v1["end_at"], v1["embeds_scaling"]) == (
        0.7, "ease in", 0.1, 0.9, "K+V")
    assert (v2["weight"], v2["weight_type"], v2["start_at"]) == (1.2, "style transfer", 0.3)  # the older name mapped
    for apply in (first, second):
        assert _source(new, apply, "attn_mask")["type"] == "LoadImageMask"
        enc = _source(new, apply, "embeds")
        assert enc["type"] == "IPAEncodeImagePrompt" and _values(enc)["combine"] == "average"
        assert _source(new, enc, "image")["type"] == "LoadImage"
    # the prompts: masked with strength = prompt_weight, as the pack's conditioning_set_values does
    for side in ("positive", "negative"):
        masked = _source(new, ks, side)
        assert masked["type"] == "ConditioningSetMask"
        assert _values(masked) == {"strength": 1.5, "set_cond_area": "default"}
        assert _source(new, masked, "conditioning")["type"] == "CLIPTextEncode"
        assert _source(new, masked, "mask")["type"] == "LoadImageMask"
    api, api_report = convert(api_of(wf))
    assert validate_api(api) == [] and not api_report.of("problem"), api_report.text()
    assert sorted(e["class_type"] for e in api.values()) == sorted(e["class_type"] for e in api_of(new).values())
    assert fits_our_nodes(new, api)


def test_a_region_without_mask_passes_its_prompts_unchanged():
    wf = _regional_workflow(with_mask=False)
    new, report = convert(wf)
    assert validate_ui(new) == [] and not report.of("problem"), report.text()
    ks = next(n for n in new["nodes"] if n["type"] == "KSampler")
    assert _source(new, ks, "positive")["type"] == "CLIPTextEncode"
    assert "ConditioningSetMask" not in [n["type"] for n in new["nodes"]]
    first = min((n for n in new["nodes"] if n["type"] == "IPAApplyAdapter"), key=lambda n: n["id"])
    assert all(i["link"] is None for i in first["inputs"] if i["name"] == "attn_mask")
