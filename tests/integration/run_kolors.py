"""Kolors IP-Adapter-Plus inside a real ComfyUI (COMFYUI_PATH), with the widely used pack loaded beside ours:

    python tests/integration/run_kolors.py embeds|faceid|workflow OUT_DIR

A random adapter in the released Kolors layout (Resampler 2048 wide, 12 heads, SDXL's 70 K'/V' pairs) and a
2-layer CLIP vision model of ViT-L/14-336's widths at 336 px (the host's own class). Our Load + Encode nodes
against the pack's own encoder call (at Kolors' 336 px) and its IPAdapter projection (is_kwai_kolors); a
224 px ViT-L is refused by our Encode node.

faceid: Kolors FaceID-Plus at its released shapes (1.2B parameters: a 4096-wide perceiver resampler, 6 tokens,
SDXL's 70 K'/V' pairs) on a narrow SDXL UNet of the host's own class that carries the encoder_hid_proj Kolors
loaders give it (Linear 4096 -> 2048). Our Encode Face + Apply IPAdapter (weight_kolors) against the pack's
IPAdapter FaceID Kolors node, both with the same stand-in face analysis (tests/nodes/face_standin.py: ours behind
load_face_analyzer, the pack's as the installed `insightface` stand-in, both on the same image); every attn2 patch is called with
the same q, k, v for a cond + uncond batch and the image terms compared.

workflow: example_workflows/ipadapter_kolors.json through the host's validator and executor (tiny random models).

Prints one line `RESULT <json>` that test_integration_kolors.py checks.
"""
from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "nodes"))  # face_standin, workflow_api
import comfy_host  # noqa: E402

COMFY = os.environ["COMFYUI_PATH"]


def _rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def embeds(out_dir):
    _, ours, _, ref = comfy_host.boot_with_both_packs(COMFY, out_dir)
    adapters = os.path.join(out_dir, "ipadapter")
    sys.path.insert(0, str(comfy_host.REPO))  # ip_core for building the random adapter file
    from ip_core.adapter import IPAdapter, save_adapter
    from ip_core.config import ResamplerConfig, make_config
    from ip_core.layers import layer_specs

    torch.manual_seed(0)
    resampler = ResamplerConfig(dim=2048, depth=4, dim_head=64, heads=12, num_queries=16, embedding_dim=1024, output_dim=2048)
    adapter = IPAdapter.from_config(make_config("plus", layer_specs("sdxl"), 2048, 1024, resampler=resampler))
    save_adapter(adapter, os.path.join(adapters, "ip_adapter_plus_general.safetensors"))
    del adapter
    loaded = ours["IPALoadAdapter"]().load("ip_adapter_plus_general.safetensors")
    a = loaded["result"][0]
    result = {"description": a.config.description, "ui": loaded.get("ui")}

    cv = comfy_host.small_clip_vision(out_dir, hidden=1024, projection=768, image_size=336)
    g = torch.Generator().manual_seed(1)
    # 336 x 336 8-bit images: the host's clip_preprocess at 336 (the pack's) and our centre crop see the same pixels
    images = torch.round(torch.rand(2, 336, 336, 3, generator=g) * 255) / 255
    mine = ours["IPAEncodeImagePrompt"]().encode(a, cv, images, legacy=True)[0]  # the pack's "no image": a black one
    official = ours["IPAEncodeImagePrompt"]().encode(a, cv, images)[0]  # the official "no image": zero pixel values

    size = 336  # the pack's clipvision_size for Kolors
    cond = ref.encode_image_masked(cv, images, clipvision_size=size).penultimate_hidden_states
    uncond = ref.encode_image_masked(cv, torch.zeros([1, size, size, 3]), clipvision_size=size).penultimate_hidden_states
    pack = ref.IPAdapter(a.adapter.released_state_dict(), cross_attention_dim=2048, output_cross_attention_dim=2048,
                         clip_embeddings_dim=1024, clip_extra_context_tokens=16, is_sdxl=True, is_plus=True,
                         is_kwai_kolors=True).to(torch.float32)
    with torch.no_grad():
        theirs_cond, theirs_uncond = pack.get_image_embeds(cond.float(), uncond.float(), 0)
    # combine 'concat' (both defaults): the two references' tokens side by side; "no image" once per reference
    theirs_cond = torch.cat(list(theirs_cond))[None]
    theirs_uncond = torch.cat([theirs_uncond[0]] * 2)[None]
    result["tokens"], result["uncond_tokens"] = list(mine.cond.shape), list(mine.uncond.shape)
    result["features_tokens"] = int(cond.shape[1])
    result["cond_rel"] = _rel(mine.cond, theirs_cond)
    result["uncond_rel"] = _rel(mine.uncond, theirs_uncond)
    result["official_cond_rel"] = _rel(official.cond, theirs_cond)  # same pixels for 336 px 8-bit images

    small = comfy_host.small_clip_vision(out_dir, hidden=1024, projection=768, image_size=224)
    try:
        ours["IPAEncodeImagePrompt"]().encode(a, small, images)
        result["vit_l_224"] = "accepted"
    except Exception as e:  # the pack's own copy of ip_core's error class (loaded as the custom node package)
        result["vit_l_224"] = f"{type(e).__name__}: {e}"
    print("RESULT " + json.dumps(result))


def _kolors_unet():
    """The host's SDXL model class at narrow channels (the block layout is what the attn2 keys depend on), plus
    the layer Kolors UNet loaders add (ComfyUI-Kolors-MZ's KolorsUNetModel: encoder_hid_proj, Linear 4096 -> 2048)."""
    from run_weight_types import _model

    patcher = _model("sdxl")
    torch.manual_seed(3)
    patcher.model.diffusion_model.encoder_hid_proj = torch.nn.Linear(4096, 2048)
    return patcher


def faceid(out_dir):
    host_nodes, ours, theirs, ref = comfy_host.boot_with_both_packs(COMFY, out_dir)
    from comfy.ldm.modules.attention import optimized_attention
    from face_standin import StandinFaceAnalyzer, install_insightface

    sys.path.append(str(comfy_host.REPO))  # after the host's paths: its `nodes` module stays the host's
    from ip_core.adapter import IPAdapter
    from ip_core.config import make_config
    from ip_core.families import detect_config
    from ip_core.layers import layer_specs
    from run_weight_types import _recorded_transformer_index

    nodes = host_nodes.NODE_CLASS_MAPPINGS
    common = comfy_host.pack_module("common")
    specs = layer_specs("sdxl")
    torch.manual_seed(0)
    adapter = IPAdapter.from_config(make_config("faceid-plus", specs, 2048, 512, num_tokens=6, clip_width=1024,
                                                token_dim=4096)).eval().requires_grad_(False)
    for layer in adapter.ip_layers.values():  # released-like scale, so the image term is not negligible
        for lin in (layer.to_k_ip, layer.to_v_ip):
            lin.weight.normal_(0, 0.02)
    shared = {"image_proj": adapter.image_proj.state_dict(), "ip_adapter": adapter.ip_layers.state_dict()}  # no copies
    config = detect_config(shared)
    a = common.LoadedAdapter(adapter, "Kolors-IP-Adapter-FaceID-Plus.bin")
    result = {"description": config.description, "detected_equal": config == adapter.config,
              "parameters": sum(p.numel() for p in adapter.parameters())}

    analyzer = StandinFaceAnalyzer()
    comfy_host.pack_module("face_analysis").load_face_analyzer = lambda provider, model_name: analyzer
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 320, 256, 3, generator=g)
    rgb = comfy_host.pack_module("nodes_faceid")._to_uint8(image[0])
    # the pack's own InsightFace path on the same face: the stand-in analyses the exact uint8 image ours is given
    standin = install_insightface(analyzer, fixed_rgb=rgb)
    insightface = standin.app()
    cv = comfy_host.small_clip_vision(out_dir, hidden=1024, projection=768, image_size=336)
    embeds, crops = nodes["IPAEncodeFace"]().encode(a, image, "CPU", clip_vision=cv)["result"]
    result["crops"] = list(crops.shape)
    result["tokens"] = list(embeds.cond.shape)

    patcher = _kolors_unet()
    recorded = _recorded_transformer_index(patcher, "sdxl", [s.comfy_key for s in specs])
    qkv = {}
    for s in specs:
        qkv[s.comfy_key] = tuple(torch.randn(2, n, s.hidden_size, generator=g) for n in (16, 8, 8))

    def layer_outputs(model):
        patches = model.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})
        outs = {}
        for s in specs:
            q, k, v = qkv[s.comfy_key]
            t, block, block_index = recorded[s.comfy_key]
            heads = s.hidden_size // 64
            eo = {"n_heads": heads, "dim_head": 64, "block": block, "block_index": block_index, "transformer_index": t,
                  "cond_or_uncond": [0, 1], "sigmas": torch.tensor([5.0]), "original_shape": [2, 4, 4, 4],
                  "attn_precision": None}
            patch = patches.get(s.comfy_key, patches.get(s.comfy_key[:2]))  # the host's lookup
            with torch.no_grad():
                outs[s.comfy_key] = patch(q, k, v, dict(eo)) if patch is not None else optimized_attention(q, k, v, heads)
        return outs

    plain = layer_outputs(patcher)
    apply = nodes["IPAApplyAdapter"]()
    (zero,) = apply.apply(patcher, a, embeds, 0.0, 0.0, 1.0, weight_kolors=1.3)
    zero_out = layer_outputs(zero)
    result["zero_bit_identical"] = all(torch.equal(zero_out[k], plain[k]) for k in plain)
    result["cases"] = {}
    for weight, faceidv2, wk in ((1.0, 1.0, 1.0), (0.8, 0.6, 1.3)):
        (mine,) = apply.apply(patcher, a, embeds, weight, 0.0, 1.0, weight_faceidv2=faceidv2, weight_kolors=wk)
        theirs_model, face_image = theirs["IPAdapterFaceIDKolors"]().apply_ipadapter(
            patcher, shared, weight=weight, weight_faceidv2=faceidv2, weight_kolors=wk, weight_type="linear",
            combine_embeds="concat", start_at=0.0, end_at=1.0, embeds_scaling="V only", image=image, clip_vision=cv,
            insightface=insightface)
        ours_out, their_out = layer_outputs(mine), layer_outputs(theirs_model)
        rel = {"cond": 0.0, "uncond": 0.0}
        compared = with_term = 0
        for s in specs:
            key = s.comfy_key
            if key[0] == "middle":  # the pack registers the middle block under a key the host never calls
                continue
            compared += 1
            term_theirs = their_out[key] - plain[key]
            with_term += int(term_theirs.abs().max() > 0)
            for row, name in ((0, "cond"), (1, "uncond")):
                err = (ours_out[key][row] - their_out[key][row]).norm() / term_theirs[row].norm().clamp_min(1e-30)
                rel[name] = max(rel[name], float(err))
        result["cases"][f"weight {weight}, faceidv2 {faceidv2}, kolors {wk}"] = {
            "term_rel_cond": rel["cond"], "term_rel_uncond": rel["uncond"], "layers_compared": compared,
            "layers_with_image_term": with_term, "face_image": list(face_image.shape)}
        print(result["cases"], file=sys.stderr, flush=True)
        del mine, theirs_model, ours_out, their_out
        gc.collect()
    result["pack_crop_sizes"] = sorted(set(standin.crop_sizes))

    # a plain SDXL model (no encoder_hid_proj): ours refuses naming both sides
    from run_weight_types import _model

    try:
        apply.apply(_model("sdxl"), a, embeds, 1.0, 0.0, 1.0)
        result["plain_sdxl"] = "accepted"
    except Exception as e:
        result["plain_sdxl"] = f"{type(e).__name__}: {e}"
    print("RESULT " + json.dumps(result))


def workflow(out_dir):
    """example_workflows/ipadapter_kolors.json through the host's validator and executor: the checkpoint loader
    retyped to a random full-shape SDXL-layout UNet (Kolors' UNet has SDXL's blocks and widths; 2.6B parameters,
    stored fp16), the text encodes to random 2048-wide conditioning with a 1280-wide pooled output (what a Kolors
    text node hands the sampler), a small ViT-L/14-336-shaped CLIP vision model; 128 px, 2 steps."""
    import numpy as np
    from PIL import Image
    from workflow_api import ui_to_api

    host_nodes, ours, _, _ = comfy_host.boot_with_both_packs(COMFY, out_dir)

    adapters = os.path.join(out_dir, "ipadapter")
    sys.path.append(str(comfy_host.REPO))
    from ip_core.adapter import IPAdapter, save_adapter
    from ip_core.config import ResamplerConfig, make_config
    from ip_core.layers import layer_specs

    torch.manual_seed(0)
    resampler = ResamplerConfig(dim=2048, depth=4, dim_head=64, heads=12, num_queries=16, embedding_dim=1024, output_dim=2048)
    save_adapter(IPAdapter.from_config(make_config("plus", layer_specs("sdxl"), 2048, 1024, resampler=resampler)),
                 os.path.join(adapters, "Kolors-IP-Adapter-Plus.bin"))
    t0 = time.time()
    unet = comfy_host.sdxl_unet()
    model = comfy_host.comfy_model_from_unet(unet, dtype=torch.float16, share_weights=True)
    del unet
    gc.collect()
    _, vae = comfy_host.sd15_clip_and_vae()
    cv = comfy_host.small_clip_vision(out_dir, hidden=1024, projection=768, image_size=336)
    comfy_host.register_random_loaders(host_nodes, model, "kolors text encoder stand-in", vae, cv)

    class TestRandomKolorsText:
        RETURN_TYPES, FUNCTION, CATEGORY = ("CONDITIONING",), "encode", "test"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"clip": ("CLIP",), "text": ("STRING", {"multiline": True})}}

        def encode(self, clip, text):
            g = torch.Generator().manual_seed(len(text))
            return ([[torch.randn(1, 77, 2048, generator=g), {"pooled_output": torch.randn(1, 1280, generator=g)}]],)

    host_nodes.NODE_CLASS_MAPPINGS["TestRandomKolorsText"] = TestRandomKolorsText
    in_dir, out_images = comfy_host.use_io_folders(out_dir)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 260, 3), dtype=np.uint8)).save(os.path.join(in_dir, "example.png"))
    path = comfy_host.REPO / "example_workflows" / "ipadapter_kolors.json"
    prompt = ui_to_api(json.loads(path.read_text()), lambda t: host_nodes.NODE_CLASS_MAPPINGS[t].INPUT_TYPES())
    swap = {"CheckpointLoaderSimple": "TestRandomCheckpoint", "CLIPTextEncode": "TestRandomKolorsText",
            "CLIPVisionLoader": "TestRandomClipVision"}
    for entry in prompt.values():
        entry["class_type"] = swap.get(entry["class_type"], entry["class_type"])
        if entry["class_type"] == "EmptyLatentImage":
            entry["inputs"]["width"] = entry["inputs"]["height"] = 128
        if entry["class_type"] == "KSampler":
            entry["inputs"]["steps"] = 2
    patch = comfy_host.pack_module("nodes.patch")
    calls = []
    original = patch.AdapterBranch.kv

    def counted(self, *args, **kw):
        calls.append(self.label)
        return original(self, *args, **kw)

    patch.AdapterBranch.kv = counted
    result = {"classes": sorted({e["class_type"] for e in prompt.values()}), "build_s": round(time.time() - t0, 1)}
    result.update(comfy_host.validate_and_execute(prompt, path.stem, out_images), image_branch_calls=len(calls))
    print("RESULT " + json.dumps(result, default=str))


if __name__ == "__main__":
    {"embeds": embeds, "faceid": faceid, "workflow": workflow}[sys.argv[1]](sys.argv[2])
