"""FaceID scenarios inside a real ComfyUI (COMFYUI_PATH), one process per call:

    python tests/integration/run_faceid_in_comfy.py faceid_parity|faceid_workflow OUT_DIR

Prints one line `RESULT <json>`. Random full-shape SD1.5 models; the face analysis is the test stand-in
(tests/nodes/face_standin.py) put in place of InsightFace in the pack's face_analysis module.
"""
from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # faceid_reference
sys.path.insert(0, str(HERE.parent / "nodes"))  # face_standin, workflow_api
import comfy_host  # noqa: E402

COMFY = os.environ["COMFYUI_PATH"]
FACEID_FILE = "ip-adapter-faceid_sd15.bin"


def _setup(out_dir: str):
    host_nodes = comfy_host.boot(COMFY)
    adapters = os.path.join(out_dir, "ipadapter")
    os.makedirs(adapters, exist_ok=True)
    comfy_host.load_pack(host_nodes, adapters)
    return host_nodes, adapters


def use_standin_analyzer():
    from face_standin import StandinFaceAnalyzer

    analyzer = StandinFaceAnalyzer()
    comfy_host.pack_module("face_analysis").load_face_analyzer = lambda provider, model_name: analyzer
    return analyzer


def _options(patcher, sigmas):
    import copy

    to = copy.copy(patcher.model_options["transformer_options"])
    to["cond_or_uncond"], to["sigmas"] = [0, 1], sigmas  # samplers._calc_cond_batch: cond chunk, uncond chunk
    return to


def faceid_parity(out_dir):
    """Load -> Encode Face -> Apply (branch + the file's LoRA as weight patches) in the real host, against the
    official LoRA attention processors (written out in tests/faceid_reference.py) on a diffusers UNet."""
    from faceid_reference import OfficialLoRAProcessor

    host_nodes, adapters = _setup(out_dir)
    import comfy.model_management as mm  # importable once the host is booted
    import comfy.utils
    nodes = host_nodes.NODE_CLASS_MAPPINGS
    comfy_host.save_faceid_adapter(os.path.join(adapters, FACEID_FILE))
    use_standin_analyzer()
    loaded = nodes["IPALoadAdapter"]().load(FACEID_FILE)
    a = loaded["result"][0]
    image = torch.rand(1, 256, 200, 3, generator=torch.Generator().manual_seed(0))
    embeds, crops = nodes["IPAEncodeFace"]().encode(a, image, "CPU")["result"]
    g = torch.Generator().manual_seed(1)
    x, ctx = torch.randn(2, 4, 32, 32, generator=g), torch.randn(2, 77, 768, generator=g)  # 32x32: CPU time
    t, sigmas = torch.tensor([500.0, 500.0]), torch.tensor([4.0])
    weight, strength = 0.8, 0.7

    unet = comfy_host.sd15_unet()
    tokens = [torch.cat([embeds.cond, embeds.uncond])]  # the cond chunk gets cond tokens, the uncond chunk uncond
    procs = {}
    ad = a.adapter
    for spec in ad.layers:
        procs[spec.diffusers_name.replace("attn2", "attn1")] = OfficialLoRAProcessor(ad.lora_layers[str(spec.key_number - 1)], strength)
        procs[spec.diffusers_name] = OfficialLoRAProcessor(ad.lora_layers[str(spec.key_number)], strength,
                                                           ad.ip_layers[str(spec.key_number)], tokens, weight)
    all_processors = len(unet.attn_processors)
    with torch.no_grad():
        unet.set_attn_processor(procs)
        ref = unet(x, t, encoder_hidden_states=ctx).sample
    model = comfy_host.comfy_model_from_unet(unet)
    unet_config = model.model.model_config.unet_config
    del unet, procs  # a second full-size UNet is more than a shared CPU box can spare
    gc.collect()

    def run(patcher):
        mm.load_models_gpu([patcher])  # merges the patcher's weight patches (the LoRA), unmerges the previous model's
        with torch.no_grad():
            return patcher.model.diffusion_model(x, timesteps=t, context=ctx, transformer_options=_options(patcher, sigmas))

    plain = run(model)
    apply = nodes["IPAApplyAdapter"]()
    (zero,) = apply.apply(model, a, embeds, 0.0, 0.0, 1.0, faceid_lora_strength=0.0)
    zero_out = run(zero)
    (patched,) = apply.apply(model, a, embeds, weight, 0.0, 1.0, faceid_lora_strength=strength)
    branch = {b for p in patched.model_options["transformer_options"]["patches_replace"]["attn2"].values() for b in p.branches}.pop()
    ours = run(patched)
    again = run(model)  # the LoRA leaves with the patched model

    # Where the patches landed, by the host's own diffusers -> ldm table (comfy/utils.py unet_to_diffusers).
    host_map = {d: "diffusion_model." + l for d, l in comfy.utils.unet_to_diffusers(unet_config).items()}
    targets = comfy_host.pack_module("ip_core.lora").lora_targets(ad)
    landed = sum(host_map.get(tg.diffusers_key) == "diffusion_model." + tg.ldm_key for tg in targets)
    lora_keys = {k for k, v in patched.patches.items() if any(type(p[1]).__name__ == "LoRAAdapter" for p in v)}
    return {
        "shown": loaded["ui"]["text"][0], "crops": list(crops.shape),
        "rel_err": float((ours - ref).abs().max() / ref.abs().max()),
        "differs_from_plain": float((ours - plain).abs().max()),
        "image_branch_layers": branch.calls, "attention_processors": all_processors,
        "lora_targets": len(targets), "lora_patched_keys": len(lora_keys), "landed_on_host_names": landed,
        "zero_bit_identical": bool(torch.equal(plain, zero_out)), "zero_weight_patches": len(zero.patches),
        "unloads_bit_identical": bool(torch.equal(plain, again)),
        "input_model_untouched": not model.patches and "patches_replace" not in model.model_options["transformer_options"],
    }


def faceid_workflow(out_dir):
    """example_workflows/ipadapter_faceid.json through ComfyUI's validator and executor, the checkpoint loader
    swapped for in-memory random SD1.5 models and InsightFace for the stand-in analyzer."""
    import numpy as np
    from PIL import Image
    from workflow_api import ui_to_api

    host_nodes, adapters = _setup(out_dir)
    comfy_host.save_faceid_adapter(os.path.join(adapters, FACEID_FILE))
    analyzer = use_standin_analyzer()
    model = comfy_host.comfy_model_from_unet(comfy_host.sd15_unet())
    clip, vae = comfy_host.sd15_clip_and_vae()

    comfy_host.register_random_loaders(host_nodes, model, clip, vae)
    in_dir, out_images = comfy_host.use_io_folders(out_dir)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (320, 256, 3), dtype=np.uint8)).save(os.path.join(in_dir, "face.png"))

    path = comfy_host.REPO / "example_workflows" / "ipadapter_faceid.json"
    prompt = ui_to_api(json.loads(path.read_text()), lambda t: host_nodes.NODE_CLASS_MAPPINGS[t].INPUT_TYPES())
    for entry in prompt.values():
        if entry["class_type"] == "CheckpointLoaderSimple":
            entry["class_type"] = "TestRandomCheckpoint"
        elif entry["class_type"] == "EmptyLatentImage":
            entry["inputs"]["width"] = entry["inputs"]["height"] = 256
        elif entry["class_type"] == "KSampler":
            entry["inputs"]["steps"] = 2
    res = {"classes": sorted({e["class_type"] for e in prompt.values()})}
    res.update(comfy_host.validate_and_execute(prompt, path.stem, out_images))
    if res["valid"]:
        res["faces_analyzed"] = analyzer.calls
    return res


if __name__ == "__main__":
    scenario, out = sys.argv[1], sys.argv[2]
    sys.path.insert(0, str(comfy_host.REPO))  # ip_core for building random adapter files
    result = {"faceid_parity": faceid_parity, "faceid_workflow": faceid_workflow}[scenario](out)
    print("RESULT " + json.dumps(result, default=str), flush=True)
