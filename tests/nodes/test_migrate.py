"""The workflow converter (nodes/migrate.py) on self-made workflows of the widely used pack's nodes.

Its table against the pack's real INPUT_TYPES, and converted workflows in the real host: tests/integration
(run_migrate.py). Here: every node converts in both formats, options are mapped or reported, links and other
nodes survive, new nodes overlap nothing, bad input is named, and the tool needs neither torch nor ComfyUI.
"""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pack_workflows import api_of, pack_workflow
from nodes import migrate, migrate_table as table
from nodes.migrate import NotAWorkflow, convert, node_rect, validate_api, validate_ui

ROOT = Path(__file__).resolve().parents[2]
SUPPORTED = [t for t, e in table.PACK.items() if migrate.entry_status(e) is None]
PENDING_NODES = [t for t in table.PACK if t not in SUPPORTED]


def _types(wf):
    return [n["type"] for n in wf["nodes"]]


def _node(wf, node_type):
    return next(n for n in wf["nodes"] if n["type"] == node_type)


def _values(wf, node_type):
    node = _node(wf, node_type)
    return dict(zip(migrate.our_widgets(node_type), node["widgets_values"]))


def _overlaps(wf, new_ids):
    rects = {str(n["id"]): node_rect(n) for n in wf["nodes"]}
    return [(a, b) for a in new_ids for b in rects if a != b and migrate._overlap(rects[a], rects[b])]


# ------------------------------------------------------------------------------------------ the tables

def test_our_table_matches_our_nodes(host):
    from nodes.registry import NODE_CLASS_MAPPINGS

    for node_type, spec in table.OURS.items():
        if node_type == "CLIPVisionLoader":
            continue  # the host's node: checked in the real host (run_migrate.py table)
        cls = NODE_CLASS_MAPPINGS[node_type]
        types = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            real = [f"{n}:{'COMBO' if isinstance(s[0], (list, tuple)) else s[0]}" for n, s in types.get(section, {}).items()]
            assert real == list(spec[section]), (node_type, section)
            for n, s in types.get(section, {}).items():
                if n in spec["defaults"] and len(s) > 1 and "default" in s[1]:
                    assert spec["defaults"][n] == s[1]["default"], (node_type, n)
        assert list(cls.RETURN_TYPES) == list(spec["outputs"])
        assert set(spec["defaults"]) == set(migrate.our_widgets(node_type)) - {"adapter_name"} | (
            {"adapter_name"} if node_type == "IPALoadAdapter" else set())


def test_every_pack_input_has_a_rule_and_every_target_exists_or_is_pending():
    for node_type, entry in table.PACK.items():
        if "nodes" not in entry:
            assert entry.get("counterpart") in table.PENDING, node_type
            continue
        for name, _ in migrate.pack_inputs(entry):
            assert migrate._rules(entry, name), (node_type, name)
            for rule in migrate._rules(entry, name):
                targets = rule.get("to", [])
                for target in targets if isinstance(targets, list) else [targets]:
                    if not migrate._target_exists(entry, target):
                        assert migrate._our_name(entry, target) in table.PENDING, (node_type, target)
        for local, node_type_ours in entry["nodes"].items():
            assert node_type_ours in table.OURS or node_type_ours in table.PENDING
    # a pending name that landed in OURS must leave PENDING (it would still be reported as missing)
    landed = [p for p in table.PENDING if p in table.OURS or
              ("." in p and p.split(".")[0] in table.OURS and p.split(".", 1)[1] in migrate._names(
                  table.OURS[p.split(".")[0]]["required"] + table.OURS[p.split(".")[0]]["optional"]))]
    assert landed == []


# ------------------------------------------------------------------------------------------ every node

@pytest.mark.parametrize("node_type", list(table.PACK))
@pytest.mark.parametrize("legacy", [False, True])
def test_every_pack_node_converts_in_both_formats(node_type, legacy):
    wf = pack_workflow(node_type)
    before = copy.deepcopy(wf)
    new, report = convert(wf, legacy=legacy)
    assert wf == before  # the input is not modified
    assert validate_ui(new) == []
    labels = " ".join(n.node for n in report.notes)
    assert f" {node_type}" in labels  # the node is named in the report
    if node_type in SUPPORTED:
        assert node_type not in _types(new)
        assert not report.of("problem"), report.text()
        for t in ("IPAEncodeImagePrompt", "IPAApplyAdapter"):
            if t in _types(new):
                assert _values(new, t)["legacy"] is legacy
    else:
        assert node_type in _types(new)
        assert any(n.kind == "not supported yet" and node_type in n.node for n in report.notes), report.text()
    api, api_report = convert(api_of(wf), legacy=legacy)
    assert validate_api(api) == []
    assert sorted(e["class_type"] for e in api.values()) == sorted(
        e["class_type"] for e in api_of(new).values())


def test_advanced_becomes_encode_and_apply_with_each_option_mapped():
    wf = pack_workflow("IPAdapterAdvanced", {"weight": 0.7, "start_at": 0.1, "end_at": 0.9, "combine_embeds": "average"})
    new, report = convert(wf)
    apply, encode = _values(new, "IPAApplyAdapter"), _values(new, "IPAEncodeImagePrompt")
    assert (apply["weight"], apply["start_at"], apply["end_at"]) == (0.7, 0.1, 0.9)
    assert encode["combine"] == "average" and apply["legacy"] is False
    # rewired: checkpoint MODEL -> Apply -> KSampler; Load IPAdapter -> Encode and Apply; Encode -> Apply
    links = {(l[1], l[3], l[5]) for l in new["links"]}
    ids = {n["type"]: n["id"] for n in new["nodes"]}
    assert (ids["CheckpointLoaderSimple"], ids["IPAApplyAdapter"], "MODEL") in links
    assert (ids["IPAApplyAdapter"], ids["KSampler"], "MODEL") in links
    assert (ids["IPAEncodeImagePrompt"], ids["IPAApplyAdapter"], "IPA_EMBEDS") in links
    assert (ids["IPALoadAdapter"], ids["IPAApplyAdapter"], "IPA_ADAPTER") in links
    assert (ids["CLIPVisionLoader"], ids["IPAEncodeImagePrompt"], "CLIP_VISION") in links
    text = report.text()
    for option in ("weight=0.7", "start_at=0.1", "end_at=0.9", "combine_embeds='average'", "weight_type='linear'",
                   "embeds_scaling='V only'"):
        assert option in text, option


def test_unified_loader_becomes_our_preset_loader():
    new, report = convert(pack_workflow("IPAdapter", {"weight": 0.5}))
    ids = {n["type"]: n["id"] for n in new["nodes"]}
    assert "IPAdapterUnifiedLoader" not in _types(new)
    assert _values(new, "IPAUnifiedLoader")["preset"] == "STANDARD (medium strength)"
    links = {(l[1], l[3], l[5]) for l in new["links"]}
    # the model still reaches Apply from where it came; the preset loader gets it to pick the SD1.5 / SDXL file
    assert (ids["CheckpointLoaderSimple"], ids["IPAUnifiedLoader"], "MODEL") in links
    assert (ids["CheckpointLoaderSimple"], ids["IPAApplyAdapter"], "MODEL") in links
    assert (ids["IPAUnifiedLoader"], ids["IPAEncodeImagePrompt"], "CLIP_VISION") in links
    assert (ids["IPAUnifiedLoader"], ids["IPAApplyAdapter"], "IPA_ADAPTER") in links
    _, report = convert(pack_workflow("IPAdapterUnifiedLoaderCommunity"))
    assert any(n.kind == "approximated" and "SDXL" in n.text for n in report.notes)  # Composition: by file name


@pytest.mark.parametrize("value", ["ease in", "strong style transfer", "composition precise"])
def test_weight_types_and_scalings_map_by_name(value):
    new, report = convert(pack_workflow("IPAdapterAdvanced", {"weight_type": value, "embeds_scaling": "K+V w/ C penalty"}))
    apply = _values(new, "IPAApplyAdapter")
    assert (apply["weight_type"], apply["embeds_scaling"]) == (value, "K+V w/ C penalty")
    assert not report.of("not supported yet") and not report.of("not supported")


def test_a_missing_input_of_ours_is_reported_as_not_supported_yet(monkeypatch):
    """The table's switch: an input absent from OURS is reported (and our default used), never dropped."""
    apply = copy.deepcopy(table.OURS["IPAApplyAdapter"])
    apply["optional"] = tuple(s for s in apply["optional"] if not s.startswith("weight_type:"))
    del apply["defaults"]["weight_type"]
    monkeypatch.setitem(table.OURS, "IPAApplyAdapter", apply)
    new, report = convert(pack_workflow("IPAdapterAdvanced", {"weight_type": "ease in"}))
    notes = [n for n in report.notes if n.text.startswith("weight_type")]
    assert [n.kind for n in notes] == ["not supported yet"] and "IPAApplyAdapter.weight_type" in notes[0].text
    _, report = convert(pack_workflow("IPAdapterAdvanced", {"weight_type": "linear"}))
    assert [n.kind for n in report.notes if n.text.startswith("weight_type")] == ["mapped"]  # our default does it


def test_nodes_without_counterpart_are_kept_with_what_feeds_them_through_the_packs_types():
    new, report = convert(pack_workflow("IPAdapterFromParams", connect_optional=True))
    # regional params have no counterpart: kept, and the loader / region nodes that feed it the pack's types stay
    assert {"IPAdapterFromParams", "IPAdapterModelLoader", "IPAdapterRegionalConditioning"} <= set(_types(new))
    assert validate_ui(new) == []
    assert any("joined by the pack's own types" in n.text for n in report.of("kept"))
    assert any("Image Prompt Region" in n.text for n in report.of("not supported yet"))


def test_embeds_chain_keeps_uncond_with_the_embeds():
    wf = pack_workflow("IPAdapterEmbeds")
    enc = _node(wf, "IPAdapterEncoder")["id"]
    emb = _node(wf, "IPAdapterEmbeds")
    b_link = max(l[0] for l in wf["links"]) + 1
    slot = next(i for i, inp in enumerate(emb["inputs"]) if inp["name"] == "neg_embed")
    wf["links"].append([b_link, enc, 1, emb["id"], slot, "EMBEDS"])
    emb["inputs"][slot]["link"] = b_link
    _node(wf, "IPAdapterEncoder")["outputs"][1]["links"].append(b_link)
    wf["last_link_id"] = b_link
    new, report = convert(wf)
    assert any("carry these unconditional tokens" in n.text for n in report.of("mapped"))
    assert "IPAEncodeImagePrompt" in _types(new) and validate_ui(new) == []


def test_prep_image_passes_through_and_sets_crop_on_the_encode_it_feeds():
    wf = pack_workflow("IPAdapterAdvanced")
    prep = {"id": 99, "type": "PrepImageForClipVision", "pos": [0, 2000], "size": [300, 150], "flags": {}, "order": 0,
            "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": None}],
            "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [], "slot_index": 0}], "properties": {},
            "widgets_values": ["LANCZOS", "pad", 0.0]}
    wf["nodes"].append(prep)
    adv = _node(wf, "IPAdapterAdvanced")
    slot = next(i for i, inp in enumerate(adv["inputs"]) if inp["name"] == "image")
    old = adv["inputs"][slot]["link"]
    link = next(l for l in wf["links"] if l[0] == old)
    link[3], link[4] = 99, 0  # LoadImage -> Prep
    prep["inputs"][0]["link"] = old
    wf["links"].append([100, 99, 0, adv["id"], slot, "IMAGE"])
    adv["inputs"][slot]["link"] = 100
    prep["outputs"][0]["links"] = [100]
    wf["last_node_id"], wf["last_link_id"] = 99, 100
    new, report = convert(wf)
    assert "PrepImageForClipVision" not in _types(new)
    assert _values(new, "IPAEncodeImagePrompt")["crop"] == "pad"
    assert any("LANCZOS" in n.text for n in report.of("not supported"))
    ids = {n["type"]: n["id"] for n in new["nodes"]}
    assert any(l[1] == ids["LoadImage"] and l[3] == ids["IPAEncodeImagePrompt"] for l in new["links"])


# ------------------------------------------------------------------------------------------ properties

_FOREIGN = st.lists(st.tuples(st.sampled_from(["PreviewImage", "Note", "SomeOtherPack.Node", "KSamplerAdvanced"]),
                              st.integers(0, 3000), st.integers(-500, 3000)), max_size=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(node_type=st.sampled_from(list(table.PACK)), extra=_FOREIGN, data=st.data())
def test_round_trip_properties(node_type, extra, data):
    wf = pack_workflow(node_type)
    # add foreign nodes (some overlapping the pack's nodes on purpose) and links from the graph's image output
    next_id = wf["last_node_id"]
    foreign = []
    for t, x, y in extra:
        next_id += 1
        wf["nodes"].append({"id": next_id, "type": t, "pos": [x, y], "size": [200, 80], "flags": {}, "order": 0,
                            "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": None}],
                            "outputs": [], "properties": {}, "widgets_values": []})
        foreign.append(next_id)
        if data.draw(st.booleans()):
            src = _node(wf, "LoadImage")
            lid = wf["last_link_id"] + 1
            wf["links"].append([lid, src["id"], 0, next_id, 0, "IMAGE"])
            wf["nodes"][-1]["inputs"][0]["link"] = lid
            src["outputs"][0]["links"].append(lid)
            wf["last_link_id"] = lid
    wf["last_node_id"] = next_id
    new, report = convert(wf, legacy=data.draw(st.booleans()))
    assert validate_ui(new) == []
    pack_ids = {n["id"] for n in wf["nodes"] if n["type"] in table.PACK}
    old_nodes = {n["id"]: n for n in wf["nodes"]}
    new_nodes = {n["id"]: n for n in new["nodes"]}
    # non-pack nodes unchanged (their link bookkeeping aside), groups kept
    strip = lambda n: {k: v for k, v in n.items() if k not in ("inputs", "outputs")}  # noqa: E731
    for nid, n in old_nodes.items():
        if nid not in pack_ids:
            assert strip(new_nodes[nid]) == strip(n)
    assert new["groups"] == wf["groups"]
    # links between non-pack nodes unchanged, ids included
    keep = lambda ls: {tuple(l) for l in ls if l[1] not in pack_ids and l[3] not in pack_ids}  # noqa: E731
    assert keep(wf["links"]) <= {tuple(l) for l in new["links"]}
    # every input of a non-pack node that was connected still is
    for nid, n in old_nodes.items():
        if nid in pack_ids:
            continue
        was = [i for i, inp in enumerate(n.get("inputs") or []) if inp.get("link") is not None]
        now = [i for i, inp in enumerate(new_nodes[nid].get("inputs") or []) if inp.get("link") is not None]
        assert was == now or report.of("problem")
    # new nodes overlap nothing
    created = [str(i) for i in new_nodes if i not in old_nodes]
    assert _overlaps(new, created) == []


# ------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("bad", [[], "text", {"a": 1}, {"nodes": "x"}, {"1": {"inputs": {}}}, {"nodes": [{"id": 1}], "links": []}])
def test_not_a_workflow(bad):
    with pytest.raises(NotAWorkflow, match="workflow|'nodes'"):
        convert(bad)


def test_older_pack_version_renamed_inputs_and_unknown_widget_counts_are_named():
    wf = pack_workflow("IPAdapterAdvanced")
    adv = _node(wf, "IPAdapterAdvanced")
    adv["widgets_values"] = adv["widgets_values"][:-1]  # an older version without embeds_scaling
    adv["inputs"][2]["name"] = "images"  # renamed input
    old = {"id": 500, "type": "IPAdapterApply", "pos": [0, 3000], "size": [300, 200], "flags": {}, "order": 0,
           "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": [1.0, 0.0, "original"]}
    wf["nodes"].append(old)
    wf["last_node_id"] = 500
    new, report = convert(wf)
    assert validate_ui(new) == []
    problems = " ".join(n.text for n in report.of("problem") if "IPAdapterAdvanced" in n.node)
    assert "5 widget values" in problems and "6 widgets" in problems and "'images'" in problems
    assert any("IPAdapterApply" in n.node and "older or newer version" in n.text for n in report.of("kept"))
    assert "IPAdapterAdvanced" in _types(new)  # kept as it was, never half-converted


def test_links_to_missing_nodes_are_named_and_dropped():
    wf = pack_workflow("IPAdapterAdvanced")
    wf["links"].append([999, 777, 0, _node(wf, "IPAdapterAdvanced")["id"], 4, "MASK"])
    wf["last_link_id"] = 999
    new, report = convert(wf)
    assert validate_ui(new) == []
    assert any("link 999" in n.text and "node 777" in n.text for n in report.of("problem"))
    api = api_of(pack_workflow("IPAdapterAdvanced"))
    adv = next(k for k, v in api.items() if v["class_type"] == "IPAdapterAdvanced")
    api[adv]["inputs"]["attn_mask"] = ["12345", 0]
    api[adv]["inputs"]["noise"] = 0.3  # an input of an older version
    new_api, rep = convert(api)
    assert validate_api(new_api) == []
    text = rep.text()
    assert "12345" in text and "'noise'" in text


# ------------------------------------------------------------------------------------------ the command

def test_command_needs_neither_torch_nor_comfyui(tmp_path):
    src = tmp_path / "in.json"
    src.write_text(json.dumps(pack_workflow("IPAdapterAdvanced")))
    code = ("import sys, runpy; sys.argv = ['x', %r, '-o', %r, '--legacy']\n"
            "try:\n    runpy.run_module('nodes.migrate', run_name='__main__')\nexcept SystemExit as e:\n"
            "    assert e.code == 0, e.code\n"
            "assert 'torch' not in sys.modules and 'comfy' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:3]\n"
            % (str(src), str(tmp_path / "out.json")))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "IPAdapterAdvanced" in proc.stdout and "converted" in proc.stdout
    out = json.loads((tmp_path / "out.json").read_text())
    assert validate_ui(out) == [] and _values(out, "IPAApplyAdapter")["legacy"] is True


def test_command_exit_status_when_nothing_can_be_written(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2, 3]")
    proc = subprocess.run([sys.executable, "-m", "nodes.migrate", str(bad), "-o", str(tmp_path / "o.json")],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "not a ComfyUI workflow" in proc.stderr
    assert not (tmp_path / "o.json").exists()
    proc = subprocess.run([sys.executable, "-m", "nodes.migrate", str(tmp_path / "missing.json")],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "cannot read" in proc.stderr


def test_links_in_object_form_and_subgraphs():
    wf = pack_workflow("IPAdapterAdvanced")
    keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    wf["links"] = [dict(zip(keys, l)) for l in wf["links"]]
    wf["definitions"] = {"subgraphs": [{"id": "s1", "name": "inner", "nodes": [{"id": 1, "type": "IPAdapterAdvanced"}]}]}
    new, report = convert(wf)
    assert validate_ui(new) == [] and "IPAApplyAdapter" in _types(new)
    assert any("subgraph 'inner'" in n.text for n in report.of("problem"))
