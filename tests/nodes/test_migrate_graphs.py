"""The workflow converter on the graph features of the ComfyUI frontend around the pack's nodes: Reroutes
(followed upstream to the value's source and downstream from a converted node), Primitive nodes feeding
widgets, muted and bypassed nodes, and subgraphs (`definitions.subgraphs`, whose pack nodes convert too).
"""
import copy
import re

from pack_workflows import _Graph, into_subgraph, pack_workflow, without_counterpart
from test_migrate import _check_inputs
from nodes import migrate, migrate_table as table
from nodes.migrate import convert, validate_ui

REROUTE = {"type": "Reroute", "size": [75, 26], "flags": {}, "order": 0, "mode": 0,
           "properties": {"showOutputText": False, "horizontal": False}}


def _node(wf, node_type):
    return next(n for n in wf["nodes"] if n["type"] == node_type)


def _values(wf, node_type):
    node = _node(wf, node_type)
    return dict(zip(migrate.our_widgets(node_type), node["widgets_values"]))


def _reroute_between(wf, link_id, hops=1):
    """Put `hops` Reroutes on link `link_id` (as the frontend saves them); returns their ids."""
    link = next(l for l in wf["links"] if l[0] == link_id)
    src, slot, dst, dst_slot, ty = link[1], link[2], link[3], link[4], link[5]
    by_id = {n["id"]: n for n in wf["nodes"]}
    by_id[src]["outputs"][slot]["links"].remove(link_id)
    wf["links"].remove(link)
    ids = []
    for i in range(hops):
        wf["last_node_id"] += 1
        rid = wf["last_node_id"]
        wf["nodes"].append({**REROUTE, "id": rid, "pos": [by_id[dst]["pos"][0] - 100 - 90 * i, by_id[dst]["pos"][1] - 80],
                            "inputs": [{"name": "", "type": "*", "link": None}],
                            "outputs": [{"name": "", "type": ty, "links": [], "slot_index": 0}]})
        by_id[rid] = wf["nodes"][-1]
        _link(wf, by_id, src, slot, rid, 0, ty)
        src, slot = rid, 0
        ids.append(rid)
    by_id[dst]["inputs"][dst_slot]["link"] = None
    _link(wf, by_id, src, slot, dst, dst_slot, ty)
    return ids


def _link(wf, by_id, src, slot, dst, dst_slot, ty):
    wf["last_link_id"] += 1
    lid = wf["last_link_id"]
    wf["links"].append([lid, src, slot, dst, dst_slot, ty])
    by_id[src]["outputs"][slot]["links"].append(lid)
    by_id[dst]["inputs"][dst_slot]["link"] = lid
    return lid


def _input_link(wf, node_type, name):
    node = _node(wf, node_type)
    lid = next(i["link"] for i in node["inputs"] if i["name"] == name)
    return next(l for l in wf["links"] if l[0] == lid)


def _source(wf, link):
    """The node a link's value comes from, through Reroutes (as the frontend's graphToPrompt does)."""
    by_id = {n["id"]: n for n in wf["nodes"]}
    links = {l[0]: l for l in wf["links"]}
    while by_id[link[1]]["type"] == "Reroute":
        link = links[by_id[link[1]]["inputs"][0]["link"]]
    return by_id[link[1]], link[2]


def fits_the_standin(host, wf):
    """Every node of ours in the converted UI workflow fits its real INPUT_TYPES, links resolved through
    Reroutes to the type their source really gives (muted and bypassed nodes are not executed)."""
    from nodes.registry import NODE_CLASS_MAPPINGS
    from workflow_api import widget_layout
    for node in wf["nodes"]:
        if node["type"] not in NODE_CLASS_MAPPINGS or node.get("mode", 0) in (2, 4):
            continue
        inputs = dict(zip([n for n in widget_layout(NODE_CLASS_MAPPINGS[node["type"]].INPUT_TYPES())],
                          node["widgets_values"]))
        for inp in node["inputs"]:
            if inp["link"] is not None:
                link = next(l for l in wf["links"] if l[0] == inp["link"])
                src, slot = _source(wf, link)
                inputs[inp["name"]] = [src["id"], src["outputs"][slot]["type"]]
        _check_inputs(f"node {node['id']}", node["type"], inputs, lambda ref: ref[1])
    return True


def test_reroutes_are_followed_to_the_source_and_from_the_converted_node(host):
    wf = pack_workflow("IPAdapterAdvanced")
    ipa = _input_link(wf, "IPAdapterAdvanced", "ipadapter")[0]
    image = _input_link(wf, "IPAdapterAdvanced", "image")[0]
    model_out = _input_link(wf, "KSampler", "model")[0]
    pack_hops = _reroute_between(wf, ipa, hops=2)  # loader -> R -> R -> Advanced (the pack's IPADAPTER)
    image_hop = _reroute_between(wf, image)  # LoadImage -> R -> Advanced
    model_hop = _reroute_between(wf, model_out)  # Advanced -> R -> KSampler
    new, report = convert(wf)
    assert validate_ui(new) == []
    assert not report.of("problem"), report.text()
    types = {n["id"]: n["type"] for n in new["nodes"]}
    assert not [t for t in types.values() if t in table.PACK]
    # the pack's pipeline had no counterpart to carry: its Reroutes go, each named
    assert not set(pack_hops) & set(types)
    assert {n.node for n in report.of("not needed")} >= {f"{r} Reroute" for r in pack_hops}
    assert _source(new, _input_link(new, "IPAEncodeImagePrompt", "ipadapter"))[0]["type"] == "IPALoadAdapter"
    # the other Reroutes stay where the user put them: the image still passes its Reroute, the model leaves ours by its Reroute
    assert _input_link(new, "IPAEncodeImagePrompt", "image")[1] == image_hop[0]
    assert _input_link(new, "KSampler", "model")[1] == model_hop[0]
    assert _source(new, _input_link(new, "KSampler", "model"))[0]["type"] == "IPAApplyAdapter"
    assert fits_the_standin(host, new)


def test_a_reroute_that_still_feeds_a_kept_node_stays_and_keeps_the_pack_nodes_joined(monkeypatch):
    """A Reroute carrying the pack's IPADAPTER to a node with no counterpart: everything joined to that
    node by the pack's types is kept, as without the Reroute."""
    without_counterpart(monkeypatch, "IPAdapterTiledBatch")
    g = _Graph()
    adv = g.add("IPAdapterAdvanced")
    g.b.link(adv, 0, g.ids["KSampler"], "model")
    tiled_batch = g.add("IPAdapterTiledBatch")  # no counterpart: kept
    wf = g.b.wf
    lid = _input_link(wf, "IPAdapterTiledBatch", "ipadapter")[0]
    _reroute_between(wf, lid)
    new, report = convert(wf)
    assert validate_ui(new) == []
    types = [n["type"] for n in new["nodes"]]
    assert "IPAdapterModelLoader" in types and "IPAdapterTiledBatch" in types and "Reroute" in types
    assert any(n.node.startswith(f"{tiled_batch} ") for n in report.of("not supported yet"))


def test_reroute_loops_and_unfed_reroutes_are_no_sources():
    wf = pack_workflow("IPAdapterAdvanced")
    lid = _input_link(wf, "IPAdapterAdvanced", "image")[0]
    r1, r2 = _reroute_between(wf, lid, hops=2)
    by_id = {n["id"]: n for n in wf["nodes"]}
    feed = by_id[r1]["inputs"][0]["link"]
    wf["links"] = [l for l in wf["links"] if l[0] != feed]
    by_id[r1]["inputs"][0]["link"] = None
    _link(wf, by_id, r2, 0, r1, 0, "IMAGE")  # r1 <-> r2: a loop, fed by nothing
    new, report = convert(wf)
    assert validate_ui(new) == []
    assert any("IPAEncodeImagePrompt.image is not connected" in n.text for n in report.of("problem"))


def test_a_primitive_feeding_a_widget_gives_its_value():
    wf = pack_workflow("IPAdapterAdvanced", {"weight": 0.7})
    by_id = {n["id"]: n for n in wf["nodes"]}
    adv = _node(wf, "IPAdapterAdvanced")
    wf["last_node_id"] += 1
    prim = wf["last_node_id"]
    wf["nodes"].append({"id": prim, "type": "PrimitiveNode", "pos": [0, 900], "size": [200, 80], "flags": {}, "order": 0,
                        "mode": 0, "inputs": [], "outputs": [{"name": "FLOAT", "type": "FLOAT", "links": [],
                                                                "widget": {"name": "weight"}}],
                        "properties": {"Run widget replace on values": False}, "widgets_values": [0.7, "fixed"]})
    by_id[prim] = wf["nodes"][-1]
    adv["inputs"].append({"name": "weight", "type": "FLOAT", "widget": {"name": "weight"}, "link": None})
    _link(wf, by_id, prim, 0, adv["id"], len(adv["inputs"]) - 1, "FLOAT")
    new, report = convert(wf)
    assert validate_ui(new) == [] and not report.of("problem"), report.text()
    assert _values(new, "IPAApplyAdapter")["weight"] == 0.7
    assert any(n.node == f"{prim} PrimitiveNode" for n in report.of("not needed"))
    assert _node(new, "PrimitiveNode")["outputs"][0]["links"] == []


def test_muted_and_bypassed_pack_nodes_stay_muted_and_bypassed():
    for mode in (2, 4):
        wf = pack_workflow("IPAdapterAdvanced")
        _node(wf, "IPAdapterAdvanced")["mode"] = mode
        new, report = convert(wf)
        assert validate_ui(new) == [] and not report.of("problem")
        assert {_node(new, t)["mode"] for t in ("IPAEncodeImagePrompt", "IPAApplyAdapter")} == {mode}


def _subgraph_workflow():
    """The main graph: checkpoint, image -> [subgraph 'style': IPAdapter Advanced with its own loader and
    CLIP vision loader] -> KSampler. The subgraph's inputs are model and image, its output the model."""
    inner = pack_workflow("IPAdapterAdvanced")
    by_id = {n["id"]: n for n in inner["nodes"]}
    adv = _node(inner, "IPAdapterAdvanced")
    keep = {"IPAdapterAdvanced", "IPAdapterModelLoader", "CLIPVisionLoader"}
    kept_ids = {n["id"] for n in inner["nodes"] if n["type"] in keep}
    links = [l for l in inner["links"] if l[1] in kept_ids and l[3] in kept_ids]
    model_in = next(i for i, x in enumerate(adv["inputs"]) if x["name"] == "model")
    image_in = next(i for i, x in enumerate(adv["inputs"]) if x["name"] == "image")
    links += [[900, -10, 0, adv["id"], model_in, "MODEL"], [901, -10, 1, adv["id"], image_in, "IMAGE"],
              [902, adv["id"], 0, -20, 0, "MODEL"]]
    adv["inputs"][model_in]["link"], adv["inputs"][image_in]["link"] = 900, 901
    adv["outputs"][0]["links"] = [902]
    keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    sub = {"id": "5b0d-style", "version": 1, "name": "style", "state": {"lastNodeId": inner["last_node_id"],
                                                                          "lastLinkId": 902},
           "inputNode": {"id": -10, "bounding": [0, 0, 100, 60]}, "outputNode": {"id": -20, "bounding": [900, 0, 100, 60]},
           "inputs": [{"id": "i1", "name": "model", "type": "MODEL", "linkIds": [900]},
                      {"id": "i2", "name": "image", "type": "IMAGE", "linkIds": [901]}],
           "outputs": [{"id": "o1", "name": "MODEL", "type": "MODEL", "linkIds": [902]}],
           "widgets": [], "nodes": [by_id[i] for i in sorted(kept_ids)],
           "links": [dict(zip(keys, l)) for l in links]}
    main = pack_workflow("IPAdapterAdvanced")  # reuse its core nodes; replace the pack nodes by the subgraph
    main["nodes"] = [n for n in main["nodes"] if n["type"] not in keep]
    ids = {n["id"] for n in main["nodes"]}
    main["links"] = [l for l in main["links"] if l[1] in ids and l[3] in ids]
    for n in main["nodes"]:
        for i in n["inputs"]:
            if i["link"] is not None and i["link"] not in {l[0] for l in main["links"]}:
                i["link"] = None
        for o in n["outputs"]:
            o["links"] = [x for x in o["links"] if x in {l[0] for l in main["links"]}]
    main_by_id = {n["id"]: n for n in main["nodes"]}
    main["last_node_id"] += 1
    inst = main["last_node_id"]
    main["nodes"].append({"id": inst, "type": sub["id"], "pos": [400, 600], "size": [200, 80], "flags": {}, "order": 0,
                          "mode": 0, "inputs": [{"name": "model", "type": "MODEL", "link": None},
                                                {"name": "image", "type": "IMAGE", "link": None}],
                          "outputs": [{"name": "MODEL", "type": "MODEL", "links": []}], "properties": {}})
    main_by_id[inst] = main["nodes"][-1]
    _link(main, main_by_id, _node(main, "CheckpointLoaderSimple")["id"], 0, inst, 0, "MODEL")
    _link(main, main_by_id, _node(main, "LoadImage")["id"], 0, inst, 1, "IMAGE")
    _link(main, main_by_id, inst, 0, _node(main, "KSampler")["id"], 0, "MODEL")
    main["definitions"] = {"subgraphs": [sub]}
    return main


def test_pack_nodes_inside_a_subgraph_convert_too(host):
    wf = _subgraph_workflow()
    new, report = convert(wf)
    assert validate_ui(new) == [] and not report.of("problem"), report.text()
    sub = new["definitions"]["subgraphs"][0]
    types = [n["type"] for n in sub["nodes"]]
    assert "IPAApplyAdapter" in types and "IPAEncodeImagePrompt" in types and not [t for t in types if t in table.PACK]
    assert all(n.node.startswith("subgraph 'style': ") for n in report.notes)
    # the subgraph's own bookkeeping: its input and output slots name the links that now reach our nodes
    links = {l["id"]: l for l in sub["links"]}
    by_id = {n["id"]: n for n in sub["nodes"]}
    (model_link,), (image_link,) = (s["linkIds"] for s in sub["inputs"])
    assert by_id[links[model_link]["target_id"]]["type"] == "IPAApplyAdapter"
    assert by_id[links[image_link]["target_id"]]["type"] == "IPAEncodeImagePrompt"
    (out_link,) = sub["outputs"][0]["linkIds"]
    assert by_id[links[out_link]["origin_id"]]["type"] == "IPAApplyAdapter" and links[out_link]["target_id"] == -20
    for l in sub["links"]:
        for end, key in (("origin_id", "outputs"), ("target_id", "inputs")):
            if l[end] in by_id:
                slot = by_id[l[end]][key][l[end.replace("_id", "_slot")]]
                assert l["id"] in (slot.get("links") or []) or slot.get("link") == l["id"]
    # ids: new nodes and links follow every id of the file, and the state counts them
    all_ids = [n["id"] for n in new["nodes"]] + [n["id"] for n in sub["nodes"]]
    assert len(all_ids) == len(set(all_ids)) and sub["state"]["lastNodeId"] == max(n["id"] for n in sub["nodes"])
    assert sub["state"]["lastLinkId"] == max(links) and new["last_node_id"] >= max(all_ids)
    # the input is untouched, the main graph's nodes too
    assert "IPAdapterAdvanced" in [n["type"] for n in wf["definitions"]["subgraphs"][0]["nodes"]]
    assert [n["id"] for n in new["nodes"]] == [n["id"] for n in wf["nodes"]]


def test_broken_subgraph_definitions_are_named_and_kept():
    wf = _subgraph_workflow()
    wf["definitions"]["subgraphs"] += [7, {"name": "x", "nodes": [{"id": 1, "type": ["IPAdapter"]}], "links": []},
                                       {"name": "y", "nodes": [], "inputs": "z"}]
    new, report = convert(wf)
    assert validate_ui(new) == []
    assert new["definitions"]["subgraphs"][1:] == wf["definitions"]["subgraphs"][1:]
    assert len([n for n in report.of("problem") if "kept as is" in n.text]) == 3


# ------------------------------------------------------------------------------------------ across subgraph boundaries

def _flat_links(wf):
    """(source type, output slot type, target type, input name) of every link, through the subgraph: the links
    into and out of the boundary joined up (what the graph computes, whichever side of it a node is on)."""
    sub = wf["definitions"]["subgraphs"][0]
    outer = {n["id"]: n for n in wf["nodes"]}
    inner = {n["id"]: n for n in sub["nodes"]}
    inst = next(i for i, n in outer.items() if n["type"] == sub["id"])
    into_inst = {l[4]: l for l in wf["links"] if l[3] == inst}
    inner_links = [[l["id"], l["origin_id"], l["origin_slot"], l["target_id"], l["target_slot"], l["type"]]
                   for l in sub["links"]]
    out_src = {l[4]: l for l in inner_links if l[3] == -20}
    found = set()
    for links, here in ((wf["links"], outer), (inner_links, inner)):
        for _, src, slot, dst, dst_slot, _ in links:
            side = here
            while src in (inst, -10) and (side is outer) == (src == inst):  # through the boundary, as often as it goes
                _, src, slot, _, _, _ = (out_src if src == inst else into_inst)[slot]
                side = inner if side is outer else outer
            src_node = side[src]
            if dst in (inst, -20):
                continue
            found.add((src_node["type"], src_node["outputs"][slot]["type"], here[dst]["type"],
                       here[dst]["inputs"][dst_slot]["name"]))
    return found


def _converted_flat(wf):
    new, report = convert(wf)
    assert validate_ui(new) == [], report.text()
    outer = {n["id"]: n for n in new["nodes"]}
    return {(outer[l[1]]["type"], outer[l[1]]["outputs"][l[2]]["type"], outer[l[3]]["type"],
             outer[l[3]]["inputs"][l[4]]["name"]) for l in new["links"]}, report


def _lines(report):
    """The report's lines, whichever graph their node is in and whatever ids the new nodes got."""
    return sorted((n.kind, re.sub(r"[0-9]+", "#", n.text)) for n in report.notes)


def _check_split(flat, inside):
    """Converting the workflow with `inside` in a subgraph joins the same nodes by the same links as converting it
    flat, reports no problem, and leaves no pack node on either side."""
    expected, flat_report = _converted_flat(flat)
    split = into_subgraph(flat, inside)
    new, report = convert(split)
    assert validate_ui(new) == []  # (each subgraph is validated by the converter itself: exit 3 otherwise)
    assert _lines(report) == _lines(flat_report), report.text()
    sub = new["definitions"]["subgraphs"][0]
    assert not [n["type"] for n in new["nodes"] + sub["nodes"] if n["type"] in table.PACK]
    assert _flat_links(new) == expected
    # the instance's slots are its definition's, in order and type
    inst = next(n for n in new["nodes"] if n["type"] == sub["id"])
    assert [(i["name"], i["type"]) for i in inst["inputs"]] == [(s["name"], s["type"]) for s in sub["inputs"]]
    assert [(o["name"], o["type"]) for o in inst["outputs"]] == [(s["name"], s["type"]) for s in sub["outputs"]]
    return new, report, sub


def test_a_pipeline_into_a_subgraph_converts_across_its_boundary(host):
    """The Unified Loader outside, IPAdapter inside: the subgraph's IPADAPTER input becomes Load IPAdapter's
    IPA_ADAPTER, and a CLIP_VISION input is added for the pipeline's CLIP vision, which the encode inside uses."""
    flat = pack_workflow("IPAdapter")
    new, report, sub = _check_split(flat, {_node(flat, "IPAdapter")["id"]})
    types = {s["name"]: s["type"] for s in sub["inputs"]}
    assert types["ipadapter"] == "IPA_ADAPTER" and types["ipadapter_clip_vision"] == "CLIP_VISION"
    assert len({s["id"] for s in sub["inputs"]}) == len(sub["inputs"])
    assert convert(into_subgraph(flat, {_node(flat, "IPAdapter")["id"]}))[0] == new  # the same ids every time


def test_a_pipeline_out_of_a_subgraph_converts_across_its_boundary(host):
    flat = pack_workflow("IPAdapter")
    new, report, sub = _check_split(flat, {_node(flat, "IPAdapterUnifiedLoader")["id"]})
    (adapter, clip_vision), = [sub["outputs"]]
    assert (adapter["type"], clip_vision["type"]) == ("IPA_ADAPTER", "CLIP_VISION")
    assert clip_vision["name"] == adapter["name"] + "_clip_vision"


def test_embeds_and_strategies_cross_subgraph_boundaries(host):
    for node_type, moved in (("IPAdapterEmbeds", "IPAdapterEncoder"), ("IPAdapterEmbeds", "IPAdapterEmbeds"),
                             ("IPAdapterWeightsFromStrategy", "IPAdapterWeights"),
                             ("IPAdapterPromptScheduleFromWeightsStrategy", "IPAdapterPromptScheduleFromWeightsStrategy")):
        flat = pack_workflow(node_type)
        _check_split(flat, {_node(flat, moved)["id"]})


REGION_NODES = ("IPAdapterRegionalConditioning", "IPAdapterCombineParams", "IPAdapterFromParams")


def test_every_converting_pack_node_converts_in_a_subgraph_as_it_does_outside(host):
    """Each pack node that converts, moved alone into a subgraph (its loaders, pipelines, embeds, InsightFace
    loader outside), or alone left outside with everything else inside: the same graph, and the same report
    lines, as converting it flat (the loaders' settings reach the nodes they feed across the boundary)."""
    from test_migrate import SUPPORTED

    for node_type in SUPPORTED:
        if node_type in REGION_NODES:
            continue  # below
        for optional in (False, True):
            flat = pack_workflow(node_type, connect_optional=optional)
            moved = _node(flat, node_type)["id"]
            _check_split(flat, {moved})
            _check_split(flat, {n["id"] for n in flat["nodes"] if n["id"] != moved})


def test_regions_do_not_cross_a_boundary_and_say_so(host):
    """The regions are rebuilt from the nodes that make them: IPAdapter From Params inside a subgraph, its Regional
    Conditioning outside, is named with what to do (the rest converts, and nothing crashes)."""
    flat = pack_workflow("IPAdapterFromParams")
    new, report = convert(into_subgraph(flat, {_node(flat, "IPAdapterFromParams")["id"]}))
    assert validate_ui(new) == []
    assert any("carries the pack's IPADAPTER_PARAMS" in n.text and n.node == "subgraph 'part'"
               for n in report.of("not supported")), report.text()
    assert any("brings no Regional Conditioning" in n.text for n in report.of("problem"))


def test_a_pipeline_into_a_subgraph_with_a_kept_node_is_left_as_it_was_and_named(host):
    flat = pack_workflow("IPAdapterAdvanced")
    adv = _node(flat, "IPAdapterAdvanced")
    adv["widgets_values"] = adv["widgets_values"][:2]  # a layout no version had: kept unchanged
    new, report = convert(into_subgraph(flat, {adv["id"]}))
    assert validate_ui(new) == []
    sub = new["definitions"]["subgraphs"][0]
    assert [s["type"] for s in sub["inputs"]] == [s["type"] for s in into_subgraph(flat, {adv["id"]})[
        "definitions"]["subgraphs"][0]["inputs"]]  # the boundary unchanged
    assert any("is not followed across the boundary" in n.text for n in report.of("not supported")), report.text()
    assert "IPAdapterAdvanced" in [n["type"] for n in sub["nodes"]]
    assert "IPAdapterModelLoader" in [n["type"] for n in new["nodes"]]  # kept with it: joined by the pack's types


def test_a_boundary_slot_of_any_shape_is_read_safely(host):
    """A subgraph slot whose type is a list or an object, an instance with fewer slots than its definition:
    converted without a traceback; the instance's pipeline is then not followed, and says so."""
    flat = pack_workflow("IPAdapter")
    split = into_subgraph(flat, {_node(flat, "IPAdapter")["id"]})
    split["definitions"]["subgraphs"][0]["inputs"][0]["type"] = ["MODEL"]
    new, report = convert(split)
    assert validate_ui(new) == []
    split = into_subgraph(flat, {_node(flat, "IPAdapter")["id"]})
    inst = next(n for n in split["nodes"] if n["type"] == "c0ffee00-part")
    inst["inputs"] = inst["inputs"][:-1]
    new, report = convert(split)
    assert validate_ui(new) == []
    assert any("whose slots differ from its subgraph's" in n.text for n in report.of("not supported")), report.text()


def _second_instance(split, loader_type):
    """A second instance of the split workflow's subgraph, fed as the first but by a copy of its loader_type node."""
    by_id = {n["id"]: n for n in split["nodes"]}
    first = next(n for n in split["nodes"] if n["type"] == "c0ffee00-part")
    loader = _node(split, loader_type)
    other = {**copy.deepcopy(loader), "id": split["last_node_id"] + 1, "pos": [0, 2000]}
    second = {**copy.deepcopy(first), "id": split["last_node_id"] + 2, "pos": [400, 2000]}
    for n in (other, second):
        for i in n["inputs"]:
            i["link"] = None
        for o in n["outputs"]:
            o["links"] = []
        split["nodes"].append(n)
        by_id[n["id"]] = n
    split["last_node_id"] += 2
    for l in [l for l in split["links"] if l[3] == first["id"]]:
        _link(split, by_id, other["id"] if l[1] == loader["id"] else l[1], l[2], second["id"], l[4], l[5])
    for l in [l for l in split["links"] if l[3] == loader["id"]]:
        _link(split, by_id, l[1], l[2], other["id"], l[4], l[5])
    return split, first, second, loader, other


def test_loader_settings_that_differ_between_instances_are_named(host):
    """Two instances of a subgraph holding a FaceID node, fed by Model Loaders whose files call for different
    FaceID Plus versions: the FaceID encode inside takes the first one's, and a line names the other."""
    flat = pack_workflow("IPAdapterFaceID")
    split, first, second, loader, other = _second_instance(
        into_subgraph(flat, {_node(flat, "IPAdapterFaceID")["id"]}), "IPAdapterModelLoader")
    loader["widgets_values"], other["widgets_values"] = ["faceid-plusv2_sd15.bin"], ["faceid-plus_sd15.bin"]
    new, report = convert(split)
    assert validate_ui(new) == [] and not report.of("problem"), report.text()
    face = next(n for n in new["definitions"]["subgraphs"][0]["nodes"] if n["type"] == "IPAEncodeFace")
    assert dict(zip(migrate.our_widgets("IPAEncodeFace"), face["widgets_values"]))["plus_version"] == "v2 (shortcut)"
    assert any(n.node == f"{other['id']} IPAdapterModelLoader" and "differ from those" in n.text
               for n in report.of("not supported")), report.text()


def test_each_instance_of_a_subgraph_gets_its_pipeline(host):
    """Two instances of one subgraph, each fed by its own Unified Loader: each instance's adapter and CLIP vision
    inputs come from the loader that fed it, and both have the definition's slots."""
    flat = pack_workflow("IPAdapter")
    split, first, second, loader, other = _second_instance(into_subgraph(flat, {_node(flat, "IPAdapter")["id"]}),
                                                           "IPAdapterUnifiedLoader")
    new, report = convert(split)
    assert validate_ui(new) == [] and not report.of("problem"), report.text()
    nodes = {n["id"]: n for n in new["nodes"]}
    feeders = []
    for inst in (first, second):
        into = {l[4]: nodes[l[1]] for l in new["links"] if l[3] == inst["id"]}
        slots = {i["name"]: k for k, i in enumerate(nodes[inst["id"]]["inputs"])}
        assert into[slots["ipadapter"]]["type"] == "IPAUnifiedLoader"
        assert into[slots["ipadapter_clip_vision"]]["id"] == into[slots["ipadapter"]]["id"]
        feeders.append(into[slots["ipadapter"]]["id"])
    assert feeders[0] != feeders[1]  # each its own converted loader


def test_a_pipeline_through_nested_subgraphs_converts_across_both_boundaries(host):
    """The Unified Loader in the main graph, IPAdapter in a subgraph inside another subgraph: the pipeline passes
    the outer subgraph's input straight into the inner one's, and arrives as Load IPAdapter's adapter and CLIP
    vision at the nodes inside."""
    flat = pack_workflow("IPAdapter")
    inner = into_subgraph(flat, {_node(flat, "IPAdapter")["id"]}, name="inner", sub_id="inner-id")
    inst = next(n for n in inner["nodes"] if n["type"] == "inner-id")
    nested = into_subgraph(inner, {inst["id"]}, name="outer", sub_id="outer-id")
    new, report = convert(nested)
    assert validate_ui(new) == [] and not report.of("problem") and not report.of("not supported"), report.text()
    subs = {s["id"]: s for s in new["definitions"]["subgraphs"]}
    every = new["nodes"] + [n for s in subs.values() for n in s["nodes"]]
    assert not [n["type"] for n in every if n["type"] in table.PACK]

    def feeding(links, nodes, dst_type, slot_name):
        """(source node, slot type) feeding input slot_name of the one dst_type node of a graph."""
        node = next(n for n in nodes if n["type"] == dst_type)
        k = next(i for i, x in enumerate(node["inputs"]) if x["name"] == slot_name)
        (l,) = [l for l in links if l[3] == node["id"] and l[4] == k]
        return l[1], l[2]

    rows = lambda s: [[l["id"], l["origin_id"], l["origin_slot"], l["target_id"], l["target_slot"], l["type"]]  # noqa: E731
                      for l in s["links"]]
    loader = _node(new, "IPAUnifiedLoader")["id"]
    for name, loader_slot in (("ipadapter", 1), ("ipadapter_clip_vision", 2)):
        assert feeding(new["links"], new["nodes"], "outer-id", name) == (loader, loader_slot)
        src, k = feeding(rows(subs["outer-id"]), subs["outer-id"]["nodes"], "inner-id", name)
        assert src == -10 and subs["outer-id"]["inputs"][k]["name"] == name
    apply = next(n for n in subs["inner-id"]["nodes"] if n["type"] == "IPAApplyAdapter")
    encode = next(n for n in subs["inner-id"]["nodes"] if n["type"] == "IPAEncodeImagePrompt")
    ins = subs["inner-id"]["inputs"]
    for node, name, expected in ((apply, "ipadapter", "ipadapter"), (encode, "ipadapter", "ipadapter"),
                                 (encode, "clip_vision", "ipadapter_clip_vision")):
        k = next(i for i, x in enumerate(node["inputs"]) if x["name"] == name)
        (l,) = [l for l in rows(subs["inner-id"]) if l[3] == node["id"] and l[4] == k]
        assert l[1] == -10 and ins[l[2]]["name"] == expected
