"""The frontend extension (WEB_DIRECTORY): ComfyUI serves every .js in it at /extensions/<pack>/; it shows
the text our nodes return in their "ui" result on the node (Load IPAdapter: the detected variant)."""
import ast
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ip_core.config import make_config
from ip_core.layers import layer_specs
from nodes.families import FAMILY_INPUTS, family_for, unused_inputs
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


# The frontend's modules the extension imports, as small stand-ins: app.registerExtension keeps the extension,
# ComfyWidgets.STRING adds a text widget. The runner registers two node types from the real INPUT_TYPES, links
# a Load IPAdapter to an Apply IPAdapter, replays the "executed" message and prints what the nodes show.
_APP_JS = """export const app = { extensions: [], graph: null, registerExtension(e) { this.extensions.push(e); } };"""
_WIDGETS_JS = """export const ComfyWidgets = { STRING(node, name) {
  const widget = { name, type: "customtext", value: "", inputEl: { style: {} } };
  node.widgets.push(widget); return { widget }; } };"""
_RUNNER = """
import { app } from "./scripts/app.js";
await import("./extensions/pack/ipadapter_info.js");
const [load, apply, messages] = JSON.parse(process.argv[2]);
class Node { constructor(id) { this.id = id; this.size = [200, 100]; this.widgets = []; }
  computeSize() { return [200, this.widgets.reduce((h, w) => h + (w.computeSize ? w.computeSize()[1] : 20), 30)]; }
  setSize(s) { this.size = s; } setDirtyCanvas() {} }
const types = {};
for (const data of [load, apply]) {
  types[data.name] = class extends Node {};
  for (const ext of app.extensions) await ext.beforeRegisterNodeDef(types[data.name], data);
}
const loader = new types[load.name](1), applier = new types[apply.name](2);
loader.outputs = [{ links: [7] }];
applier.inputs = [{ name: "ipadapter", link: 7 }];
applier.widgets = apply.widgets.map(([name, value]) => ({ name, value, type: "number" }));
const graph = { links: { 7: { origin_id: 1, target_id: 2 } }, getNodeById: (id) => ({ 1: loader, 2: applier })[id] };
loader.graph = applier.graph = app.graph = graph;
const shown = () => ({ shown: applier.widgets.filter((w) => w.type !== "hidden").map((w) => w.name),
  values: applier.widgets.map((w) => w.value), height: applier.size[1],
  text: loader.widgets.filter((w) => w.name === "detected").map((w) => w.value) });
const out = [];
for (const message of messages) { loader.onExecuted(message); out.push(shown()); }
applier.inputs[0].link = null;
applier.onConnectionsChange(1, 0, false);
out.push(shown());
console.log(JSON.stringify(out));
"""


def _run_extension(tmp_path, messages):
    """What the linked Apply IPAdapter shows after Load IPAdapter reports each message, then after unlinking."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "app.js").write_text(_APP_JS)
    (tmp_path / "scripts" / "widgets.js").write_text(_WIDGETS_JS)
    (tmp_path / "extensions" / "pack").mkdir(parents=True)
    shutil.copy(ROOT / "web" / "ipadapter_info.js", tmp_path / "extensions" / "pack")
    (tmp_path / "package.json").write_text('{"type": "module"}')
    (tmp_path / "run.js").write_text(_RUNNER)

    def node_data(node_id):
        types = NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()
        return {"name": node_id, "input": json.loads(json.dumps(types, default=str))}

    apply = node_data("IPAApplyAdapter")
    inputs = {**apply["input"]["required"], **apply["input"].get("optional", {})}
    apply["widgets"] = [[k, v[1].get("default")] for k, v in inputs.items()
                        if isinstance(v[0], list) or v[0] in ("FLOAT", "INT", "STRING", "BOOLEAN") and not v[1].get("forceInput")]
    res = subprocess.run(["node", "run.js", json.dumps([node_data("IPALoadAdapter"), apply, messages])], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _load_message(config, text="x.safetensors: ..."):
    """Load IPAdapter's "ui" result for an adapter of `config` (what the frontend passes to onExecuted)."""
    return {"text": [text], "family": [family_for(config).NAME], "unused_inputs": unused_inputs(config)}


@pytest.mark.skipif(shutil.which("node") is None, reason="node.js not installed")
def test_extension_hides_the_inputs_the_linked_adapter_does_not_read(tmp_path):
    sd = make_config("plus", layer_specs("sdxl"), 2048, 1280)
    kolors_face = make_config("faceid-plus", layer_specs("sdxl"), 2048, 512, clip_width=1024, token_dim=4096)
    sd_view, kolors_view, unlinked = _run_extension(tmp_path, [_load_message(sd, "a: SDXL plus"),
                                                               _load_message(kolors_face, "b: Kolors FaceID")])
    every = unlinked["shown"]
    assert set(FAMILY_INPUTS) <= set(every)  # nothing known (unlinked): every input shown
    assert sd_view["shown"] == [w for w in every if w not in FAMILY_INPUTS]
    assert kolors_view["shown"] == [w for w in every if w != "faceid_lora_strength"]
    assert sd_view["height"] < kolors_view["height"] < unlinked["height"]  # hidden widgets take no room
    # hiding never changes a value or a position: saved widgets_values load as before
    assert sd_view["values"] == kolors_view["values"] == unlinked["values"]
    assert [v["text"] for v in (sd_view, kolors_view)] == [["a: SDXL plus"], ["b: Kolors FaceID"]]


@pytest.mark.skipif(shutil.which("node") is None, reason="node.js not installed (syntax check only)")
def test_extension_is_valid_javascript():
    res = subprocess.run(["node", "--check", str(ROOT / "web" / "ipadapter_info.js")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
