"""The frontend extension (WEB_DIRECTORY): ComfyUI serves every .js in it at /extensions/<pack>/; it shows
the text our nodes return in their "ui" result on the node (Load IPAdapter: the detected variant)."""
import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from nodes.registry import NODE_CLASS_MAPPINGS

ROOT = Path(__file__).resolve().parents[1]


def _web_directory():
    tree = ast.parse((ROOT / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["WEB_DIRECTORY"]:
            return node.value.value
    return None


def test_web_directory_is_declared_and_holds_the_extension():
    web = _web_directory()
    assert web is not None and (ROOT / web).is_dir()
    assert [p.name for p in (ROOT / web).glob("**/*.js")] == ["ipadapter_info.js"]


def test_extension_registers_for_the_nodes_that_return_text():
    js = (ROOT / "web" / "ipadapter_info.js").read_text()
    assert "app.registerExtension(" in js and "onExecuted" in js and "message?.text" in js
    # the shims the frontend serves at /scripts/ (one level above /extensions/<pack>/)
    assert 'from "../../scripts/app.js"' in js and 'from "../../scripts/widgets.js"' in js
    named = set(re.search(r"new Set\(\[([^\]]*)\]\)", js).group(1).replace('"', "").replace(" ", "").split(","))
    assert named <= set(NODE_CLASS_MAPPINGS)
    for node_id in named:  # each returns {"ui": {"text": [...]}}, which the frontend passes to onExecuted
        cls = NODE_CLASS_MAPPINGS[node_id]
        assert re.search(r'"ui": \{"text"', Path(__import__("inspect").getsourcefile(cls)).read_text())
    assert "serialize = false" in js  # the display widget never shifts saved widget values


@pytest.mark.skipif(shutil.which("node") is None, reason="node.js not installed (syntax check only)")
def test_extension_is_valid_javascript():
    res = subprocess.run(["node", "--check", str(ROOT / "web" / "ipadapter_info.js")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
