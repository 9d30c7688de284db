"""Kolors IP-Adapter-Plus inside a real ComfyUI (COMFYUI_PATH), with the widely used pack loaded beside ours:

    python tests/integration/run_kolors.py embeds OUT_DIR

A random adapter in the released Kolors layout (Resampler 2048 wide, 12 heads, SDXL's 70 K'/V' pairs) and a
2-layer CLIP vision model of ViT-L/14-336's widths at 336 px (the host's own class). Our Load + Encode nodes
against the pack's own encoder call (at Kolors' 336 px) and its IPAdapter projection (is_kwai_kolors); a
224 px ViT-L is refused by our Encode node. Prints one line `RESULT <json>` that test_integration_kolors.py checks.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
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


if __name__ == "__main__":
    {"embeds": embeds}[sys.argv[1]](sys.argv[2])
