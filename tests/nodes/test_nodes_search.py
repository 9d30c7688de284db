"""Typing "ipadapter" in the frontend's node search finds every node of this pack (ids never renamed).

The frontend (comfyui-frontend-package 1.27, NodeSearchService) searches node definitions with Fuse.js 7 over
the keys ["name", "display_name"] (name = the node id), threshold 0.3, default location 0 and distance 100;
ComfyUI 0.3.64's /object_info sends no search aliases. For an exact (case-insensitive) occurrence Fuse's
score is index / distance, so the word must appear within the first 30 characters of the id or display name.
When the frontend package and node.js are installed, the frontend's own search code is run as well.
"""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from nodes.registry import NODE_DISPLAY_NAME_MAPPINGS, OWN_IDS

QUERY = "ipadapter"
THRESHOLD, DISTANCE = 0.3, 100


def _found_exactly(text: str) -> bool:
    index = text.lower().find(QUERY)
    return index >= 0 and index / DISTANCE <= THRESHOLD


def test_every_node_is_found_by_typing_ipadapter():
    # our own ids: the drop-in ids (nodes/dropin) keep the other pack's display names, as its users know them
    missing = [node_id for node_id in OWN_IDS
               if not (_found_exactly(node_id) or _found_exactly(NODE_DISPLAY_NAME_MAPPINGS[node_id]))]
    assert missing == [], f"not found by the node search for {QUERY!r}: {missing}; put 'IPAdapter' in the display name"


def _frontend_search_code():
    try:
        import comfyui_frontend_package
    except ImportError:
        return None
    assets = Path(comfyui_frontend_package.__file__).parent / "static" / "assets"
    for bundle in sorted(assets.glob("index-*.js")):
        text = bundle.read_text(errors="replace")
        start, end = text.find("function isArray(value) {"), text.find("class NodeSearchService {")
        if start >= 0 and end > start and "Fuse.version" in text[start:end]:
            close = text.find("\n}\n", end)
            return text[start:close + 3]
    return None


FRONTEND = _frontend_search_code()


@pytest.mark.skipif(FRONTEND is None or shutil.which("node") is None, reason="needs comfyui-frontend-package and node.js")
def test_the_frontends_own_search_lists_every_node(tmp_path):
    # Our nodes among the host's core nodes, so the ranking is the one a user sees (the search box shows 64).
    core = ["KSampler", "CheckpointLoaderSimple", "CLIPVisionLoader", "CLIPVisionEncode", "LoadImage", "VAEDecode",
            "unCLIPConditioning", "StyleModelApply", "ControlNetApplyAdvanced", "LoraLoader", "ImageScale"]
    defs = [{"name": n, "display_name": n, "category": "core", "inputs": {}, "outputs": [], "nodeSource": {"displayText": "core"}}
            for n in core]
    defs += [{"name": n, "display_name": NODE_DISPLAY_NAME_MAPPINGS[n], "category": "ipadapter", "inputs": {}, "outputs": [],
              "nodeSource": {"displayText": "ipadapter-exact"}} for n in OWN_IDS]
    script = tmp_path / "search.mjs"
    script.write_text(
        "const __name = (f) => f;\n" + FRONTEND
        + f"\nconst service = new NodeSearchService({json.dumps(defs)});\n"
        + f"console.log(JSON.stringify(service.searchNode({json.dumps(QUERY)}, [], {{ limit: 64 }}).map((d) => d.name)));\n"
    )
    res = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-3000:]
    found = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(OWN_IDS) <= set(found), f"frontend search for {QUERY!r} gave {found}"
    assert not set(found) & set(core)  # and nothing unrelated ranks among them
