"""The Note in each example workflow: the files it loads and where each comes from.

`note_text(workflow)` is computed from the workflow's own loader nodes and the table below, so a test can
check each shipped note is current. Rewrite the notes (run from the repository root; it lays the examples out
again so the note overlaps nothing):
    python tests/nodes/example_notes.py
"""
from __future__ import annotations

# loader node type -> (index of the widget holding a file name, the folder it is read from)
LOADERS = {
    "CheckpointLoaderSimple": (0, "models/checkpoints"),
    "UNETLoader": (0, "models/diffusion_models"),
    "VAELoader": (0, "models/vae"),
    "DualCLIPLoader": ((0, 1), "models/text_encoders"),
    "TripleCLIPLoader": ((0, 1, 2), "models/text_encoders"),
    "CLIPVisionLoader": (0, "models/clip_vision"),
    "IPALoadSigLIPVision": (0, "models/clip_vision"),
    "IPALoadAdapter": (0, "models/ipadapter"),
    "LoadImage": (0, "input"),
    "LoadImageMask": (0, "input"),
    "IPALoadEmbeds": (0, "input"),
}

HOST_IMAGE = "example.png"  # ships in ComfyUI's input/ folder (both pinned hosts)
SHIPPED_IMAGES = ("style_reference.png", "composition_reference.png", "left_reference.png", "right_reference.png",
                  "mask_left.png", "mask_right.png")  # example_inputs/, copied to input/ at the pack's first start

# Where each file comes from; the README's model-file tables say the same for the adapters and encoders.
SOURCES = {
    "v1-5-pruned-emaonly.safetensors": "any SD1.5 checkpoint",
    "sd_xl_base_1.0.safetensors": "any SDXL checkpoint",
    "kolors.safetensors": "stands for your Kolors loader nodes (ComfyUI has none for Kolors)",
    "sd3.5_large.safetensors": "SD3.5 Large checkpoint",
    "flux1-dev.safetensors": "FLUX.1 dev",
    "clip_l.safetensors": "text encoder", "clip_g.safetensors": "text encoder", "t5xxl_fp16.safetensors": "text encoder",
    "ae.safetensors": "the Flux VAE",
    "ip-adapter_sd15.safetensors": "h94/IP-Adapter, models/",
    "ip-adapter_sdxl.safetensors": "h94/IP-Adapter, sdxl_models/",
    "ip-adapter-faceid_sd15.bin": "h94/IP-Adapter-FaceID",
    "Kolors-IP-Adapter-Plus.bin": "ip_adapter_plus_general.bin of Kwai-Kolors/Kolors-IP-Adapter-Plus, renamed",
    "flux-ip-adapter-v2.safetensors": "ip_adapter.safetensors of XLabs-AI/flux-ip-adapter-v2, renamed",
    "sd3.5-large-ip-adapter.bin": "ip-adapter.bin of InstantX/SD3.5-Large-IP-Adapter, renamed",
    "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors": "h94/IP-Adapter models/image_encoder/model.safetensors, renamed",
    "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors": "h94/IP-Adapter sdxl_models/image_encoder/model.safetensors, renamed",
    "clip-vit-large-patch14-336.bin": "image_encoder/pytorch_model.bin of Kwai-Kolors/Kolors-IP-Adapter-Plus, renamed",
    "clip_vision_l.safetensors": "CLIP ViT-L/14 vision model (openai/clip-vit-large-patch14)",
    "sigclip_vision_patch14_384.safetensors": "SigLIP so400m-patch14-384 (ComfyUI's repackaged file)",
    "face.png": "your own photo of a face (InsightFace must find it)",
    "example_embeds.safetensors": "run the graph once with this node bypassed, then copy the file Save Image "
                                  "Prompt Embeds wrote (output/ipadapter/) here under this name",
    HOST_IMAGE: "ships with ComfyUI",
    **{name: "ships with this pack (copied here at its first start)" for name in SHIPPED_IMAGES},
}

# The preset loader picks its files by name from the model's family (ip_core/presets.py): what STANDARD needs on SD1.5.
PRESET_FILES = {"STANDARD (medium strength)": (("models/ipadapter", "ip-adapter_sd15.safetensors"),
                                               ("models/clip_vision", "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"))}


def needed_files(workflow: dict) -> list:
    """(folder, file name) for every file the workflow's loader nodes select, in node order, once each."""
    out = []
    for n in sorted(workflow["nodes"], key=lambda n: n["id"]):
        if n["type"] == "IPAUnifiedLoader":
            found = PRESET_FILES[n["widgets_values"][0]]
        elif n["type"] in LOADERS:
            index, folder = LOADERS[n["type"]]
            found = [(folder, n["widgets_values"][i]) for i in (index if isinstance(index, tuple) else (index,))]
        else:
            continue
        out += [f for f in found if f not in out]
    return out


def note_text(workflow: dict) -> str:
    lines = ["Files this workflow loads (any other file of the same kind works: pick it in the node):"]
    lines += [f"- {folder}/{name}: {SOURCES[name]}" for folder, name in needed_files(workflow)]
    lines.append("Which adapter needs which CLIP vision model: the README's model-file tables.")
    return "\n".join(lines)


def note_node(node_id: int, text: str, pos) -> dict:
    height = 40 + 18 * (text.count("\n") + 1)
    return {"id": node_id, "type": "Note", "pos": list(pos), "size": [520, height], "flags": {}, "order": 0,
            "mode": 0, "inputs": [], "outputs": [], "properties": {"text": ""}, "widgets_values": [text],
            "color": "#432", "bgcolor": "#653"}


def set_note(workflow: dict) -> int:
    """Put the note in the workflow (replacing an earlier one): below the first group's nodes. Returns its id."""
    text = note_text(workflow)
    notes = [n for n in workflow["nodes"] if n["type"] == "Note"]
    if notes:
        notes[0]["widgets_values"] = [text]
        notes[0]["size"][1] = max(notes[0]["size"][1], note_node(0, text, (0, 0))["size"][1])
        return notes[0]["id"]
    node_id = workflow["last_node_id"] + 1
    workflow["last_node_id"] = node_id
    gx, gy, gw, gh = workflow["groups"][0]["bounding"]
    workflow["nodes"].append(note_node(node_id, text, (gx + 10, gy + gh + 40)))
    return node_id


if __name__ == "__main__":
    import json
    import sys
    from pathlib import Path

    here = Path(__file__).resolve()
    sys.path[:0] = [str(here.parents[2]), str(here.parents[1]), str(here.parent)]
    import ipa_pytest_plugin  # noqa: F401  (nodes/ as a package)
    from nodes.registry import NODE_CLASS_MAPPINGS
    from workflow_api import CORE_SCHEMAS
    from workflow_layout import check_layout, relayout

    def schema(node_type):
        return NODE_CLASS_MAPPINGS[node_type].INPUT_TYPES() if node_type in NODE_CLASS_MAPPINGS else CORE_SCHEMAS[node_type]

    for path in sorted((Path(__file__).resolve().parents[2] / "example_workflows").glob("*.json")):
        wf = json.loads(path.read_text())
        had_note = any(n["type"] == "Note" for n in wf["nodes"])
        node_id = set_note(wf)
        relayout(wf, schema, None if had_note else {node_id: 0})
        path.write_text(json.dumps(wf, indent=1) + "\n")
        print(path.name, check_layout(wf, schema) or "ok")
