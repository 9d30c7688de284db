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
