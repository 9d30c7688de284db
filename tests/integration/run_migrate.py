"""Migration scenarios in a real ComfyUI with both packs loaded (ours and ComfyUI_IPAdapter_plus):

    python tests/integration/run_migrate.py table|convert|parity OUT_DIR

table    nodes/migrate_table.py against the pack's real INPUT_TYPES / RETURN_TYPES (and the host's CLIPVisionLoader)
convert  a self-made workflow for every node of the pack, converted (UI and API format): validated by the
         host, executed where every node converted (64x64, 2 steps, random full-shape SD1.5 models)
parity   the pack's own run of a workflow vs ours converted with --legacy: final latents compared
         (our corrected default differs from it by design; tests/nodes/test_nodes_legacy.py shows where)

Prints one line `RESULT <json>`. Loader nodes are swapped for in-memory random models (no weights exist here).
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "nodes"))  # workflow_api, pack_workflows
import comfy_host  # noqa: E402

COMFY = os.environ["COMFYUI_PATH"]
CLIP_H = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"


def _boot(out_dir):
    host_nodes = comfy_host.boot(COMFY)
    adapters = os.path.join(out_dir, "ipadapter")
    os.makedirs(adapters, exist_ok=True)
    comfy_host.load_pack(host_nodes, adapters)
    pack_classes, pack_module = comfy_host.load_reference_pack(host_nodes)
    return host_nodes, adapters, pack_classes, pack_module


def _input_specs(input_types):
    out = []
    for section in ("required", "optional"):
        for name, spec in (input_types.get(section) or {}).items():
            t = spec[0]
            out.append(f"{name}:{'COMBO' if isinstance(t, (list, tuple)) else t}")
    return out


def table_check(out_dir):
    """Every pack node in the table with the real input order, types and outputs; nothing extra."""
    host_nodes, _, pack_classes, _ = _boot(out_dir)
    from pack_workflows import table

    mismatches = {}
    for node_id, cls in pack_classes.items():
        entry = table.PACK.get(node_id)
        if entry is None:
            mismatches[node_id] = "missing from the table"
            continue
        real_in, real_out = _input_specs(cls.INPUT_TYPES()), list(cls.RETURN_TYPES)
        ours_in, ours_out = list(entry["required"] + entry["optional"]), list(entry["outputs"])
        if real_in != ours_in or real_out != ours_out:
            mismatches[node_id] = {"real": [real_in, real_out], "table": [ours_in, ours_out]}
    extra = sorted(set(table.PACK) - set(pack_classes) - set(table.FIRST_GENERATION))  # those: the pack's past
    clip = table.OURS["CLIPVisionLoader"]
    host_clip = _input_specs(host_nodes.NODE_CLASS_MAPPINGS["CLIPVisionLoader"].INPUT_TYPES())
    ours_real = {}
    for t, spec in table.OURS.items():
        cls = host_nodes.NODE_CLASS_MAPPINGS[t]
        ours_real[t] = (_input_specs(cls.INPUT_TYPES()) == list(spec["required"] + spec["optional"])
                        and list(cls.RETURN_TYPES) == list(spec["outputs"]))
    return {"pack_nodes": len(pack_classes), "mismatches": mismatches, "extra_in_table": extra,
            "first_generation_gone": sorted(set(table.FIRST_GENERATION) - set(pack_classes)),
            "clip_loader_matches": host_clip == list(clip["required"] + clip["optional"]), "ours_match": ours_real}


def _harness(out_dir, host_nodes, pack_module, adapters):
    """Random models behind the loaders; inputs on disk; a node that keeps the final latent."""
    import folder_paths
    import numpy as np
    from PIL import Image

    from ip_core.adapter import IPAdapter, save_adapter
    from ip_core.config import make_config
    from ip_core.layers import layer_specs

    for name, variant, seed in (("ip-adapter_sd15.safetensors", "base", 0), ("ip-adapter-plus_sd15.safetensors", "plus", 3),
                                ("ip_plus_composition_sd15.safetensors", "plus", 4)):
        torch.manual_seed(seed)
        save_adapter(IPAdapter.from_config(make_config(variant, layer_specs("sd15"), 768, 1024 if variant == "base" else 1280)),
                     os.path.join(adapters, name))
    model = comfy_host.comfy_model_from_unet(comfy_host.sd15_unet())
    clip, vae = comfy_host.sd15_clip_and_vae()
    cv = comfy_host.small_clip_vision(out_dir)
    clip_dir = os.path.join(out_dir, "clip_vision")
    os.makedirs(clip_dir, exist_ok=True)
    Path(clip_dir, CLIP_H).write_bytes(b"")  # found by name by the pack's Unified Loader; loaded as `cv`
    folder_paths.add_model_folder_path("clip_vision", clip_dir)
    if pack_module is not None:  # the Unified Loader's own load call, pointed at the random model
        pack_module.load_clip_vision = lambda path: cv
    if "IPAUnifiedLoader" in host_nodes.NODE_CLASS_MAPPINGS:  # ours finds the same file by name; the same model
        sys.modules[host_nodes.NODE_CLASS_MAPPINGS["IPAUnifiedLoader"].__module__].host.load_clip_vision = lambda path: cv
    captured = {}

    class TestCaptureLatent:
        RETURN_TYPES, FUNCTION, CATEGORY, OUTPUT_NODE = (), "keep", "test", True

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"samples": ("LATENT",), "key": ("STRING", {})}}

        def keep(self, samples, key):
            captured[key] = samples["samples"].clone()
            return ()

    comfy_host.register_random_loaders(host_nodes, model, clip, vae, cv)
    host_nodes.NODE_CLASS_MAPPINGS["TestCaptureLatent"] = TestCaptureLatent
    in_dir, out_images = comfy_host.use_io_folders(out_dir)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 260, 3), dtype=np.uint8)).save(os.path.join(in_dir, "example.png"))
    half = np.zeros((64, 64, 4), dtype=np.uint8)
    half[:, :32] = 255
    Image.fromarray(half).save(os.path.join(in_dir, "mask_left.png"))
    return captured


def _prompt(workflow, host_nodes, key):
    """UI workflow -> API prompt the host runs: notes dropped, loaders swapped, the final latent captured."""
    from workflow_api import ui_to_api

    wf = dict(workflow, nodes=[n for n in workflow["nodes"] if n["type"] not in ("Note", "MarkdownNote")])
    prompt = ui_to_api(wf, lambda t: host_nodes.NODE_CLASS_MAPPINGS[t].INPUT_TYPES())
    return _swap(prompt, key)


def _swap(prompt, key):
    for nid, entry in list(prompt.items()):
        if entry["class_type"] == "CheckpointLoaderSimple":
            entry["class_type"] = "TestRandomCheckpoint"
        elif entry["class_type"] == "CLIPVisionLoader":
            entry["class_type"] = "TestRandomClipVision"
        elif entry["class_type"] == "KSampler":
            prompt["capture"] = {"class_type": "TestCaptureLatent", "inputs": {"samples": [nid, 0], "key": key}}
    return prompt


def _run(executor, prompt, name, execute=True):
    import execution

    valid = asyncio.run(execution.validate_prompt(name, prompt, None))
    res = {"valid": bool(valid[0]), "error": valid[1], "node_errors": valid[3]}
    if valid[0] and execute:
        executor.execute(prompt, name, {}, valid[2])
        errors = [m for m in executor.status_messages if m[0] == "execution_error"]
        res["executed"] = executor.success
        res["error"] = errors[0][1]["exception_message"] if errors else None
    return res


# converted and validated, but not executed here: FaceID needs InsightFace and its models, Load Embeds a file,
# Enhancer Batch one frame per reference (one image enhanced gives two, the chain has one frame)
NOT_EXECUTED = ("IPAdapterFaceID", "IPAAdapterFaceIDBatch", "IPAdapterUnifiedLoaderFaceID", "IPAdapterInsightFaceLoader",
                "IPAdapterLoadEmbeds", "IPAdapterClipVisionEnhancerBatch", "IPAdapterFaceIDKolors",
                "IPAdapterApplyFaceID", "InsightFaceLoader", "PrepImageForInsightFace")


def convert_all(out_dir):
    """Each pack node's workflow converted and validated (UI and API); one workflow chaining every node that
    converts, executed once (one sampling run on the CPU is what the suite can afford)."""
    host_nodes, adapters, _, pack_module = _boot(out_dir)  # first: ComfyUI owns the module name `nodes`
    from pack_workflows import api_of, chained_workflow, migrate, pack_workflow, table

    convert = migrate.convert
    _harness(out_dir, host_nodes, pack_module, adapters)
    executor = comfy_host.prompt_executor()
    results = {}
    for node_type in table.PACK:
        wf = pack_workflow(node_type)
        new, report = convert(wf, legacy=False)
        complete = not any(n["type"] in table.PACK for n in new["nodes"]) and not report.of("problem")
        res = {"ui": _run(executor, _prompt(new, host_nodes, node_type), node_type, execute=False),
               "complete": complete}
        api, _ = convert(api_of(wf), legacy=True)
        res["api"] = _run(executor, _swap(api, node_type + "-api"), node_type + "-api", execute=False)
        res["api_same_nodes"] = sorted(e["class_type"] for e in api.values()) == sorted(
            e["class_type"] for e in _prompt(new, host_nodes, "x").values())
        results[node_type] = res
    chain, chained = chained_workflow([t for t, r in results.items() if r["complete"] and t not in NOT_EXECUTED])
    new, report = convert(chain)
    run = _run(executor, _prompt(new, host_nodes, "chain"), "chain")
    results["chain"] = {**run, "pack_nodes": chained, "problems": [str(n) for n in report.of("problem")],
                        "applies": sum(n["type"] == "IPAApplyAdapter" for n in new["nodes"])}
    return results


def parity(out_dir):
    """The pack's run of its workflow vs ours converted with --legacy: final latents (64x64, 2 steps)."""
    host_nodes, adapters, _, pack_module = _boot(out_dir)
    from pack_workflows import migrate, pack_workflow

    captured = _harness(out_dir, host_nodes, pack_module, adapters)
    executor = comfy_host.prompt_executor()
    cases = {
        "IPAdapter (Unified Loader, base)": pack_workflow("IPAdapter", {"weight": 0.8}),
        "IPAdapterAdvanced (plus, end_at 0.6)": pack_workflow("IPAdapterAdvanced", {"weight": 1.2, "end_at": 0.6}),
    }
    for n in cases["IPAdapterAdvanced (plus, end_at 0.6)"]["nodes"]:
        if n["type"] == "IPAdapterModelLoader":
            n["widgets_values"] = ["ip-adapter-plus_sd15.safetensors"]
    results = {}
    for name, wf in cases.items():
        runs = {}
        for label, workflow in (("pack", wf), ("legacy", migrate.convert(wf, legacy=True)[0])):
            key = f"{name} {label}"
            res = _run(executor, _prompt(workflow, host_nodes, key), key)
            assert res.get("executed") and res["error"] is None, (key, res)
            runs[label] = captured[key]
        ref = runs["pack"]
        results[name] = {"rel_err_legacy": float((runs["legacy"] - ref).abs().max() / ref.abs().max()),
                         "finite": bool(torch.isfinite(ref).all()), "shape": list(ref.shape)}
    return results


if __name__ == "__main__":
    scenario, out = sys.argv[1], sys.argv[2]
    sys.path.insert(0, str(comfy_host.REPO))
    result = {"table": table_check, "convert": convert_all, "parity": parity}[scenario](out)
    print("RESULT " + json.dumps(result, default=str), flush=True)
