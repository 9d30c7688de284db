// Shows what a node of this pack reports after it runs (its "ui" result: {"text": [...]}) on the node
// itself: Load IPAdapter shows the variant it detected in the file, Inspect IPAdapter its description.
// Load IPAdapter also reports its adapter's family and which family-specific inputs (e.g. weight_kolors) the
// adapter does not read; those are hidden on the nodes its output feeds (values kept, so saved workflows
// load and run as before) and shown again when the link goes away.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const SHOWS_TEXT = new Set(["IPALoadAdapter", "IPAInspectAdapter"]);
const WIDGET_NAME = "detected";

function showText(node, lines) {
  let widget = node.widgets?.find((w) => w.name === WIDGET_NAME);
  if (!widget) {
    widget = ComfyWidgets.STRING(node, WIDGET_NAME, ["STRING", { multiline: true }], app).widget;
    widget.inputEl.readOnly = true;
    widget.inputEl.style.opacity = 0.8;
    // Display only: never saved into widgets_values (positions of real widgets stay put) nor sent as an input.
    widget.serialize = false;
    widget.options = { ...(widget.options ?? {}), serialize: false };
  }
  widget.value = lines.join("\n");
  node.setSize([Math.max(node.size[0], 320), Math.max(node.size[1], node.computeSize()[1])]);
  node.setDirtyCanvas(true, true);
}

// A hidden widget keeps its value and its place in widgets_values; it only takes no room and is not drawn.
function setWidgetHidden(widget, hidden) {
  if (hidden && !widget.ipadapterHidden) {
    widget.ipadapterHidden = { type: widget.type, computeSize: widget.computeSize };
    widget.type = "hidden";
    widget.hidden = true;
    widget.computeSize = () => [0, -4];
  } else if (!hidden && widget.ipadapterHidden) {
    widget.type = widget.ipadapterHidden.type;
    widget.computeSize = widget.ipadapterHidden.computeSize;
    delete widget.hidden;
    delete widget.ipadapterHidden;
  }
}

// Hide on `node` the family inputs its adapter does not read (`family` null: nothing known, show them all).
function fitWidgetsToFamily(node, family) {
  let changed = false;
  for (const widget of node.widgets ?? []) {
    const hide = Boolean(family?.unused.includes(widget.name));
    if (hide !== Boolean(widget.ipadapterHidden)) {
      setWidgetHidden(widget, hide);
      changed = true;
    }
  }
  if (changed) {
    node.setSize([node.size[0], node.computeSize()[1]]);
    node.setDirtyCanvas(true, true);
  }
}

// The nodes an output slot of `node` feeds directly.
function fedNodes(node) {
  const graph = node.graph ?? app.graph;
  const found = [];
  for (const output of node.outputs ?? []) {
    for (const linkId of output.links ?? []) {
      const link = graph.links[linkId];
      const target = link && graph.getNodeById(link.target_id);
      if (target) found.push(target);
    }
  }
  return found;
}

// The family reported by the node feeding `node`'s "ipadapter" input, if it ran.
function familyFeeding(node) {
  const graph = node.graph ?? app.graph;
  const input = node.inputs?.find((i) => i.name === "ipadapter");
  const link = input?.link != null ? graph.links[input.link] : null;
  const origin = link ? graph.getNodeById(link.origin_id) : null;
  return origin?.ipadapterFamily ?? null;
}

app.registerExtension({
  name: "ipadapter-exact.ShowDetectedVariant",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (SHOWS_TEXT.has(nodeData.name)) {
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        onExecuted?.apply(this, arguments);
        if (Array.isArray(message?.text)) {
          showText(this, message.text.map(String));
        }
        if (Array.isArray(message?.family) && Array.isArray(message?.unused_inputs)) {
          this.ipadapterFamily = {
            name: String(message.family[0]),
            unused: message.unused_inputs.map(String),
          };
          for (const target of fedNodes(this)) fitWidgetsToFamily(target, this.ipadapterFamily);
        }
      };
    }
    const inputs = { ...(nodeData.input?.required ?? {}), ...(nodeData.input?.optional ?? {}) };
    if (inputs.ipadapter?.[0] === "IPA_ADAPTER") {
      const onConnectionsChange = nodeType.prototype.onConnectionsChange;
      nodeType.prototype.onConnectionsChange = function () {
        onConnectionsChange?.apply(this, arguments);
        fitWidgetsToFamily(this, familyFeeding(this));
      };
    }
  },
});
