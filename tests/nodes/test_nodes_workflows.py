"""example_workflows/*.json: every node exists, every input name and widget value fits the node's schema."""
import json
from pathlib import Path

import pytest

from nodes.registry import NODE_CLASS_MAPPINGS
from workflow_api import CORE_SCHEMAS, ui_to_api

WORKFLOWS = sorted((Path(__file__).resolve().parents[2] / "example_workflows").glob("*.json"))


def _schema(host_node_type):
    if host_node_type in NODE_CLASS_MAPPINGS:
        return NODE_CLASS_MAPPINGS[host_node_type].INPUT_TYPES()
    return CORE_SCHEMAS[host_node_type]


def test_the_four_examples_exist():
    names = {p.stem for p in WORKFLOWS}
    assert {"ipadapter_image_prompt_only", "ipadapter_image_and_text", "ipadapter_sdxl_style_only",
            "ipadapter_two_adapters_regional"} <= names


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_fits_the_nodes(host, path):
    wf = json.loads(path.read_text())
    by_id = {n["id"]: n for n in wf["nodes"]}
    api = ui_to_api(wf, _schema)
    assert any(n["type"] == "IPAApplyAdapter" for n in wf["nodes"])
    for node_id, entry in api.items():
        schema = _schema(entry["class_type"])
        allowed = {**schema.get("required", {}), **schema.get("optional", {})}
        assert set(entry["inputs"]) <= set(allowed), (path.name, entry)
        missing = set(schema.get("required", {})) - set(entry["inputs"])
        assert not missing, f"{path.name} node {node_id} misses required inputs {missing}"
        for name, value in entry["inputs"].items():
            spec = allowed[name]
            if isinstance(value, list):  # a link: its type must be what the input takes
                src = by_id[int(value[0])]
                assert src["outputs"][value[1]]["type"] == spec[0], (path.name, name)
            elif isinstance(spec[0], (list, tuple)) and spec[0]:
                assert value in spec[0], (path.name, name, value)  # our combos: a valid choice
            elif spec[0] in ("FLOAT", "INT") and len(spec) > 1:
                lo, hi = spec[1].get("min", -1e18), spec[1].get("max", 1e18)
                assert lo <= value <= hi, (path.name, name, value)
    for link in wf["links"]:
        src, dst = by_id[link[1]], by_id[link[3]]
        assert src["outputs"][link[2]]["type"] == dst["inputs"][link[4]]["type"] == link[5]


def test_style_example_uses_the_style_preset(host):
    wf = json.loads((WORKFLOWS[0].parent / "ipadapter_sdxl_style_only.json").read_text())
    api = ui_to_api(wf, _schema)
    applies = [e for e in api.values() if e["class_type"] == "IPAApplyAdapter"]
    assert [a["inputs"]["layer_weights"] for a in applies] == ["style only"]


def test_regional_example_stacks_two_masked_adapters(host):
    wf = json.loads((WORKFLOWS[0].parent / "ipadapter_two_adapters_regional.json").read_text())
    api = ui_to_api(wf, _schema)
    applies = {k: e for k, e in api.items() if e["class_type"] == "IPAApplyAdapter"}
    assert len(applies) == 2 and all("attn_mask" in e["inputs"] for e in applies.values())
    assert any(e["inputs"]["model"][0] in applies for e in applies.values())  # chained: they stack


def test_style_transfer_examples_use_the_weight_types(host):
    for name, weight_type, composition in (("ipadapter_sd15_style_transfer", "style transfer", False),
                                           ("ipadapter_sdxl_style_and_composition", "style and composition", True)):
        api = ui_to_api(json.loads((WORKFLOWS[0].parent / f"{name}.json").read_text()), _schema)
        (apply,) = [e for e in api.values() if e["class_type"] == "IPAApplyAdapter"]
        assert apply["inputs"]["weight_type"] == weight_type
        assert ("composition_embeds" in apply["inputs"]) == composition


def test_saved_workflows_keep_their_widget_positions(host):
    """Examples saved before the weight-type widgets existed: the old values keep their names, the new
    widgets take their defaults (which reproduce the old result)."""
    wf = json.loads((WORKFLOWS[0].parent / "ipadapter_sdxl_style_only.json").read_text())
    (apply,) = [e for e in ui_to_api(wf, _schema).values() if e["class_type"] == "IPAApplyAdapter"]
    assert apply["inputs"]["layer_weights"] == "style only" and apply["inputs"]["weight"] == 1.0
    assert apply["inputs"]["weight_type"] == "linear" and apply["inputs"]["embeds_scaling"] == "V only"
    layout = [k for k in NODE_CLASS_MAPPINGS["IPAApplyAdapter"].INPUT_TYPES()["optional"]]
    assert layout[:3] == ["attn_mask", "layer_weights", "layer_weights_custom"]
    assert layout[3:10] == ["weight_type", "embeds_scaling", "composition_embeds", "weight_composition", "expand_style",
                            "style_boost", "composition_boost"]


def test_tiled_and_per_frame_examples(host):
    tiled = ui_to_api(json.loads((WORKFLOWS[0].parent / "ipadapter_tiled_reference.json").read_text()), _schema)
    (enc,) = [e for e in tiled.values() if e["class_type"] == "IPAEncodeImagePrompt"]
    assert enc["inputs"]["tiles"] == "tiled"
    frames = ui_to_api(json.loads((WORKFLOWS[0].parent / "ipadapter_per_frame_batch.json").read_text()), _schema)
    (enc,) = [e for e in frames.values() if e["class_type"] == "IPAEncodeImagePrompt"]
    (apply,) = [e for e in frames.values() if e["class_type"] == "IPAApplyAdapter"]
    (weights_id,) = [k for k, e in frames.items() if e["class_type"] == "IPAFrameWeights"]
    assert enc["inputs"]["combine"] == "batch" and enc["inputs"]["image"] == [weights_id, 3]
    assert apply["inputs"]["frame_weights"] == [weights_id, 0]
    latent = [e for e in frames.values() if e["class_type"] == "EmptyLatentImage"][0]
    assert latent["inputs"]["batch_size"] == 4  # 2 references x 2 frames each
