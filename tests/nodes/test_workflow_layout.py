"""Every example workflow is readable in the frontend: no overlapping or hidden nodes, labelled groups."""
import json
from pathlib import Path

import pytest

from nodes.registry import NODE_CLASS_MAPPINGS
from workflow_api import CORE_SCHEMAS
from workflow_layout import check_layout, min_size

WORKFLOWS = sorted((Path(__file__).resolve().parents[2] / "example_workflows").glob("*.json"))


def _schema(node_type):
    if node_type in NODE_CLASS_MAPPINGS:
        return NODE_CLASS_MAPPINGS[node_type].INPUT_TYPES()
    return CORE_SCHEMAS[node_type]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_example_workflow_layout(host, path):
    problems = check_layout(json.loads(path.read_text()), _schema)
    assert problems == [], f"{path.name}:\n" + "\n".join(problems)


def _node(node_id, node_type, pos, size=(315, 100), **kw):
    return {"id": node_id, "type": node_type, "pos": list(pos), "size": list(size), "outputs": [], **kw}


def test_the_check_catches_what_users_saw():
    group = {"title": "All", "bounding": [0, 0, 2000, 2000]}
    # the regional example before: a Load Image exactly on top of a Load Image Mask
    hidden = {"nodes": [_node(7, "LoadImageMask", (20, 1000)), _node(12, "LoadImage", (20, 1000))], "groups": [group]}
    assert any("overlap" in p for p in check_layout(hidden, _schema))
    # a node saved too small still takes its minimum size: Apply IPAdapter is far taller than 100 px
    apply_min = min_size(_node(1, "IPAApplyAdapter", (0, 0)), _schema("IPAApplyAdapter"))[1]
    assert apply_min > 200
    below = {"nodes": [_node(1, "IPAApplyAdapter", (100, 100)), _node(2, "KSampler", (100, 100 + 140))], "groups": [group]}
    assert any("overlap" in p for p in check_layout(below, _schema))
    ungrouped = {"nodes": [_node(1, "VAEDecode", (100, 100))], "groups": []}
    assert "no groups: put the nodes in labelled groups" in check_layout(ungrouped, _schema)
    untitled = {"nodes": [_node(1, "VAEDecode", (100, 100))], "groups": [{"title": "", "bounding": [0, 0, 500, 500]}]}
    assert any("has no title" in p for p in check_layout(untitled, _schema))


def test_relayout_makes_grown_nodes_fit_and_keeps_groups_and_order(host):
    """After a node gains inputs (taller), relayout gives every node its drawn size without overlaps, keeps
    each node in its group and each column's top-to-bottom order, and pushes groups apart."""
    from workflow_layout import relayout

    wf = {"groups": [{"title": "Image prompt", "bounding": [0, 0, 400, 400]},
                     {"title": "Sample", "bounding": [420, 0, 400, 400]}],
          "nodes": [_node(1, "IPAEncodeImagePrompt", (20, 60)), _node(2, "IPAApplyAdapter", (20, 200)),
                    _node(3, "KSampler", (440, 60)), _node(4, "VAEDecode", (440, 340))]}
    assert check_layout(wf, _schema) != []
    relayout(wf, _schema)
    assert check_layout(wf, _schema) == []
    pos = {n["id"]: n["pos"] for n in wf["nodes"]}
    assert pos[1][1] < pos[2][1] and pos[3][1] < pos[4][1]  # order kept
    assert pos[3][0] > pos[1][0]  # the second group stays to the right
