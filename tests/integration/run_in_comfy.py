"""Integration scenarios inside a real ComfyUI (COMFYUI_PATH), several per process:

    python tests/integration/run_in_comfy.py SCENARIO[,SCENARIO...] OUT_DIR

Scenarios: pack, parity, parity_plus, ksampler, workflows (random full-shape SD1.5 models, built once per
process and shared), parity_sdxl (a random full-shape SDXL UNet; run it in its own process, it needs ~11 GB).
Prints one line `RESULT <scenario> <json>` per scenario, which test_integration_comfy.py checks.
"""
from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "nodes"))  # workflow_api (UI -> API format)
import comfy_host  # noqa: E402

COMFY = os.environ["COMFYUI_PATH"]
_CACHE = {}  # one host boot, one pack load and one set of random models per process


def _cached(name, make):
    if name not in _CACHE:
        _CACHE[name] = make()
    return _CACHE[name]


def _setup(out_dir: str):
    def make():
        host_nodes = comfy_host.boot(COMFY)
        adapters = os.path.join(out_dir, "ipadapter")
        os.makedirs(adapters, exist_ok=True)
        return host_nodes, comfy_host.load_pack(host_nodes, adapters), adapters
    return _cached("host", make)


def _sd15():
    """(diffusers UNet, the host's model of it) sharing one set of fp32 weights, seed 0."""
    def make():
        unet = comfy_host.sd15_unet()
        return unet, comfy_host.comfy_model_from_unet(unet, share_weights=True)
    return _cached("sd15", make)


def _clip_vision(out_dir):
    return _cached("clip_vision", lambda: comfy_host.small_clip_vision(out_dir))


def pack(out_dir):
    """What ComfyUI's own loader registered: our node ids and display names, and the web extension folder."""
    host_nodes, classes, _ = _setup(out_dir)
    web = [os.path.realpath(d) for d in host_nodes.EXTENSION_WEB_DIRS.values()]
    return {
        "nodes": {k: host_nodes.NODE_DISPLAY_NAME_MAPPINGS.get(k) for k in host_nodes.NODE_CLASS_MAPPINGS if k.startswith("IPA")},
        "web_dir_registered": os.path.realpath(comfy_host.REPO / "web") in web,
        "web_files": sorted(p.name for p in (comfy_host.REPO / "web").glob("*.js")),
    }


def _save_random_adapter(path: str, seed: int = 0, variant: str = "base", base: str = "sd15", encoder_width=None):
    from ip_core.adapter import IPAdapter, save_adapter
    from ip_core.config import make_config
    from ip_core.layers import layer_specs

    torch.manual_seed(seed)
    context_dim = {"sd15": 768, "sdxl": 2048}[base]
    width = encoder_width or (1024 if variant == "base" else 1280)
    adapter = IPAdapter.from_config(make_config(variant, layer_specs(base), context_dim, width))
    if base == "sdxl":  # fp16-representable values (released files are fp16): diffusers stores them as fp16
        with torch.no_grad():
            for p in adapter.parameters():
                p.copy_(p.half().float())
    save_adapter(adapter, path)
    return adapter


def _transformer_options(patcher, cond_or_uncond, sigmas):
    # what samplers._calc_cond_batch hands the model (comfy/samplers.py lines 301-323)
    to = copy.copy(patcher.model_options["transformer_options"])
    to["cond_or_uncond"] = list(cond_or_uncond)
    to["sigmas"] = sigmas
    return to


def _branch(patcher):
    patches = patcher.model_options["transformer_options"]["patches_replace"]["attn2"]
    branches = {b for p in patches.values() for b in p.branches}
    assert len(branches) == 1
    return branches.pop(), patches


def parity(out_dir):
    """Patched ComfyUI UNet vs diffusers' own IP-Adapter (IPAdapterAttnProcessor2_0) on the same weights."""
    host_nodes, classes, adapters = _setup(out_dir)
    _save_random_adapter(os.path.join(adapters, "any name at all.safetensors"))
    t0 = time.time()
    unet, model = _sd15()
    cv = _clip_vision(out_dir)
    loaded = classes["IPALoadAdapter"]().load("any name at all.safetensors")
    adapter = loaded["result"][0]
    image = torch.rand(1, 256, 320, 3, generator=torch.Generator().manual_seed(0))
    (embeds,) = classes["IPAEncodeImagePrompt"]().encode(adapter, cv, image)
    results = {"shown": loaded["ui"]["text"][0], "build_s": round(time.time() - t0, 1)}

    from ip_core.preprocess import preprocess_images

    with torch.no_grad():
        feats = cv.model(pixel_values=preprocess_images(image), intermediate_output=-2)[2].float()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 32, 32, generator=g)
    ctx = torch.randn(2, 77, 768, generator=g)
    t = torch.tensor([500.0, 500.0])
    sigmas = torch.tensor([4.0])

    # diffusers reference: the same UNet weights, the adapter's released state dict, its own processors
    unet._load_ip_adapter_weights([adapter.adapter.released_state_dict()])
    for weight in (1.0, 0.5):
        (patched,) = classes["IPAApplyAdapter"]().apply(model, adapter, embeds, weight, 0.0, 1.0)
        branch, patches = _branch(patched)
        for proc in unet.attn_processors.values():
            if hasattr(proc, "scale"):
                proc.scale = [weight]
        with torch.no_grad():
            ours = patched.model.diffusion_model(x, timesteps=t, context=ctx,
                                                 transformer_options=_transformer_options(patched, [0, 1], sigmas))
            image_embeds = [torch.cat([feats, torch.zeros_like(feats)])[:, None]]  # cond chunk, uncond chunk
            ref = unet(x, t, encoder_hidden_states=ctx, added_cond_kwargs={"image_embeds": image_embeds}).sample
        rel = float((ours - ref).abs().max() / ref.abs().max())
        results[f"weight_{weight}"] = {"rel_err": rel, "image_branch_layers": branch.calls, "patched_keys": len(patches),
                                        "middle_key": [list(k) for k in patches if k[0] == "middle"]}
    with torch.no_grad():
        plain = model.model.diffusion_model(x, timesteps=t, context=ctx, transformer_options=_transformer_options(model, [0, 1], sigmas))
        (zero,) = classes["IPAApplyAdapter"]().apply(model, adapter, embeds, 0.0, 0.0, 1.0)
        zero_out = zero.model.diffusion_model(x, timesteps=t, context=ctx, transformer_options=_transformer_options(zero, [0, 1], sigmas))
    for proc in unet.attn_processors.values():
        if hasattr(proc, "scale"):
            proc.scale = [0.0]
    results["weight_0_bit_identical"] = bool(torch.equal(plain, zero_out))
    results["input_model_untouched"] = "patches_replace" not in model.model_options["transformer_options"]
    return results


def parity_plus(out_dir):
    """The plus (Resampler, 16 tokens, penultimate hidden states) adapter against diffusers, 32x32 latent."""
    host_nodes, classes, adapters = _setup(out_dir)
    _save_random_adapter(os.path.join(adapters, "plus.bin"), seed=3, variant="plus")
    unet, model = _sd15()
    cv = _clip_vision(out_dir)
    adapter = classes["IPALoadAdapter"]().load("plus.bin")["result"][0]
    image = torch.rand(1, 224, 300, 3, generator=torch.Generator().manual_seed(0))
    (embeds,) = classes["IPAEncodeImagePrompt"]().encode(adapter, cv, image, crop="pad")
    (patched,) = classes["IPAApplyAdapter"]().apply(model, adapter, embeds, 0.8, 0.0, 1.0)
    branch, patches = _branch(patched)

    from ip_core.preprocess import preprocess_images

    with torch.no_grad():
        hidden = cv.model(pixel_values=preprocess_images(image, mode="pad"), intermediate_output=-2)[1].float()
        # official plus uncond: an all-zero image in normalised pixel space through the encoder
        uncond = cv.model(pixel_values=torch.zeros(1, 3, 224, 224), intermediate_output=-2)[1].float()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 32, 32, generator=g)
    ctx = torch.randn(2, 77, 768, generator=g)
    t = torch.tensor([300.0, 300.0])
    unet._load_ip_adapter_weights([adapter.adapter.released_state_dict()])
    for proc in unet.attn_processors.values():
        if hasattr(proc, "scale"):
            proc.scale = [0.8]
    with torch.no_grad():
        ours = patched.model.diffusion_model(x, timesteps=t, context=ctx,
                                             transformer_options=_transformer_options(patched, [0, 1], torch.tensor([4.0])))
        ref = unet(x, t, encoder_hidden_states=ctx, added_cond_kwargs={"image_embeds": [torch.cat([hidden, uncond])[:, None]]}).sample
    return {"shown": adapter.description, "rel_err": float((ours - ref).abs().max() / ref.abs().max()),
            "image_branch_layers": branch.calls, "tokens": list(embeds.cond.shape)}


def parity_sdxl(out_dir):
    """SDXL in the real host: a random full-shape SDXL UNet (2.6B parameters, stored fp16, computed fp32 by
    both sides), all 70 cross-attention layers patched, one denoising call against diffusers' own
    IPAdapterAttnProcessor2_0 with the same weights (the host's tensors, shared)."""
    host_nodes, classes, adapters = _setup(out_dir)
    _save_random_adapter(os.path.join(adapters, "sdxl.safetensors"), seed=5, base="sdxl", encoder_width=1280)
    t0 = time.time()
    unet = comfy_host.sdxl_unet()
    model = comfy_host.comfy_model_from_unet(unet, dtype=torch.float16, share_weights=True)
    build_s = time.time() - t0
    cv = comfy_host.small_clip_vision(out_dir, hidden=1664, projection=1280)  # ViT-bigG widths, 2 layers
    loaded = classes["IPALoadAdapter"]().load("sdxl.safetensors")
    adapter = loaded["result"][0]
    image = torch.rand(1, 240, 200, 3, generator=torch.Generator().manual_seed(0))
    (embeds,) = classes["IPAEncodeImagePrompt"]().encode(adapter, cv, image)
    weight = 0.7
    (patched,) = classes["IPAApplyAdapter"]().apply(model, adapter, embeds, weight, 0.0, 1.0)
    branch, patches = _branch(patched)

    from ip_core.preprocess import preprocess_images

    with torch.no_grad():
        feats = cv.model(pixel_values=preprocess_images(image), intermediate_output=-2)[2].float()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 16, 16, generator=g)  # 128 px: every level of the UNet still runs, 70 image branches
    ctx = torch.randn(2, 77, 2048, generator=g)
    pooled = torch.randn(2, 1280, generator=g)
    time_ids = torch.tensor([[256.0, 256.0, 0.0, 0.0, 256.0, 256.0]] * 2)
    t = torch.tensor([400.0, 400.0])
    # the host's SDXL `y`: pooled text embedding + the size/crop conditioning, as diffusers' add_embedding builds it
    y = torch.cat([pooled, unet.add_time_proj(time_ids.flatten()).reshape(2, -1).float()], dim=-1)

    unet._load_ip_adapter_weights([adapter.adapter.released_state_dict()])
    # diffusers stores the adapter in the UNet's dtype and casts its input to it; fp32 (the same, fp16-exact
    # values) keeps the CLIP embedding unrounded, as in the host
    unet.encoder_hid_proj.float()
    for proc in unet.attn_processors.values():
        if hasattr(proc, "to_k_ip"):
            proc.float()
    comfy_host.compute_in_fp32(unet)
    for proc in unet.attn_processors.values():
        if hasattr(proc, "scale"):
            proc.scale = [weight]
    t1 = time.time()
    with torch.no_grad():
        ours = patched.model.diffusion_model(x, timesteps=t, context=ctx, y=y,
                                             transformer_options=_transformer_options(patched, [0, 1], torch.tensor([4.0])))
        ours_s = time.time() - t1
        image_embeds = [torch.cat([feats, torch.zeros_like(feats)])[:, None]]  # cond chunk, uncond chunk
        t1 = time.time()
        ref = unet(x, t, encoder_hidden_states=ctx, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids,
                                                                        "image_embeds": image_embeds}).sample
        ref_s = time.time() - t1
        plain = model.model.diffusion_model(x, timesteps=t, context=ctx, y=y,
                                            transformer_options=_transformer_options(model, [0, 1], torch.tensor([4.0])))
    return {
        "shown": loaded["ui"]["text"][0], "rel_err": float((ours - ref).abs().max() / ref.abs().max()),
        "image_branch_layers": branch.calls, "patched_keys": len(patches),
        "middle_keys": sum(k[0] == "middle" for k in patches), "ip_processors": sum(hasattr(p, "scale") for p in unet.attn_processors.values()),
        "differs_from_plain": float((ours - plain).abs().max() / plain.abs().max()),
        "host_dtype": str(next(model.model.diffusion_model.parameters()).dtype),
        "build_s": round(build_s, 1), "unet_call_s": round(ours_s, 1), "diffusers_call_s": round(ref_s, 1), "seconds": round(time.time() - t0, 1),
    }


def ksampler(out_dir):
    """Load -> Encode -> Apply -> KSampler (the host's sampler) on the random SD1.5 UNet."""
    host_nodes, classes, adapters = _setup(out_dir)
    _save_random_adapter(os.path.join(adapters, "ip.safetensors"))
    _, model = _sd15()
    cv = _clip_vision(out_dir)
    adapter = classes["IPALoadAdapter"]().load("ip.safetensors")["result"][0]
    (embeds,) = classes["IPAEncodeImagePrompt"]().encode(adapter, cv, torch.rand(2, 224, 224, 3), combine="average")
    (patched,) = classes["IPAApplyAdapter"]().apply(model, adapter, embeds, 1.0, 0.0, 1.0)
    branch, _ = _branch(patched)
    g = torch.Generator().manual_seed(0)
    pos = [[torch.randn(1, 77, 768, generator=g), {}]]
    neg = [[torch.randn(1, 77, 768, generator=g), {}]]
    latent = {"samples": torch.zeros(1, 4, 32, 32)}
    steps = 3
    t0 = time.time()
    (out,) = host_nodes.KSampler().sample(patched, 0, steps, 5.0, "euler", "normal", pos, neg, latent)
    with_ip_s = time.time() - t0
    calls_full = branch.calls
    (plain,) = host_nodes.KSampler().sample(model, 0, steps, 5.0, "euler", "normal", pos, neg, latent)
    # a window: only part of the schedule runs the image branch
    (windowed,) = classes["IPAApplyAdapter"]().apply(model, adapter, embeds, 1.0, 0.0, 0.5)
    wbranch, _ = _branch(windowed)
    host_nodes.KSampler().sample(windowed, 0, steps, 5.0, "euler", "normal", pos, neg, latent)
    return {
        "steps": steps, "image_branch_calls": calls_full, "layers_per_unet_call": calls_full / steps,
        "finite": bool(torch.isfinite(out["samples"]).all()), "differs_from_plain": not torch.allclose(out["samples"], plain["samples"]),
        "windowed_calls": wbranch.calls, "windowed_sigma_reads": wbranch.window.syncs, "sample_s": round(with_ip_s, 1),
    }


def workflows(out_dir):
    """Every example workflow through ComfyUI's validator and executor (UI -> API format first).

    Loader nodes are swapped for in-memory random models (no weights exist here); everything else runs as
    saved, with sizes and steps reduced for the CPU. The SDXL workflow needs a 2.6B-parameter UNet: it is
    validated by the host but not executed.
    """
    import numpy as np
    from PIL import Image
    from workflow_api import ui_to_api

    host_nodes, classes, adapters = _setup(out_dir)
    import folder_paths
    sd15_adapter = _save_random_adapter(os.path.join(adapters, "ip-adapter_sd15.safetensors"))
    Path(adapters, "ip-adapter_sdxl.safetensors").write_bytes(b"")  # listed for validation only; never loaded
    _, model = _sd15()
    clip, vae = comfy_host.sd15_clip_and_vae()
    cv = _clip_vision(out_dir)
    # toolkit example: Load IPAdapter (preset) finds the CLIP vision file by its released name; the host's
    # CLIP vision loader is swapped for the small random model, as CLIPVisionLoader is below
    cv_dir = os.path.join(out_dir, "clip_vision")
    os.makedirs(cv_dir, exist_ok=True)
    folder_paths.add_model_folder_path("clip_vision", cv_dir)
    Path(cv_dir, "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors").write_bytes(b"")
    comfy_host.pack_module("nodes.host").load_clip_vision = lambda path: cv

    comfy_host.register_random_loaders(host_nodes, model, clip, vae, cv)
    in_dir, out_images = comfy_host.use_io_folders(out_dir)
    rng = np.random.default_rng(0)
    for name in ("example.png", "style_reference.png", "composition_reference.png", "left_reference.png", "right_reference.png"):
        Image.fromarray(rng.integers(0, 255, (300, 260, 3), dtype=np.uint8)).save(os.path.join(in_dir, name))
    from ip_core.embeds import build_image_prompt
    from ip_core.embeds_file import save_embeds

    save_embeds(build_image_prompt(sd15_adapter, torch.randn(1, 1024), torch.zeros(1, 1024)),
                os.path.join(in_dir, "example_embeds.safetensors"), "a saved image prompt")
    half = np.zeros((256, 256, 3), dtype=np.uint8)
    half[:, :128] = 255
    Image.fromarray(half).save(os.path.join(in_dir, "mask_left.png"))
    Image.fromarray(255 - half).save(os.path.join(in_dir, "mask_right.png"))

    def schema(node_type):
        return host_nodes.NODE_CLASS_MAPPINGS[node_type].INPUT_TYPES()

    results = {}
    executor = comfy_host.prompt_executor()
    for path in sorted((comfy_host.REPO / "example_workflows").glob("*.json")):
        if comfy_host.executed_elsewhere(path.stem):
            continue  # other models than SD1.5's: comfy_host.EXECUTED_ELSEWHERE names the scenario that runs it
        prompt = ui_to_api(json.loads(path.read_text()), schema)
        sdxl = "sdxl" in path.stem
        for entry in prompt.values():
            ct, inp = entry["class_type"], entry["inputs"]
            if ct == "CheckpointLoaderSimple":
                entry["class_type"] = "TestRandomCheckpoint"
            elif ct == "CLIPVisionLoader":
                entry["class_type"] = "TestRandomClipVision"
            elif ct == "EmptyLatentImage":
                inp["width"], inp["height"] = 128, 128  # a 16x16 latent: every UNet level still runs
            elif ct == "KSampler":
                inp["steps"] = 2
        results[path.stem] = comfy_host.validate_and_execute(prompt, path.stem, out_images, executor, execute=not sdxl)
    return results


SCENARIOS = {"pack": pack, "parity": parity, "parity_plus": parity_plus, "ksampler": ksampler, "workflows": workflows,
             "parity_sdxl": parity_sdxl}

if __name__ == "__main__":
    names, out = sys.argv[1].split(","), sys.argv[2]
    sys.path.insert(0, str(comfy_host.REPO))  # ip_core for building random adapter files
    for name in names:
        t0 = time.time()
        result = SCENARIOS[name](out)
        result = {**result, "scenario_s": round(time.time() - t0, 1)} if isinstance(result, dict) and name != "workflows" else result
        print(f"RESULT {name} " + json.dumps(result, default=str), flush=True)
