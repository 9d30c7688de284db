"""Layout checks for UI-format workflows (what users drag into the frontend): every example workflow file goes
through check_layout, so a workflow added later is checked the same way.

The frontend draws a node at least as large as LGraphNode.computeSize() (comfyui-frontend-package 1.27, the
litegraph fork), whatever the file says, and the title bar sits above `pos`. The sizes below follow that
function: a row of 20 px per input socket or output, each widget 20 px + 4 (a multiline text box at least
MULTILINE_HEIGHT), 8 + 6 px of padding, at least 1.5 x 140 px wide with widgets. Image loaders get the size
the host's default workflow gives them (the preview grows with the image).
"""
from __future__ import annotations

from workflow_api import is_widget, widget_layout

TITLE_HEIGHT = 30
SLOT_HEIGHT = 20
WIDGET_HEIGHT = 20
MULTILINE_HEIGHT = 80  # the frontend's DOM text box: min height ~58 px; kept with a margin
NODE_WIDTH = 140
TEXT_WIDTH = 14 * 0.6  # per character at the title font, the frontend's fallback measure
IMAGE_LOADERS = {"LoadImage": (315, 314), "LoadImageMask": (315, 318)}
GAP = 10  # minimum free space between two nodes, and between a node and its group's edge
GROUP_TITLE_HEIGHT = 34


def min_size(node: dict, schema: dict) -> tuple[float, float]:
    entries = {**schema.get("required", {}), **schema.get("optional", {})}
    sockets = [n for n, e in entries.items() if not is_widget(e)]
    rows = max(len(sockets), len(node.get("outputs", [])), 1)
    widgets = widget_layout(schema)
    height = rows * SLOT_HEIGHT
    if widgets:
        for name in widgets:
            spec = entries.get(name) if name else None
            multiline = bool(spec and len(spec) > 1 and spec[1].get("multiline"))
            height += (MULTILINE_HEIGHT if multiline else WIDGET_HEIGHT) + 4
        height += 8
    height += 6
    title = node.get("title") or node["type"]
    width = max(NODE_WIDTH * (1.5 if widgets else 1), TITLE_HEIGHT * 1.33 + len(title) * TEXT_WIDTH)
    if node["type"] in IMAGE_LOADERS:
        width, height = max(width, IMAGE_LOADERS[node["type"]][0]), max(height, IMAGE_LOADERS[node["type"]][1])
    return width, height


def node_rect(node: dict, schema: dict) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) as drawn: the larger of the saved and the minimum size, title bar included."""
    w, h = min_size(node, schema)
    w, h = max(w, node["size"][0]), max(h, node["size"][1])
    x, y = node["pos"]
    return x, y - TITLE_HEIGHT, x + w, y + h


def _overlap(a, b, gap=0.0) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def check_layout(workflow: dict, schema_of) -> list[str]:
    """Problems a user would see: overlapping or hidden nodes, nodes outside a labelled group, overlapping
    groups. Empty when the layout is clean."""
    problems = []
    nodes = workflow["nodes"]
    rects = {}
    for n in nodes:
        label = f"node {n['id']} ({n.get('title') or n['type']})"
        if n.get("flags", {}).get("collapsed"):
            problems.append(f"{label} is collapsed")
        if n.get("mode", 0) != 0:
            problems.append(f"{label} is muted or bypassed")
        rects[n["id"]] = (label, node_rect(n, schema_of(n["type"])))
    items = list(rects.values())
    for i, (la, ra) in enumerate(items):
        for lb, rb in items[i + 1:]:
            if _overlap(ra, rb, GAP):
                problems.append(f"{la} and {lb} overlap (or are closer than {GAP} px): {ra} / {rb}")
    groups = workflow.get("groups", [])
    if not groups:
        problems.append("no groups: put the nodes in labelled groups")
    boxes = []
    for g in groups:
        x, y, w, h = g["bounding"]
        if not str(g.get("title", "")).strip():
            problems.append(f"group at {g['bounding']} has no title")
        boxes.append((g.get("title"), (x, y, x + w, y + h)))
    for i, (ta, ba) in enumerate(boxes):
        for tb, bb in boxes[i + 1:]:
            if _overlap(ba, bb):
                problems.append(f"groups {ta!r} and {tb!r} overlap")
    for label, r in items:
        inside = [t for t, b in boxes
                  if b[0] + GAP <= r[0] and r[2] <= b[2] - GAP and b[1] + GROUP_TITLE_HEIGHT <= r[1] and r[3] <= b[3] - GAP]
        if len(inside) != 1:
            problems.append(f"{label} is inside {len(inside)} groups (needs exactly one): {inside}")
    return problems


COLUMN_GAP = 40  # free space between two columns of nodes in a group
ROW_GAP = 20  # free space between two nodes stacked in a column (the next title bar sits above it)


def relayout(workflow: dict, schema_of, membership: dict | None = None) -> dict:
    """Lay a workflow out again after its nodes grew (new inputs make nodes taller): each group keeps its
    nodes, its columns (nodes at about the same x) and their top-to-bottom order; every node gets at least
    its drawn size, groups are resized around their nodes and pushed right or down until none overlap.

    membership: {node id: group index} for nodes outside every group (a workflow saved without groups)."""
    groups = workflow["groups"]
    nodes = workflow["nodes"]

    def group_of(n):
        if membership and n["id"] in membership:
            return membership[n["id"]]
        x, y = n["pos"]
        for i, g in enumerate(groups):
            gx, gy, gw, gh = g["bounding"]
            if gx <= x <= gx + gw and gy <= y <= gy + gh:
                return i
        raise ValueError(f"node {n['id']} ({n['type']}) is in no group; give it one in `membership`")

    members = {i: [] for i in range(len(groups))}
    for n in nodes:
        members[group_of(n)].append(n)
    origin = {i: tuple(g["bounding"][:2]) for i, g in enumerate(groups)}
    extent = {}
    for i, group_nodes in members.items():
        columns = []
        for n in sorted(group_nodes, key=lambda n: n["pos"][0]):
            if columns and abs(columns[-1][0]["pos"][0] - n["pos"][0]) < 20:
                columns[-1].append(n)
            else:
                columns.append([n])
        x = GAP + 10
        bottom = GROUP_TITLE_HEIGHT
        for column in columns:
            y = GROUP_TITLE_HEIGHT + GAP + TITLE_HEIGHT + 10
            width = 0
            for n in sorted(column, key=lambda n: n["pos"][1]):
                w, h = min_size(n, schema_of(n["type"]))
                w, h = max(w, n["size"][0]), max(h, n["size"][1])
                n["size"], n["_local"] = [round(w), round(h)], (x, y)
                y += round(h) + ROW_GAP + TITLE_HEIGHT
                width = max(width, round(w))
                bottom = max(bottom, n["_local"][1] + round(h))
            x += width + COLUMN_GAP
        extent[i] = (x - COLUMN_GAP + GAP + 10, bottom + GAP + 10)
    placed = []
    for i in sorted(members, key=lambda i: origin[i]):
        gx, gy = origin[i]
        w, h = extent[i]
        moved = True
        while moved:
            moved = False
            for (px, py, pw, ph) in placed:
                if gx < px + pw + GAP and px < gx + w + GAP and gy < py + ph + GAP and py < gy + h + GAP:
                    if abs(px - origin[i][0]) < 20:  # same column of groups: go below it
                        gy = py + ph + 2 * GAP
                    else:
                        gx = px + pw + 2 * GAP
                    moved = True
        placed.append((gx, gy, w, h))
        groups[i]["bounding"] = [gx, gy, w, h]
        for n in members[i]:
            lx, ly = n.pop("_local")
            n["pos"] = [gx + lx, gy + ly]
    return workflow


if __name__ == "__main__":
    # Re-lay the shipped examples out (run from the repository root after a node gained inputs):
    #   python tests/nodes/workflow_layout.py [--group FILE:NODE_ID=GROUP_INDEX ...]
    import json
    import sys
    from pathlib import Path

    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[1])]
    import ipa_pytest_plugin  # noqa: F401  (nodes/ as a package)
    from nodes.registry import NODE_CLASS_MAPPINGS
    from workflow_api import CORE_SCHEMAS

    def schema(node_type):
        return NODE_CLASS_MAPPINGS[node_type].INPUT_TYPES() if node_type in NODE_CLASS_MAPPINGS else CORE_SCHEMAS[node_type]

    extra = {}
    for arg in sys.argv[1:]:
        name, rest = arg.split(":")
        node_id, index = rest.split("=")
        extra.setdefault(name, {})[int(node_id)] = int(index)
    for path in sorted((Path(__file__).resolve().parents[2] / "example_workflows").glob("*.json")):
        wf = json.loads(path.read_text())
        relayout(wf, schema, extra.get(path.name))
        path.write_text(json.dumps(wf, indent=1) + "\n")
        print(path.name, check_layout(wf, schema) or "ok")
