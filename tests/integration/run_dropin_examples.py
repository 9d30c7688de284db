"""The widely used pack's own 21 example workflows in a real ComfyUI with only one of the two packs:

    python tests/integration/run_dropin_examples.py examples ours|pack OUT_DIR

Every example (UI format, read from IPA_HOSTS_DIR's pack-examples-*.tar.gz, never copied into the project) is
converted as the frontend does, validated by the host and, where it is an SD1.5 graph, executed with the random
full-shape SD1.5 models of run_migrate.py's harness at small size (64x64 latents, 2 steps). Each sampler's final
latent is kept in OUT_DIR/latents-<pack>.pt under "<example>/<node id>". The nodes of other packs the examples use
(ComfyUI_essentials' "+" nodes, the Kolors loaders and text encoder) get test stand-ins declared from the workflow itself.

Prints one line `RESULT <json>`: per example, valid / validation error / node errors, and where run executed / error.
"""
from __future__ import annotations

import asyncio
import glob
import json
import os
import sys
import tarfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "nodes"))
import comfy_host  # noqa: E402

# Not SD1.5 graphs (Kolors UNet and ChatGLM3 text encoder; CosXL edit is SDXL): validated only
# Style & Composition: the pack computes it on SDXL models only (it refuses the SD1.5 models the harness has)
NOT_SD15 = ("IPAdapter_FaceIDv2_Kolors", "ipadapter_kolors", "ipadapter_cosxl_edit", "ipadapter_style_composition")
COMFY = os.environ["COMFYUI_PATH"]
CORE_EXTRAS = ("nodes_custom_sampler.py", "nodes_ip2p.py")  # cosxl_edit's sampler nodes and InstructPixToPix
SAMPLERS = ("KSampler", "SamplerCustomAdvanced")
# the loaders the harness serves with in-memory random models; VAELoader only in the Kolors examples (not run)
SWAP = {"CheckpointLoaderSimple": "TestRandomCheckpoint", "CLIPVisionLoader": "TestRandomClipVision"}


def examples() -> dict:
    """{name: UI workflow} of the pack's examples archive."""
    archives = sorted(glob.glob(str(comfy_host.SHARED_HOSTS / "pack-examples-*.tar.gz")))
    if not archives:
        raise RuntimeError(f"no pack-examples archive in {comfy_host.SHARED_HOSTS}; set IPA_HOSTS_DIR")
    out = {}
    with tarfile.open(archives[-1]) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith(".json"):
                out[Path(member.name).stem] = json.loads(tar.extractfile(member).read())
    return out


def _simple_math(standin_widgets, a=None, b=None):
    """The two expressions the examples give SimpleMath+ (a table, not an evaluator)."""
    value = {'["3"]': lambda: 3, '["a*224"]': lambda: a * 224}[standin_widgets]()
    return (int(value), float(value))


def _combine_conditioning(standin_widgets, **conditionings):
    return ([c for _, cond in sorted(conditionings.items()) for c in cond],)


def _mask_from_rgb(standin_widgets, image):
    """red, green, blue, cyan, magenta, yellow, black, white: a channel above one half (test data only)."""
    r, g, b = (image[..., i] > 0.5 for i in range(3))
    masks = (r & ~g & ~b, g & ~r & ~b, b & ~r & ~g, g & b & ~r, r & b & ~g, r & g & ~b, ~r & ~g & ~b, r & g & b)
    return tuple(m.float() for m in masks)


# what a stand-in computes where an executed example reaches it; identity where the original only sharpens
BEHAVIOUR = {"SimpleMath+": _simple_math, "ImageCASharpening+": lambda standin_widgets, image: (image,),
             "ConditioningCombineMultiple+": _combine_conditioning, "MaskFromRGBCMYBW+": _mask_from_rgb}


STANDINS: set = set()  # the node types of other packs declared as stand-ins so far (for every example after too)


def _standin(node_type: str, nodes: list):
    """A node of another pack, declared from its UI entries in one workflow: the inputs any of them links and the
    outputs with their types; its widget values arrive as one JSON string."""
    inputs = {i["name"]: (i["type"],) for n in nodes for i in n.get("inputs", []) if i.get("link") is not None}
    inputs["standin_widgets"] = ("STRING", {"default": "[]"})

    def run(self, **kw):
        if node_type not in BEHAVIOUR:
            raise RuntimeError(f"test stand-in {node_type} does not compute")
        return BEHAVIOUR[node_type](**kw)

    return type(node_type.replace("+", "Plus"), (), {
        "INPUT_TYPES": classmethod(lambda cls: {"required": {}, "optional": dict(inputs)}),
        "RETURN_TYPES": tuple(o["type"] for o in nodes[0].get("outputs", [])), "FUNCTION": "run", "CATEGORY": "test",
        "run": run})


def _frontend(workflow: dict, host_nodes) -> tuple[dict, set]:
    """The workflow as the frontend sends it: notes left out, PrimitiveNode values kept in their targets' widgets
    (graphToPrompt does so), nodes of other packs declared as stand-ins (one class per type, from all its nodes).
    -> (workflow, their node ids)."""
    wf = json.loads(json.dumps(workflow))
    primitives = {n["id"] for n in wf["nodes"] if n["type"] == "PrimitiveNode"}
    links = {l[0]: l for l in wf["links"]}
    for n in wf["nodes"]:
        for i in n.get("inputs", []):
            link = links.get(i.get("link"))
            if link is not None and link[1] in primitives:
                i["link"] = None
    wf["nodes"] = [n for n in wf["nodes"] if n["type"] not in ("Note", "MarkdownNote", "PrimitiveNode")]
    STANDINS.update(n["type"] for n in wf["nodes"] if n["type"] not in host_nodes.NODE_CLASS_MAPPINGS)
    foreign = set()
    for node_type in {n["type"] for n in wf["nodes"]} & STANDINS:
        nodes = [n for n in wf["nodes"] if n["type"] == node_type]
        host_nodes.NODE_CLASS_MAPPINGS[node_type] = _standin(node_type, nodes)
        for n in nodes:
            n["standin_widgets"], n["widgets_values"] = json.dumps(n.get("widgets_values") or []), []
            foreign.add(str(n["id"]))
    return wf, foreign


def prompt_of(name: str, workflow: dict, host_nodes) -> dict:
    """API prompt: stand-ins and random loaders swapped in, 64x64 latents, 2 steps, each sampler's latent captured."""
    from workflow_api import ui_to_api

    wf, foreign = _frontend(workflow, host_nodes)
    prompt = ui_to_api(wf, lambda t: host_nodes.NODE_CLASS_MAPPINGS[t].INPUT_TYPES())
    widgets = {str(n["id"]): n.get("standin_widgets") for n in wf["nodes"]}
    for nid, entry in list(prompt.items()):
        inputs = entry["inputs"]
        if nid in foreign:
            inputs["standin_widgets"] = widgets[nid]
        if entry["class_type"] in SWAP:
            entry["class_type"] = SWAP[entry["class_type"]]
            inputs = entry["inputs"] = {k: v for k, v in inputs.items() if k in ("ckpt_name", "clip_name")}
        if entry["class_type"] == "EmptyLatentImage":
            inputs["width"] = inputs["height"] = 64
        if entry["class_type"] in ("KSampler", "BasicScheduler"):
            inputs["steps"] = 2
        if entry["class_type"] in SAMPLERS:
            prompt[f"capture-{nid}"] = {"class_type": "TestCaptureLatent", "inputs": {"samples": [nid, 0], "key": f"{name}/{nid}"}}
    return prompt


def _inputs(workflow: dict, in_dir: str, adapters: str, vaes: str) -> None:
    """The files the example names: its images (random pixels) and adapter files the harness has not made (empty:
    only the validator's file lists read them, in examples that are not executed)."""
    import numpy as np
    from PIL import Image

    for n in workflow["nodes"]:
        values = n.get("widgets_values") or []
        if n["type"] == "LoadImage" and not os.path.exists(os.path.join(in_dir, values[0])):
            rng = np.random.default_rng(len(values[0]))
            Image.fromarray(rng.integers(0, 255, (96, 80, 3), dtype=np.uint8)).save(os.path.join(in_dir, values[0]), format="PNG")
        if n["type"] == "IPAdapterModelLoader" and not os.path.exists(os.path.join(adapters, values[0])):
            Path(adapters, values[0]).write_bytes(b"")
        if n["type"] == "VAELoader":
            Path(vaes, values[0]).write_bytes(b"")


def _face_models(out_dir: str, adapters: str) -> None:
    """What the face examples load: the FaceID and FaceID PlusV2 files with their LoRA files and the InsightFace
    folder (run_dropin's face harness), the full-face and FaceID portrait SD1.5 files (random), and the stand-in
    InsightFace both packs call (tests/nodes/face_standin.py)."""
    from face_standin import install_insightface
    from run_dropin import _face_harness

    from ip_core.adapter import IPAdapter, save_adapter
    from ip_core.config import make_config
    from ip_core.layers import layer_specs

    _face_harness(out_dir)
    torch.manual_seed(5)
    save_adapter(IPAdapter.from_config(make_config("full-face", layer_specs("sd15"), 768, 1280)),
                 os.path.join(adapters, "ip-adapter-full-face_sd15.safetensors"))
    comfy_host.save_faceid_adapter(os.path.join(adapters, "ip-adapter-faceid-portrait-v11_sd15.bin"), "faceid-portrait",
                                   rank=0, seed=12)
    install_insightface()


def run_examples(which: str, out_dir: str) -> dict:
    from run_dropin import _boot

    host_nodes, module, adapters = _boot(which, out_dir)
    for extra in CORE_EXTRAS:  # the host's own nodes outside nodes.py that examples use (the server loads them at startup)
        assert asyncio.run(host_nodes.load_custom_node(os.path.join(COMFY, "comfy_extras", extra), module_parent="comfy_extras"))
    import execution
    import folder_paths
    from run_migrate import _harness

    captured = _harness(out_dir, host_nodes, module, adapters)
    _face_models(out_dir, adapters)
    in_dir, vaes = folder_paths.get_input_directory(), os.path.join(out_dir, "vae")
    os.makedirs(vaes, exist_ok=True)
    folder_paths.add_model_folder_path("vae", vaes)
    executor = comfy_host.prompt_executor()
    results = {}
    for name, workflow in sorted(examples().items()):
        _inputs(workflow, in_dir, adapters, vaes)
        prompt = prompt_of(name, workflow, host_nodes)
        valid = asyncio.run(execution.validate_prompt(name, prompt, None))
        res = {"valid": bool(valid[0]), "error": valid[1], "node_errors": valid[3]}
        if valid[0] and name not in NOT_SD15:
            t0 = time.time()
            executor.execute(prompt, name, {}, valid[2])
            errors = [m for m in executor.status_messages if m[0] == "execution_error"]
            res.update(executed=executor.success, error=errors[0][1]["exception_message"] if errors else None,
                       failed_node=errors[0][1]["node_type"] if errors else None, seconds=round(time.time() - t0, 1))
        results[name] = res
    torch.save(dict(captured), os.path.join(out_dir, f"latents-{which}.pt"))
    return results


if __name__ == "__main__":
    scenario, which, out = sys.argv[1], sys.argv[2], sys.argv[3]
    sys.path.insert(0, str(comfy_host.REPO))
    result = {"examples": run_examples}[scenario](which, out)
    print("RESULT " + json.dumps(result, default=str), flush=True)
