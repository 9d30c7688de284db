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

from pack_workflows import CORE, _Graph, api_of, pack_workflow, without_counterpart
from workflow_api import CORE_SCHEMAS, ui_to_api
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
        if node_type in table.HOST_NODES:
            continue  # the host's nodes: checked in the real host (run_migrate.py table)
        cls = NODE_CLASS_MAPPINGS[node_type]
        types = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            real = [f"{n}:{'COMBO' if isinstance(s[0], (list, tuple)) else s[0]}" for n, s in types.get(section, {}).items()]
            assert real == list(spec[section]), (node_type, section)
            for n, s in types.get(section, {}).items():
                if n in spec["defaults"] and len(s) > 1 and "default" in s[1]:
                    assert spec["defaults"][n] == s[1]["default"], (node_type, n)
                key, opts = f"{node_type}.{n}", s[1] if len(s) > 1 else {}
                if isinstance(s[0], (list, tuple)) and s[0]:  # a fixed choice list (not a file list)
                    assert tuple(table.CHOICES[key]) == tuple(s[0]), key
                elif s[0] in ("INT", "FLOAT") and "min" in opts and n not in spec.get("links_only", ()) and n != "seed" \
                        and not n.endswith("_override"):
                    assert table.RANGES[key] == (opts["min"], opts["max"]), key
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


def test_the_community_loaders_kolors_preset_loads_the_kolors_files():
    new, report = convert(pack_workflow("IPAdapterUnifiedLoaderCommunity", {"preset": "Kolors"}))
    assert _values(new, "IPALoadAdapter")["adapter_name"] == "ip_adapter_plus_general.bin"
    clips = [n["widgets_values"][0] for n in new["nodes"] if n["type"] == "CLIPVisionLoader"]
    assert "clip-vit-large-patch14-336.bin" in clips  # beside the workflow's own ViT-H loader
    assert not report.of("not supported")


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


def test_nodes_without_counterpart_are_kept_with_what_feeds_them_through_the_packs_types(monkeypatch):
    without_counterpart(monkeypatch, "IPAdapterTiledBatch", "no tiles per batch item here (test)")
    new, report = convert(pack_workflow("IPAdapterTiledBatch", connect_optional=True))
    # no counterpart: kept, and the loader that feeds it the pack's types stays
    assert {"IPAdapterTiledBatch", "IPAdapterModelLoader"} <= set(_types(new))
    assert validate_ui(new) == []
    assert any("joined by the pack's own types" in n.text for n in report.of("kept"))
    assert any("no tiles per batch item here" in n.text for n in report.of("not supported yet"))


def test_tiled_batch_becomes_a_tiled_encode_with_one_reference_per_frame(host):
    """IPAdapter Tiled Batch: Encode Image Prompt (tiles 'tiled', combine 'batch') + Apply IPAdapter, each option
    mapped or named; its tiles and masks outputs have no counterpart (left unconnected, reported)."""
    new, report, api = _both(pack_workflow("IPAdapterTiledBatch", {"weight": 0.6, "weight_type": "ease out",
                                                                    "start_at": 0.2, "embeds_scaling": "K+V",
                                                                    "encode_batch_size": 8}, connect_optional=True))
    encode, apply = _values(new, "IPAEncodeImagePrompt"), _values(new, "IPAApplyAdapter")
    assert "IPAdapterTiledBatch" not in _types(new) and validate_ui(new) == []
    assert (encode["tiles"], encode["combine"]) == ("tiled", "batch")
    assert (apply["weight"], apply["weight_type"], apply["start_at"], apply["embeds_scaling"]) == (0.6, "ease out", 0.2, "K+V")
    assert _api_node(api, "IPAEncodeImagePrompt")["tiles"] == "tiled" and _api_node(api, "IPAEncodeImagePrompt")["combine"] == "batch"
    assert any(n.text.startswith("encode_batch_size (8)") for n in report.of("not needed"))
    mapped = " ".join(n.text for n in report.of("mapped"))
    assert "image_negative (connected) -> IPAEncodeImagePrompt.negative_image" in mapped
    assert "attn_mask (connected) -> IPAApplyAdapter.attn_mask" in mapped
    sharpened, _ = convert(pack_workflow("IPAdapterTiledBatch", {"sharpening": 0.3}))
    assert _values(sharpened, "IPAEncodeImagePrompt")["tile_sharpening"] == 0.3


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


# ------------------------------------------------------------------------------------------ against our real nodes

# pack nodes whose counterparts landed after the converter was written (issue 14 item 3)
NEWLY_MAPPED = ("IPAdapterStyleComposition", "IPAdapterStyleCompositionBatch", "IPAdapterPreciseStyleTransfer",
                "IPAdapterPreciseStyleTransferBatch", "IPAdapterPreciseComposition", "IPAdapterPreciseCompositionBatch",
                "IPAdapterFaceID", "IPAAdapterFaceIDBatch", "IPAdapterUnifiedLoaderFaceID", "IPAdapterInsightFaceLoader",
                "IPAdapterUnifiedLoader", "IPAdapterEncoder", "IPAdapterCombineEmbeds", "IPAdapterSaveEmbeds",
                "IPAdapterLoadEmbeds", "IPAdapterNoise", "IPAdapterTiled",
                "IPAdapterClipVisionEnhancer", "IPAdapterClipVisionEnhancerBatch", "IPAdapterBatch",
                "IPAdapterEmbedsBatch", "IPAdapterWeights", "IPAdapterWeightsFromStrategy", "IPAdapterMS",
                "IPAdapterFaceIDKolors", "IPAdapterTiledBatch", "IPAdapterCombineWeights",
                "IPAdapterPromptScheduleFromWeightsStrategy")
STILL_MISSING = set()


def test_what_converts_and_what_does_not():
    assert set(NEWLY_MAPPED) <= set(SUPPORTED)
    assert set(PENDING_NODES) == STILL_MISSING
    for node_type in STILL_MISSING:  # each with its reason
        status = migrate.entry_status(table.PACK[node_type])
        assert status.startswith("not supported yet: ") and "needs" not in status, (node_type, status)


def _schema(node_type):
    from nodes.registry import NODE_CLASS_MAPPINGS

    if node_type in NODE_CLASS_MAPPINGS:
        return NODE_CLASS_MAPPINGS[node_type].INPUT_TYPES()
    return CORE_SCHEMAS[node_type]


def _check_inputs(where, node_type, inputs, out_type):
    """inputs of one of our nodes (API form) against its real INPUT_TYPES; out_type(ref) -> the linked output's type."""
    schema = _schema(node_type)
    allowed = {**schema.get("required", {}), **schema.get("optional", {})}
    assert set(inputs) <= set(allowed), (where, node_type, inputs)
    assert not set(schema.get("required", {})) - set(inputs), (where, node_type, "misses required inputs")
    for name, value in inputs.items():
        spec = allowed[name]
        if isinstance(value, list):
            assert out_type(value) == spec[0], (where, node_type, name)
        elif isinstance(spec[0], (list, tuple)):
            assert not spec[0] or value in spec[0], (where, node_type, name, value)  # file lists are empty here
        elif spec[0] in ("FLOAT", "INT"):
            assert not spec[1].get("forceInput"), (where, node_type, name)
            assert isinstance(value, (int, float)) and spec[1].get("min", -1e18) <= value <= spec[1].get("max", 1e18), (
                where, node_type, name, value)
        elif spec[0] == "STRING":
            assert isinstance(value, str), (where, node_type, name, value)
        elif spec[0] == "BOOLEAN":
            assert isinstance(value, bool), (where, node_type, name, value)


def fits_our_nodes(new_ui, new_api):
    """Every node of ours (and the host's CLIPVisionLoader) in both converted formats fits its real schema."""
    from nodes.registry import NODE_CLASS_MAPPINGS

    ours = set(NODE_CLASS_MAPPINGS) | {"CLIPVisionLoader"}
    by_id = {str(n["id"]): n for n in new_ui["nodes"]}
    sub = {**new_ui, "nodes": [n for n in new_ui["nodes"] if n["type"] in ours]}
    for nid, entry in ui_to_api(sub, _schema).items():
        _check_inputs(f"ui node {nid}", entry["class_type"], entry["inputs"],
                      lambda ref: by_id[str(ref[0])]["outputs"][ref[1]]["type"])

    def api_type(ref):
        t = new_api[str(ref[0])]["class_type"]
        outs = table.OURS[t]["outputs"] if t in table.OURS else CORE[t][1] if t in CORE else table.PACK[t]["outputs"]
        return outs[ref[1]]

    for nid, entry in new_api.items():
        if entry["class_type"] in ours:
            _check_inputs(f"api node {nid}", entry["class_type"], entry["inputs"], api_type)
    return True


@pytest.mark.parametrize("node_type", SUPPORTED)
@pytest.mark.parametrize("optional", [False, True])
def test_converted_nodes_fit_our_real_inputs_in_both_formats(host, node_type, optional):
    wf = pack_workflow(node_type, connect_optional=optional)
    new, report = convert(wf)
    new_api, api_report = convert(api_of(wf))
    assert fits_our_nodes(new, new_api)
    assert not report.of("problem") and not api_report.of("problem"), report.text()
    for t in ("IPAApplyAdapter", "IPAEncodeImagePrompt", "IPAEncodeFace"):  # the same values in both formats
        ui_values = sorted(json.dumps(v, sort_keys=True) for e in api_of(new).values() if e["class_type"] == t
                           for v in [{k: x for k, x in e["inputs"].items() if not isinstance(x, list)}])
        api_values = sorted(json.dumps(v, sort_keys=True) for e in new_api.values() if e["class_type"] == t
                            for v in [{k: x for k, x in e["inputs"].items() if not isinstance(x, list)}])
        assert ui_values == api_values, t


def _both(wf):
    """Convert in UI and API format; the one node of `node_type` in each, by its values."""
    new, report = convert(wf)
    new_api, api_report = convert(api_of(wf))
    assert not report.of("problem") and not api_report.of("problem"), report.text() + api_report.text()
    return new, report, new_api


def _api_node(api, node_type):
    (entry,) = [e for e in api.values() if e["class_type"] == node_type]
    return entry["inputs"]


def test_style_and_composition(host):
    new, report, api = _both(pack_workflow("IPAdapterStyleComposition", {
        "weight_style": 0.8, "weight_composition": 0.6, "expand_style": True, "combine_embeds": "average"}))
    apply = _values(new, "IPAApplyAdapter")
    assert (apply["weight_type"], apply["weight"], apply["weight_composition"], apply["expand_style"]) == (
        "style and composition", 0.8, 0.6, True)
    ids = {n["id"] for n in new["nodes"] if n["type"] == "IPAEncodeImagePrompt"}
    apply_node = _node(new, "IPAApplyAdapter")
    slot = next(i for i, inp in enumerate(apply_node["inputs"]) if inp["name"] == "composition_embeds")
    link = next(l for l in new["links"] if l[0] == apply_node["inputs"][slot]["link"])
    assert link[1] in ids and link[5] == "IPA_EMBEDS"
    assert [n["widgets_values"][1] for n in new["nodes"] if n["type"] == "IPAEncodeImagePrompt"] == ["average"] * 2
    a = _api_node(api, "IPAApplyAdapter")
    assert (a["weight_type"], a["weight_composition"], a["expand_style"]) == ("style and composition", 0.6, True)
    assert api[a["composition_embeds"][0]]["class_type"] == "IPAEncodeImagePrompt"
    _, _, api = _both(pack_workflow("IPAdapterStyleCompositionBatch"))
    assert {e["inputs"]["combine"] for e in api.values() if e["class_type"] == "IPAEncodeImagePrompt"} == {"batch"}


@pytest.mark.parametrize("node_type, weight_type, boost", [
    ("IPAdapterPreciseStyleTransfer", "style transfer precise", "style_boost"),
    ("IPAdapterPreciseComposition", "composition precise", "composition_boost")])
def test_precise_style_and_composition(host, node_type, weight_type, boost):
    new, _, api = _both(pack_workflow(node_type, {boost: 2.5}))
    for values in (_values(new, "IPAApplyAdapter"), _api_node(api, "IPAApplyAdapter")):
        assert (values["weight_type"], values[boost]) == (weight_type, 2.5)
    _, _, api = _both(pack_workflow(node_type + "Batch", {boost: 2.5}))
    assert _api_node(api, "IPAEncodeImagePrompt")["combine"] == "batch"


def _faceid_with_unified_loader(preset, lora_strength, provider, batch=False):
    g = _Graph()
    uni = g.b.node("IPAdapterUnifiedLoaderFaceID", {"preset": preset, "lora_strength": lora_strength, "provider": provider})
    g.b.link(g.ids["CheckpointLoaderSimple"], 0, uni, "model")
    face = g.add("IPAAdapterFaceIDBatch" if batch else "IPAdapterFaceID", {"weight_faceidv2": 1.5}, skip=("ipadapter", "model"))
    g.b.link(uni, 1, face, "ipadapter")
    g.b.link(uni, 0, face, "model")
    g.b.link(face, 0, g.ids["KSampler"], "model")
    return g.b.wf


def test_faceid_with_the_unified_faceid_loader(host):
    wf = _faceid_with_unified_loader("FACEID PLUS - SD1.5 only", 0.6, "CUDA")
    new, report, api = _both(wf)
    assert fits_our_nodes(new, api)
    for face, apply, load in ((_values(new, "IPAEncodeFace"), _values(new, "IPAApplyAdapter"), _values(new, "IPAUnifiedLoader")),
                              (_api_node(api, "IPAEncodeFace"), _api_node(api, "IPAApplyAdapter"), _api_node(api, "IPAUnifiedLoader"))):
        assert (face["provider"], face["plus_version"]) == ("CUDA", "v1")
        assert (apply["faceid_lora_strength"], apply["weight_faceidv2"]) == (0.6, 1.5)  # the loader's LoRA, here
        assert load["preset"] == "FACEID PLUS - SD1.5 only"  # our preset loader has the pack's FaceID presets
    # the face encoder gets the adapter of the preset loader (its clip_vision input stays wired as in the pack)
    face_in = _api_node(api, "IPAEncodeFace")
    assert api[face_in["ipadapter"][0]]["class_type"] == "IPAUnifiedLoader" and face_in["ipadapter"][1] == 1
    assert api[face_in["clip_vision"][0]]["class_type"] in ("CLIPVisionLoader", "IPAUnifiedLoader")
    assert "IPAdapterUnifiedLoaderFaceID" not in _types(new)
    _, _, api = _both(_faceid_with_unified_loader("FACEID PLUS V2", 1.0, "CPU", batch=True))
    assert (_api_node(api, "IPAEncodeFace")["combine"], _api_node(api, "IPAEncodeFace")["plus_version"]) == ("batch", "v2 (shortcut)")


def test_faceid_with_the_model_loader_applies_no_lora_and_takes_insightface_settings(host):
    wf = pack_workflow("IPAdapterFaceID", connect_optional=True)
    loader = _node(wf, "IPAdapterInsightFaceLoader")
    loader["widgets_values"] = ["CUDA", "antelopev2"]
    new, report, api = _both(wf)
    for face, apply in ((_values(new, "IPAEncodeFace"), _values(new, "IPAApplyAdapter")),
                        (_api_node(api, "IPAEncodeFace"), _api_node(api, "IPAApplyAdapter"))):
        assert (face["provider"], face["insightface_model"]) == ("CUDA", "antelopev2")
        assert apply["faceid_lora_strength"] == 0.0  # the pack applied none here: a LoRA loader node does, kept
    assert any("applied twice" in n.text for n in report.notes)
    assert {"IPAdapterFaceID", "IPAdapterInsightFaceLoader"}.isdisjoint(_types(new))
    assert any("negative image" in n.text for n in report.of("not supported"))  # image_negative is connected
    # the pack tells Plus v2 from v1 by the file name; ours is told on Encode Face
    for name, version in (("ip-adapter-faceid-plusv2_sd15.bin", "v2 (shortcut)"), ("ip-adapter-faceid-plus_sd15.bin", "v1")):
        _node(wf, "IPAdapterModelLoader")["widgets_values"] = [name]
        _, _, api = _both(wf)
        assert _api_node(api, "IPAEncodeFace")["plus_version"] == version


def test_kolors_faceid_becomes_encode_face_and_apply_with_weight_kolors(host):
    wf = pack_workflow("IPAdapterFaceIDKolors", {"weight_kolors": 1.7, "weight_faceidv2": 0.6, "weight": 0.9},
                       connect_optional=True)
    _node(wf, "IPAdapterModelLoader")["widgets_values"] = ["Kolors-IP-Adapter-FaceID-Plus.bin"]
    new, report, api = _both(wf)
    assert fits_our_nodes(new, api)
    for face, apply in ((_values(new, "IPAEncodeFace"), _values(new, "IPAApplyAdapter")),
                        (_api_node(api, "IPAEncodeFace"), _api_node(api, "IPAApplyAdapter"))):
        assert (apply["weight"], apply["weight_faceidv2"], apply["weight_kolors"]) == (0.9, 0.6, 1.7)
        assert apply["faceid_lora_strength"] == 0.0 and face["plus_version"] == "v2 (shortcut)"
    assert "IPAdapterFaceIDKolors" not in _types(new)
    assert not report.of("not supported yet") and any("carry no LoRA" in n.text for n in report.notes)


def test_encoder_weight_and_mask(host):
    wf = pack_workflow("IPAdapterEncoder", {"weight": 0.5}, connect_optional=True)
    new, report, api = _both(wf)
    assert _values(new, "IPAEncodeImagePrompt")["reference_weights"] == "0.5"
    enc = _api_node(api, "IPAEncodeImagePrompt")
    assert enc["reference_weights"] == "0.5" and api[enc["mask"][0]]["class_type"] == "LoadImageMask"


def test_combine_embeds_takes_the_adapter_its_embeds_were_made_with(host):
    wf = pack_workflow("IPAdapterCombineEmbeds", {"method": "subtract"})
    new, report, api = _both(wf)
    comb = _api_node(api, "IPACombineEmbeds")
    enc = _api_node(api, "IPAEncodeImagePrompt")
    assert comb["method"] == "subtract" and comb["ipadapter"] == enc["ipadapter"]
    assert api[comb["embeds_1"][0]]["class_type"] == "IPAEncodeImagePrompt"


@pytest.mark.parametrize("node_type, tiles", [("IPAdapterTiled", "tiled"),
                                              ("IPAdapterClipVisionEnhancer", "enhance"),
                                              ("IPAdapterClipVisionEnhancerBatch", "enhance")])
def test_tiles(host, node_type, tiles):
    widgets = {"enhance_tiles": 3, "enhance_ratio": 0.5} if tiles == "enhance" else {"sharpening": 0.3}
    new, report, api = _both(pack_workflow(node_type, widgets))
    enc = _api_node(api, "IPAEncodeImagePrompt")
    assert enc["tiles"] == tiles and enc["combine"] == ("batch" if node_type.endswith("Batch") else "concat")
    if tiles == "enhance":
        assert (enc["enhance_tiles"], enc["enhance_ratio"]) == (3, 0.5)
    else:
        assert enc["tile_sharpening"] == 0.3 and not report.of("not supported")


def test_frame_weights_feed_the_batch_node_per_frame(host):
    g = _Graph()
    w = g.add("IPAdapterWeights", {"weights": "1.0, 0.2", "timing": "ease_in", "frames": 8, "method": "full batch"})
    batch = g.add("IPAdapterBatch")
    node = g.b.get(batch)
    node["inputs"].append({"name": "weight", "type": "FLOAT", "widget": {"name": "weight"}, "link": None})
    g.b.link(w, 0, batch, "weight")
    g.b.link(batch, 0, g.ids["KSampler"], "model")
    new, report, api = _both(g.b.wf)
    assert fits_our_nodes(new, api)
    apply, frames = _api_node(api, "IPAApplyAdapter"), _api_node(api, "IPAFrameWeights")
    assert api[apply["frame_weights"][0]]["class_type"] == "IPAFrameWeights" and apply["frame_weights"][1] == 0
    assert (frames["weights"], frames["timing"], frames["frames"]) == ("1.0, 0.2", "ease_in", 8)
    assert _api_node(api, "IPAEncodeImagePrompt")["combine"] == "batch"
    _, _, api = _both(pack_workflow("IPAdapterWeightsFromStrategy"))
    s = _api_node(api, "IPAFrameWeightsFromStrategy")["weights_strategy"]
    assert api[s[0]]["class_type"] == "IPAFrameWeights" and s[1] == 5


def _widget_input(g, nid, name, ty):
    """Turn a widget of node nid into an input slot (as the frontend does when a link is dropped on it)."""
    g.b.get(nid)["inputs"].append({"name": name, "type": ty, "widget": {"name": name}, "link": None})


def test_combined_weight_lists_feed_the_batch_node_per_frame(host):
    """Combine Weights -> IPAdapter Combine Frame Weights, its two lists from the Frame Weights nodes the two
    IPAdapter Weights became, its weights into Apply's frame_weights and its count where the count went."""
    g = _Graph()
    fade_in = g.add("IPAdapterWeights", {"weights": "0.0, 1.0", "frames": 4})
    fade_out = g.add("IPAdapterWeights", {"weights": "1.0, 0.0", "frames": 4})
    comb = g.add("IPAdapterCombineWeights", {"weights_1": 0.0, "weights_2": 0.0})
    for name, src in (("weights_1", fade_in), ("weights_2", fade_out)):
        _widget_input(g, comb, name, "FLOAT")
        g.b.link(src, 0, comb, name)
    batch = g.add("IPAdapterBatch")
    _widget_input(g, batch, "weight", "FLOAT")
    g.b.link(comb, 0, batch, "weight")
    g.b.link(batch, 0, g.ids["KSampler"], "model")
    latent = g.ids["EmptyLatentImage"]
    _widget_input(g, latent, "batch_size", "INT")
    g.b.link(comb, 1, latent, "batch_size")
    new, report, api = _both(g.b.wf)
    assert fits_our_nodes(new, api)
    assert "IPAdapterCombineWeights" not in _types(new) and "IPACombineFrameWeights" in _types(new)
    (cid,) = [k for k, e in api.items() if e["class_type"] == "IPACombineFrameWeights"]
    c = api[cid]["inputs"]
    assert [api[c[n][0]]["inputs"]["weights"] for n in ("weights_1", "weights_2")] == ["0.0, 1.0", "1.0, 0.0"]
    assert _api_node(api, "IPAApplyAdapter")["frame_weights"] == [cid, 0]
    assert [e for e in api.values() if e["class_type"] == "EmptyLatentImage"][0]["inputs"]["batch_size"] == [cid, 1]
    assert any("IPAdapterCombineWeights" in n.node and "IPACombineFrameWeights" in n.text for n in report.of("converted"))
    # typed weights (no links) are mapped as values
    _, report, api = _both(pack_workflow("IPAdapterCombineWeights", {"weights_1": 0.25, "weights_2": 0.75}))
    c = _api_node(api, "IPACombineFrameWeights")
    assert (c["weights_1"], c["weights_2"]) == (0.25, 0.75)


def test_the_prompt_schedule_reads_the_strategy_of_the_frame_weights_node(host):
    """Prompt Schedule From Weights Strategy -> IPAdapter Prompt Schedule: its strategy from the Frame Weights node
    that IPAdapter Weights became (output 5), its prompt text as is, its text to the node the pack's fed."""
    g = _Graph()
    w = g.add("IPAdapterWeights", {"frames": 6, "add_starting_frames": 2}, optional=True)
    sched = g.add("IPAdapterPromptScheduleFromWeightsStrategy", {"prompt": "a cat\na dog"}, skip=("weights_strategy",))
    g.b.link(w, 5, sched, "weights_strategy")
    text = g.ids["CLIPTextEncode"]
    _widget_input(g, text, "text", "STRING")
    g.b.link(sched, 0, text, "text")
    new, report, api = _both(g.b.wf)
    assert fits_our_nodes(new, api)
    assert not {"IPAdapterWeights", "IPAdapterPromptScheduleFromWeightsStrategy"} & set(_types(new))
    (sid,) = [k for k, e in api.items() if e["class_type"] == "IPAPromptSchedule"]
    s = api[sid]["inputs"]
    assert s["prompt"] == "a cat\na dog" and api[s["weights_strategy"][0]]["class_type"] == "IPAFrameWeights"
    assert s["weights_strategy"][1] == 5
    assert any(e["class_type"] == "CLIPTextEncode" and e["inputs"].get("text") == [sid, 0] for e in api.values())
    ui_sched = _node(new, "IPAPromptSchedule")
    assert ui_sched["widgets_values"] == ["a cat\na dog"]
    assert [l for l in new["links"] if l[1] == ui_sched["id"]][0][5] == "STRING"


def test_ms_layer_weights_become_transformer_indexes_that_our_parser_reads(host):
    from ip_core import layers as ip_layers
    from nodes import layer_weights

    new, report, api = _both(pack_workflow("IPAdapterMS", {"layer_weights": "0:1.0, 6:0.5\n9:2"}))
    custom = _api_node(api, "IPAApplyAdapter")["layer_weights_custom"]
    assert custom == _values(new, "IPAApplyAdapter")["layer_weights_custom"] == "t0:1.0, t6:0.5, t9:2"
    specs = ip_layers.layer_specs("sd15")
    weights = layer_weights.layer_weights(specs, custom=custom)  # never refused as ambiguous
    assert sorted(set(weights)) == [0.0, 0.5, 1.0, 2.0]
    assert migrate.pack_layer_weights("output.1=1") == ("output.1=1", migrate.pack_layer_weights("output.1=1")[1])
    assert migrate.pack_layer_weights("output.1=1")[1]  # not the pack's form: passed as is, reported


def test_noise_save_and_load_embeds(host):
    _, report, api = _both(pack_workflow("IPAdapterNoise", {"type": "shuffle", "strength": 0.4, "blur": 3},
                                         connect_optional=True))
    noise = _api_node(api, "IPANoise")
    assert (noise["type"], noise["strength"], noise["blur"], noise["seed_override"]) == ("shuffle", 0.4, 3, -1)
    assert api[noise["image"][0]]["class_type"] == "LoadImage"
    _, report, api = _both(pack_workflow("IPAdapterSaveEmbeds", {"filename_prefix": "mine"}))
    assert _api_node(api, "IPASaveEmbeds")["filename_prefix"] == "mine"
    assert any(".safetensors" in n.text for n in report.of("approximated"))
    _, report, api = _both(pack_workflow("IPAdapterLoadEmbeds"))
    assert _api_node(api, "IPALoadEmbeds")["embeds_file"] == "x.ipadpt"
    assert any("re-save" in n.text for n in report.of("approximated"))


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
    adv["widgets_values"] = adv["widgets_values"][:-2]  # no version of the pack saved 4 values here
    adv["inputs"][2]["name"] = "images"  # renamed input
    old = {"id": 500, "type": "IPAdapterTilesMasked", "pos": [0, 3000], "size": [300, 200], "flags": {}, "order": 0,
           "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": [1.0, 0.0, "original"]}
    wf["nodes"].append(old)
    wf["last_node_id"] = 500
    new, report = convert(wf)
    assert validate_ui(new) == []
    problems = " ".join(n.text for n in report.of("problem") if "IPAdapterAdvanced" in n.node)
    assert "4 widget values" in problems and "6 widgets" in problems and "'images'" in problems
    assert any("IPAdapterTilesMasked" in n.node and "older or newer version" in n.text for n in report.of("kept"))
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
    assert any(n.node.startswith("subgraph 'inner': 1 IPAdapterAdvanced") for n in report.notes)  # see test_migrate_graphs

