// Shows what a node of this pack reports after it runs (its "ui" result: {"text": [...]}) on the node
// itself: Load IPAdapter shows the variant it detected in the file, Inspect IPAdapter its description.
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

app.registerExtension({
  name: "ipadapter-exact.ShowDetectedVariant",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!SHOWS_TEXT.has(nodeData.name)) {
      return;
    }
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      if (Array.isArray(message?.text)) {
        showText(this, message.text.map(String));
      }
    };
  },
});
