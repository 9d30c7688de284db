"""The widely used pack's node ids served by ours (nodes/dropin/), in a real ComfyUI, one pack per process:

    python tests/integration/run_dropin.py interface|compute ours|pack OUT_DIR
    python tests/integration/run_dropin.py orders - OUT_DIR

interface  /object_info's fields of every id of the pack, as the host builds them (server.py node_info)
compute    the graphs programs send (Krita AI Diffusion, SwarmUI; REFERENCE.md section 8) validated and executed
           with random full-shape SD1.5 models (64x64, 2 steps); final latents saved to OUT_DIR/latents-<pack>.pt.
           The face graphs first without InsightFace (refused), then with a stand-in `insightface` module
           (tests/nodes/face_standin.py) that both packs import: FaceID files, the Unified Loader FaceID's LoRA files
orders     both packs loaded, in each order (two host processes are not needed: the loader's dict is inspected
           after each load): which pack's classes serve the ids, and our startup log line

Prints one line `RESULT <json>`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "nodes"))  # workflow_api, pack_workflows, face_standin
import comfy_host  # noqa: E402

COMFY = os.environ["COMFYUI_PATH"]
PACK_IDS_FROM = comfy_host.REPO / "nodes" / "pack_interface.py"


def _pack_ids():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ipa_pack_interface", PACK_IDS_FROM)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.NODES)


def _boot(which, out_dir):
    """The host with only one of the two packs; OUT_DIR/ipadapter an adapter folder. -> (host nodes, pack module)."""
    host_nodes = comfy_host.boot(COMFY)
    import folder_paths

    adapters = os.path.join(out_dir, "ipadapter")
    os.makedirs(adapters, exist_ok=True)
    if which == "ours":
        comfy_host.load_pack(host_nodes, adapters)
        return host_nodes, None, adapters
    _, module = comfy_host.load_reference_pack(host_nodes)
    folder_paths.add_model_folder_path("ipadapter", adapters)
    return host_nodes, module, adapters


def node_info(host_nodes, node_id):
    """The fields server.py's node_info gives a (non-V3) node, description and tooltips left out of the compare."""
    cls = host_nodes.NODE_CLASS_MAPPINGS[node_id]
    types = cls.INPUT_TYPES()
    return {"input": json.loads(json.dumps(types)), "input_order": {k: list(v) for k, v in types.items()},
            "output": list(cls.RETURN_TYPES), "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES))),
            "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)), "name": node_id,
            "display_name": host_nodes.NODE_DISPLAY_NAME_MAPPINGS.get(node_id, node_id),
            "category": getattr(cls, "CATEGORY", "sd"), "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
            "deprecated": bool(getattr(cls, "DEPRECATED", False)), "experimental": bool(getattr(cls, "EXPERIMENTAL", False))}


def interface(which, out_dir):
    host_nodes, _, adapters = _boot(which, out_dir)
    for name in ("ip-adapter_sd15.safetensors", "ip-adapter-plus_sd15.safetensors"):  # the file lists are compared too
        Path(adapters, name).write_bytes(b"")
    return {node_id: node_info(host_nodes, node_id) for node_id in _pack_ids() if node_id in host_nodes.NODE_CLASS_MAPPINGS}


def _base(ksampler_model, key):
    """Checkpoint, prompts, 64x64 latent, KSampler (2 steps) with the given MODEL link, final latent captured."""
    return {
        "ckpt": {"class_type": "TestRandomCheckpoint", "inputs": {"ckpt_name": "model.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {"model": ksampler_model, "seed": 7, "steps": 2, "cfg": 5.0,
                                                         "sampler_name": "euler", "scheduler": "normal", "positive": ["pos", 0],
                                                         "negative": ["neg", 0], "latent_image": ["latent", 0], "denoise": 1.0}},
        "capture": {"class_type": "TestCaptureLatent", "inputs": {"samples": ["sample", 0], "key": key}},
        "image": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "image2": {"class_type": "LoadImage", "inputs": {"image": "mask_left.png"}},
        "clip_vision": {"class_type": "TestRandomClipVision", "inputs": {"clip_name": comfy_host_clip()}},
    }


def comfy_host_clip():
    return "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"


def krita(file, weight_type, refs=2, mask=False):
    """Krita AI Diffusion's image prompt: Model Loader -> one Encoder per reference -> Combine Embeds (concat) ->
    IPAdapter Embeds with clip_vision (ai_diffusion/comfy_workflow.py apply_ip_adapter; attn_mask null unless a mask
    is given)."""
    g = _base(["apply", 0], "krita")
    g["loader"] = {"class_type": "IPAdapterModelLoader", "inputs": {"ipadapter_file": file}}
    embeds = {}
    for i, (img, w) in enumerate((("image", 0.8), ("image2", 0.5))[:refs], 1):
        g[f"enc{i}"] = {"class_type": "IPAdapterEncoder", "inputs": {"ipadapter": ["loader", 0], "image": [img, 0], "weight": w,
                                                                     "clip_vision": ["clip_vision", 0]}}
        embeds[f"embed{i}"] = [f"enc{i}", 0]
    g["combine"] = {"class_type": "IPAdapterCombineEmbeds", "inputs": {"method": "concat", **embeds}}
    g["apply"] = {"class_type": "IPAdapterEmbeds", "inputs": {
        "model": ["ckpt", 0], "ipadapter": ["loader", 0], "pos_embed": ["combine", 0], "clip_vision": ["clip_vision", 0], "weight": 1.0,
        "weight_type": weight_type, "embeds_scaling": "V only", "start_at": 0.0, "end_at": 0.9,
        "attn_mask": ["image2", 1] if mask else None}}
    return g


def swarm_unified(preset, weight_type):
    """SwarmUI with IPAdapterUnifiedLoader: (model, preset) -> IPAdapter(weight_type standard / prompt is more important /
    style transfer)."""
    g = _base(["apply", 0], "swarm")
    g["unified"] = {"class_type": "IPAdapterUnifiedLoader", "inputs": {"model": ["ckpt", 0], "preset": preset}}
    g["apply"] = {"class_type": "IPAdapter", "inputs": {"model": ["unified", 0], "ipadapter": ["unified", 1], "image": ["image", 0],
                                                        "weight": 0.9, "start_at": 0.0, "end_at": 1.0, "weight_type": weight_type}}
    return g


def swarm_advanced(file, combine="concat"):
    """SwarmUI with IPAdapterModelLoader: -> IPAdapterAdvanced (combine_embeds, embeds_scaling V only, clip_vision)."""
    g = _base(["apply", 0], "swarm-adv")
    g["loader"] = {"class_type": "IPAdapterModelLoader", "inputs": {"ipadapter_file": file}}
    g["batch"] = {"class_type": "ImageBatch", "inputs": {"image1": ["image", 0], "image2": ["image2", 0]}}
    g["apply"] = {"class_type": "IPAdapterAdvanced", "inputs": {
        "model": ["ckpt", 0], "ipadapter": ["loader", 0], "image": ["batch", 0], "weight": 1.1, "weight_type": "linear",
        "combine_embeds": combine, "start_at": 0.0, "end_at": 1.0, "embeds_scaling": "V only", "clip_vision": ["clip_vision", 0]}}
    return g


def faces():
    """Krita's face graph: InsightFace Loader -> IPAdapter FaceID (weight_faceidv2 2 x weight)."""
    g = _base(["apply", 0], "faceid")
    g["loader"] = {"class_type": "IPAdapterModelLoader", "inputs": {"ipadapter_file": "ip-adapter_sd15.safetensors"}}
    g["insightface"] = {"class_type": "IPAdapterInsightFaceLoader", "inputs": {"provider": "CPU", "model_name": "buffalo_l"}}
    g["apply"] = {"class_type": "IPAdapterFaceID", "inputs": {
        "model": ["ckpt", 0], "ipadapter": ["loader", 0], "image": ["image", 0], "weight": 0.8, "weight_faceidv2": 1.6,
        "weight_type": "linear", "combine_embeds": "concat", "start_at": 0.0, "end_at": 1.0, "embeds_scaling": "V only",
        "clip_vision": ["clip_vision", 0], "insightface": ["insightface", 0]}}
    return g


def _two_frames(g):
    """Two reference images, two frames (the Batch ids give frame i the i-th image)."""
    g["latent"]["inputs"]["batch_size"] = 2
    g["scaled"] = {"class_type": "ImageScale", "inputs": {"image": ["image2", 0], "upscale_method": "nearest-exact",
                                                          "width": 260, "height": 300, "crop": "disabled"}}
    g["batch"] = {"class_type": "ImageBatch", "inputs": {"image1": ["image", 0], "image2": ["scaled", 0]}}
    return ["batch", 0]


def precise(node_id, boost, frames=False):
    """IPAdapter Precise Style Transfer / Composition (and their Batch ids), plus adapter, a negative image."""
    g = _base(["apply", 0], node_id)
    g["loader"] = {"class_type": "IPAdapterModelLoader", "inputs": {"ipadapter_file": "ip-adapter-plus_sd15.safetensors"}}
    g["apply"] = {"class_type": node_id, "inputs": {
        "model": ["ckpt", 0], "ipadapter": ["loader", 0], "image": _two_frames(g) if frames else ["image", 0], "weight": 0.9,
        boost: 1.5, "combine_embeds": "concat", "start_at": 0.0, "end_at": 1.0, "embeds_scaling": "K+V",
        "image_negative": ["image2", 0], "clip_vision": ["clip_vision", 0]}}
    return g


def enhancer_batch():
    g = _base(["apply", 0], "clip vision enhancer batch")
    g["loader"] = {"class_type": "IPAdapterModelLoader", "inputs": {"ipadapter_file": "ip-adapter-plus_sd15.safetensors"}}
    g["apply"] = {"class_type": "IPAdapterClipVisionEnhancerBatch", "inputs": {
        "model": ["ckpt", 0], "ipadapter": ["loader", 0], "image": _two_frames(g), "weight": 1.0, "weight_type": "ease out",
        "start_at": 0.0, "end_at": 1.0, "embeds_scaling": "V only", "enhance_tiles": 2, "enhance_ratio": 0.5,
        "encode_batch_size": 0, "clip_vision": ["clip_vision", 0]}}
    return g


def embeds_batch():
    """IPAdapter Encoder (two images, one per frame) -> IPAdapter Embeds Batch with the encoder's negative."""
    g = _base(["apply", 0], "embeds batch")
    g["loader"] = {"class_type": "IPAdapterModelLoader", "inputs": {"ipadapter_file": "ip-adapter_sd15.safetensors"}}
    g["enc"] = {"class_type": "IPAdapterEncoder", "inputs": {"ipadapter": ["loader", 0], "image": _two_frames(g), "weight": 0.7,
                                                             "clip_vision": ["clip_vision", 0]}}
    g["apply"] = {"class_type": "IPAdapterEmbedsBatch", "inputs": {
        "model": ["ckpt", 0], "ipadapter": ["loader", 0], "pos_embed": ["enc", 0], "neg_embed": ["enc", 1], "weight": 1.0,
        "weight_type": "linear", "start_at": 0.0, "end_at": 1.0, "embeds_scaling": "V only"}}
    return g


def community_composition():
    g = _base(["apply", 0], "community composition")
    g["unified"] = {"class_type": "IPAdapterUnifiedLoaderCommunity", "inputs": {"model": ["ckpt", 0], "preset": "Composition"}}
    g["apply"] = {"class_type": "IPAdapter", "inputs": {"model": ["unified", 0], "ipadapter": ["unified", 1], "image": ["image", 0],
                                                        "weight": 1.0, "start_at": 0.0, "end_at": 1.0, "weight_type": "standard"}}
    return g


def weights_schedule():
    """IPAdapter Weights (two images, shift batches: image_1 and image_2 two frames each) -> Weights From Strategy ->
    Combine Weights (weights and their inverse) into IPAdapter Batch's weight over the four frames image_1 + image_2;
    the Prompt Schedule from the strategy is the positive text."""
    g = _base(["apply", 0], "weights, schedule")
    images = _two_frames(g)
    g["latent"]["inputs"]["batch_size"] = 4
    g["weights"] = {"class_type": "IPAdapterWeights", "inputs": {
        "weights": "1.0, 0.2", "timing": "ease_in_out", "frames": 2, "start_frame": 0, "end_frame": 9999,
        "add_starting_frames": 0, "add_ending_frames": 0, "method": "shift batches", "image": images}}
    g["again"] = {"class_type": "IPAdapterWeightsFromStrategy", "inputs": {"weights_strategy": ["weights", 5], "image": images}}
    g["joined"] = {"class_type": "IPAdapterCombineWeights", "inputs": {"weights_1": ["again", 0], "weights_2": ["again", 1]}}
    g["schedule"] = {"class_type": "IPAdapterPromptScheduleFromWeightsStrategy", "inputs": {
        "weights_strategy": ["again", 5], "prompt": "a red house\na green field"}}
    g["pos"]["inputs"]["text"] = ["schedule", 0]
    g["frames"] = {"class_type": "ImageBatch", "inputs": {"image1": ["again", 3], "image2": ["again", 4]}}
    g["loader"] = {"class_type": "IPAdapterModelLoader", "inputs": {"ipadapter_file": "ip-adapter_sd15.safetensors"}}
    g["apply"] = {"class_type": "IPAdapterBatch", "inputs": {
        "model": ["ckpt", 0], "ipadapter": ["loader", 0], "image": ["frames", 0], "weight": ["joined", 0],
        "weight_type": "linear", "start_at": 0.0, "end_at": 1.0, "embeds_scaling": "V only", "encode_batch_size": 0,
        "clip_vision": ["clip_vision", 0]}}
    return g


def save_embeds():
    """IPAdapter Encoder -> IPAdapter Save Embeds (the file each pack writes; the test moves it to the input folder)."""
    g = {k: v for k, v in _base(None, "").items() if k in ("image", "clip_vision")}
    g["loader"] = {"class_type": "IPAdapterModelLoader", "inputs": {"ipadapter_file": "ip-adapter-plus_sd15.safetensors"}}
    g["enc"] = {"class_type": "IPAdapterEncoder", "inputs": {"ipadapter": ["loader", 0], "image": ["image", 0], "weight": 1.0,
                                                             "clip_vision": ["clip_vision", 0]}}
    g["save"] = {"class_type": "IPAdapterSaveEmbeds", "inputs": {"embeds": ["enc", 0], "filename_prefix": "dropin"}}
    return g


def load_embeds(name):
    """IPAdapter Load Embeds (the file Save Embeds wrote) -> IPAdapter Embeds."""
    g = _base(["apply", 0], "load embeds")
    g["loader"] = {"class_type": "IPAdapterModelLoader", "inputs": {"ipadapter_file": "ip-adapter-plus_sd15.safetensors"}}
    g["load"] = {"class_type": "IPAdapterLoadEmbeds", "inputs": {"embeds": name}}
    g["apply"] = {"class_type": "IPAdapterEmbeds", "inputs": {
        "model": ["ckpt", 0], "ipadapter": ["loader", 0], "pos_embed": ["load", 0], "weight": 1.0, "weight_type": "linear",
        "start_at": 0.0, "end_at": 1.0, "embeds_scaling": "V only", "clip_vision": ["clip_vision", 0]}}
    return g


def krita_faceid(file, batch=False):
    """Krita's face graph with a FaceID file; batch: IPAdapter FaceID Batch, one face per latent (two of each)."""
    g = faces()
    g["loader"]["inputs"]["ipadapter_file"] = file
    if batch:
        g["apply"]["class_type"] = "IPAAdapterFaceIDBatch"
        g["faces"] = {"class_type": "ImageBatch", "inputs": {"image1": ["image", 0], "image2": ["image2", 0]}}
        g["apply"]["inputs"]["image"] = ["faces", 0]
        g["latent"]["inputs"]["batch_size"] = 2
    return g


def unified_faceid(preset, apply="IPAdapterFaceID"):
    """IPAdapter Unified Loader FaceID (lora_strength 0.6, provider CPU, as SwarmUI sends it): its model (with the
    preset's LoRA) and pipeline (CLIP vision and InsightFace in it) -> IPAdapter FaceID, or SwarmUI's IPAdapter."""
    g = _base(["apply", 0], "unified-faceid")
    g["unified"] = {"class_type": "IPAdapterUnifiedLoaderFaceID", "inputs": {
        "model": ["ckpt", 0], "preset": preset, "lora_strength": 0.6, "provider": "CPU"}}
    inputs = {"model": ["unified", 0], "ipadapter": ["unified", 1], "image": ["image", 0], "weight": 0.85,
              "start_at": 0.0, "end_at": 1.0}
    if apply == "IPAdapter":
        inputs["weight_type"] = "standard"
    else:
        inputs.update(weight_faceidv2=1.4, weight_type="linear", combine_embeds="concat", embeds_scaling="V only")
    g["apply"] = {"class_type": apply, "inputs": inputs}
    return g


GRAPHS = {
    "krita base, 2 references": lambda: krita("ip-adapter_sd15.safetensors", "linear"),
    "krita plus, style transfer": lambda: krita("ip-adapter-plus_sd15.safetensors", "style transfer"),
    "krita plus, 1 reference, mask": lambda: krita("ip-adapter-plus_sd15.safetensors", "composition", refs=1, mask=True),
    "swarm unified standard": lambda: swarm_unified("STANDARD (medium strength)", "standard"),
    "swarm unified, prompt is more important": lambda: swarm_unified("STANDARD (medium strength)", "prompt is more important"),
    "swarm advanced base": lambda: swarm_advanced("ip-adapter_sd15.safetensors"),
    "swarm advanced plus, average": lambda: swarm_advanced("ip-adapter-plus_sd15.safetensors", "average"),
    # the pack's other ids, as a program would send them
    "precise style transfer": lambda: precise("IPAdapterPreciseStyleTransfer", "style_boost"),
    "precise style transfer batch": lambda: precise("IPAdapterPreciseStyleTransferBatch", "style_boost", frames=True),
    "precise composition batch": lambda: precise("IPAdapterPreciseCompositionBatch", "composition_boost", frames=True),
    "clip vision enhancer batch": enhancer_batch,
    "embeds batch": embeds_batch,
    "community composition": community_composition,
    "weights, schedule": weights_schedule,
}
# run with the stand-in InsightFace (tests/nodes/face_standin.py) installed for both packs
FACEID_FILE, PLUSV2_FILE = "ip-adapter-faceid_sd15.bin", "ip-adapter-faceid-plusv2_sd15.bin"
# (IPAdapter FaceID with the PlusV2 file: through the Unified Loader; from the Model Loader: the Batch id)
FACE_GRAPHS = {
    "krita faceid": lambda: krita_faceid(FACEID_FILE),
    "faceid batch, plus v2": lambda: krita_faceid(PLUSV2_FILE, batch=True),
    "unified FACEID": lambda: unified_faceid("FACEID"),
    "unified FACEID PLUS V2": lambda: unified_faceid("FACEID PLUS V2"),
    "swarm unified FACEID PLUS V2, IPAdapter": lambda: unified_faceid("FACEID PLUS V2", apply="IPAdapter"),
}


def _face_harness(out_dir):
    """Random full-shape FaceID / FaceID PlusV2 adapters (rank-128 LoRA inside, as released), their separate LoRA
    files in a loras folder (other random weights than the adapters' own LoRA, so the two are told apart), an
    InsightFace model folder with the files our loader checks for (empty: the stand-in reads none)."""
    import folder_paths

    adapters, loras = os.path.join(out_dir, "ipadapter"), os.path.join(out_dir, "loras")
    os.makedirs(loras, exist_ok=True)
    for i, (file, variant) in enumerate(((FACEID_FILE, "faceid"), (PLUSV2_FILE, "faceid-plus"))):
        comfy_host.save_faceid_adapter(os.path.join(adapters, file), variant, rank=128, seed=10 + i)
        other = comfy_host.save_faceid_adapter(None, variant, rank=128, seed=20 + i)
        comfy_host.save_faceid_lora_file(os.path.join(loras, file.replace(".bin", "_lora.safetensors")), other)
    folder_paths.add_model_folder_path("loras", loras)
    # models/insightface/models/buffalo_l, where both packs look (folder_paths.models_dir), inside OUT_DIR
    folder_paths.models_dir = os.path.join(out_dir, "models")
    buffalo = os.path.join(folder_paths.models_dir, "insightface", "models", "buffalo_l")
    os.makedirs(buffalo, exist_ok=True)
    for name in ("det_10g.onnx", "w600k_r50.onnx"):
        Path(buffalo, name).write_bytes(b"")


def compute(which, out_dir):
    host_nodes, module, adapters = _boot(which, out_dir)
    from run_migrate import _harness, _run

    from face_standin import install_insightface

    captured = _harness(out_dir, host_nodes, module, adapters)
    start = time.time()
    _face_harness(out_dir)
    face_files_seconds = round(time.time() - start, 1)
    executor = comfy_host.prompt_executor()
    results, latents = {}, {}

    def run(name, graph):
        graph["capture"]["inputs"]["key"] = name
        start = time.time()
        results[name] = _run(executor, graph, name)
        results[name]["seconds"] = round(time.time() - start, 1)
        if name in captured:
            latents[name] = captured.pop(name)

    for name, make in GRAPHS.items():
        run(name, make())
    start = time.time()
    results["save embeds"] = _run(executor, save_embeds(), "save embeds")
    results["load embeds"] = _load_saved_embeds(executor, captured, latents)
    results["load embeds"]["seconds"] = round(time.time() - start, 1)
    run("faceid", faces())  # without InsightFace: refused with what to install
    standin = install_insightface()
    for name, make in FACE_GRAPHS.items():
        run(name, make())
    results["insightface stand-in"] = {"faces analysed": standin.analyzer.calls, "crop sizes": sorted(set(standin.crop_sizes)),
                                       "detection sizes": sorted(set(standin.detection_sizes)),
                                       "seconds to write the face files": face_files_seconds}
    torch.save(latents, os.path.join(out_dir, f"latents-{which}.pt"))
    return results


def _load_saved_embeds(executor, captured, latents):
    """The embeds file Save Embeds wrote (in the output folder) moved where Load Embeds lists files, then loaded."""
    import shutil

    import folder_paths
    from run_migrate import _run

    out, into = folder_paths.get_output_directory(), folder_paths.get_input_directory()
    saved = sorted(f for f in os.listdir(out) if f.startswith("dropin") and f.endswith(".ipadpt"))
    if len(saved) != 1:
        return {"executed": False, "error": f"Save Embeds wrote {saved}"}
    shutil.move(os.path.join(out, saved[0]), os.path.join(into, saved[0]))
    graph = load_embeds(saved[0])
    graph["capture"]["inputs"]["key"] = "load embeds"
    result = _run(executor, graph, "load embeds")
    if "load embeds" in captured:
        latents["load embeds"] = captured.pop("load embeds")
    return result


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def orders(_, out_dir):
    """Both packs installed, ours loaded first (it finds the pack in custom_nodes and leaves the ids to it; were it
    missed, the host's loader lets the pack overwrite them anyway), and the pack first (ours finds it imported)."""
    results = {}
    for order in ("ours first", "pack first", "ours only, opted out", "ours only"):
        env = {"IPADAPTER_DROPIN": "off"} if "opted out" in order else {}
        code = (f"import sys, json, logging; sys.path.insert(0, {str(HERE)!r}); import run_dropin as r; "
                f"print('RESULT ' + json.dumps(r.one_order({order!r}, {out_dir!r})))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **env})
        lines = [ln[7:] for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        results[order] = json.loads(lines[-1]) if lines else {"failed": proc.stderr[-3000:]}
    return results


def one_order(order, out_dir):
    host_nodes = comfy_host.boot(COMFY)
    import folder_paths

    # installed as users have it: the pack's folder inside a custom_nodes folder
    if not order.startswith("ours only"):
        folder_paths.add_model_folder_path("custom_nodes", str(comfy_host.reference_pack_dir().parent))
    handler = _Lines()
    logging.getLogger("ipadapter").addHandler(handler)
    logging.getLogger("ipadapter").setLevel(logging.INFO)
    if order.startswith("ours only"):
        comfy_host.load_pack(host_nodes, os.path.join(out_dir, "ipadapter"))
    elif order == "ours first":
        comfy_host.load_pack(host_nodes, os.path.join(out_dir, "ipadapter"))
        comfy_host.load_reference_pack(host_nodes)
    else:
        path = comfy_host.reference_pack_dir()
        assert asyncio.run(host_nodes.load_custom_node(str(path)))
        comfy_host.load_pack(host_nodes, os.path.join(out_dir, "ipadapter"))
    ids = _pack_ids()
    serving = {host_nodes.NODE_CLASS_MAPPINGS[i].__module__.rsplit(".", 1)[-1] for i in ids
               if i in host_nodes.NODE_CLASS_MAPPINGS}
    return {"serving_modules": sorted(serving), "log": [ln for ln in handler.lines if "ComfyUI_IPAdapter_plus node ids" in ln],
            "pack_ids_served": sum(i in host_nodes.NODE_CLASS_MAPPINGS for i in ids), "our_ids": sum(1 for k in host_nodes.NODE_CLASS_MAPPINGS if k.startswith("IPA") and k not in ids)}


if __name__ == "__main__":
    scenario, which, out = sys.argv[1], sys.argv[2], sys.argv[3]
    sys.path.insert(0, str(comfy_host.REPO))
    result = {"interface": interface, "compute": compute, "orders": orders}[scenario](which, out)
    print("RESULT " + json.dumps(result, default=str), flush=True)
