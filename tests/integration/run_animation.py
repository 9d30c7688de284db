"""Frames and tiles in the real host, against the widely used pack loaded beside ours (comfy_host):

    python tests/integration/run_animation.py parity OUT_DIR

Prints one line `RESULT <json>` that test_integration_animation.py checks. The pack's functions are only
called, never copied: its tiled node's tiles and masks, its tile merges, its weight schedules, and its
attention patch with one reference / weight / mask per frame inside AnimateDiff context windows.
"""
from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_host  # noqa: E402

COMFY = os.environ["COMFYUI_PATH"]


def _pack_module(path_suffix: str):
    for mod in list(sys.modules.values()):
        f = getattr(mod, "__file__", "") or ""
        if f.endswith(path_suffix) and "ComfyUI_IPAdapter_plus" in f:
            return mod
    raise KeyError(path_suffix)


def parity(out_dir, sections=("tiles", "enhance", "weights", "windows")):
    host_nodes = comfy_host.boot(COMFY)
    adapters = os.path.join(out_dir, "ipadapter")
    os.makedirs(adapters, exist_ok=True)
    comfy_host.load_pack(host_nodes, adapters)
    ref_nodes, ref = comfy_host.load_reference_pack(host_nodes)
    ref_utils = _pack_module("ComfyUI_IPAdapter_plus/utils.py")
    ours = {k: host_nodes.NODE_CLASS_MAPPINGS[k] for k in ("IPALoadAdapter", "IPAEncodeImagePrompt", "IPAApplyAdapter", "IPAFrameWeights")}
    from ip_core import frames, tiles
    from ip_core.adapter import IPAdapter, save_adapter
    from ip_core.config import make_config
    from ip_core.layers import layer_specs

    torch.manual_seed(0)
    save_adapter(IPAdapter.from_config(make_config("base", layer_specs("sd15"), 768, 1024)), os.path.join(adapters, "base.safetensors"))
    adapter = ours["IPALoadAdapter"]().load("base.safetensors")["result"][0]
    ref_adapter = ref_utils.ipadapter_model_loader(os.path.join(adapters, "base.safetensors"))
    cv = comfy_host.small_clip_vision(out_dir)
    results = {}

    # 1. tiles and masks of the pack's tiled node, for references of several shapes, with and without a mask
    g = torch.Generator().manual_seed(0)
    tile_cases = []
    for hw in () if "tiles" not in sections else ((300, 260), (200, 300), (600, 200), (90, 700), (48, 40)):
        image = torch.rand(2, *hw, 3, generator=g)
        for mask in (None, torch.rand(1, 33, 47, generator=g)):
            model, ref_tiles, ref_masks = ref_nodes["IPAdapterTiled"]().apply_tiled(
                comfy_host.tiny_patcher(), ref_adapter, image, 1.0, "linear", 0.0, 1.0, 0.0, clip_vision=cv, attn_mask=mask)
            lay = tiles.tile_layout(*hw)
            got_tiles = tiles.tile_images(image, lay)
            got_masks = tiles.tile_masks(lay, mask)
            case = {"shape": hw, "mask": mask is not None, "tiles": lay.count,
                    "tiles_equal": torch.equal(got_tiles.reshape(-1, *got_tiles.shape[2:]), ref_tiles),
                    "masks_equal": torch.equal(got_masks.reshape(-1, *got_masks.shape[2:]), ref_masks)}
            if mask is None and hw == (200, 300):
                # tokens: the pack's per-tile cond vs ours (a) from the same encoder pixels, (b) end to end
                kwargs = model.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 1)].kwargs
                (emb,) = ours["IPAEncodeImagePrompt"]().encode(adapter, cv, image, tiles="tiled")
                import comfy.clip_vision

                same_pixels, end_to_end = 0.0, 0.0
                for t, kw in enumerate(kwargs):
                    px = comfy.clip_vision.clip_preprocess(got_tiles[t], size=224).float()
                    with torch.no_grad():
                        feats = cv.model(pixel_values=px, intermediate_output=-2)[2]
                        mine = adapter.adapter.project(feats).reshape(1, -1, 768)
                    theirs = kw["cond"].float().reshape(1, -1, 768)  # the pack keeps [images, 4, 768]; concat = side by side
                    same_pixels = max(same_pixels, float((mine - theirs).abs().max()))
                    end_to_end = max(end_to_end, float((emb.cond[t:t + 1] - theirs).abs().max()))
                case.update(tokens_same_pixels_max_abs=same_pixels, tokens_end_to_end_max_abs=end_to_end,
                            tokens_scale=float(emb.cond.abs().max()), pack_tiles_applied=len(kwargs))
            tile_cases.append(case)
    results["tiles"] = tile_cases

    if "enhance" in sections:
        results["enhance"] = _enhance(cv, ref_utils, tiles, g)
    if "weights" in sections:
        results["weights"] = _weights(ref_nodes, ours, frames, g)
    if "windows" in sections:
        results["windows"] = _windows(ref, ref_adapter, adapter, ours, g)
    return results


def _enhance(cv, ref_utils, tiles, g):
    # 2. enhance: the grid split and the two merges, on the same inputs
    image = torch.rand(2, 230, 310, 3, generator=g)
    emb_in, hid_in = torch.randn(2 * 9, 1024, generator=g), torch.randn(2 * 9, 257, 1280, generator=g)
    out = {
        "split_equal": torch.equal(tiles.grid_tiles(image, 3), ref_utils.split_tiles(image, 3)),
        "merge_embeds_equal": torch.equal(tiles.merge_grid_embeds(emb_in, 3), ref_utils.merge_embeddings(emb_in, 3)),
        "merge_hidden_equal": torch.equal(tiles.merge_grid_hidden(hid_in, 3), ref_utils.merge_hiddenstates(hid_in, 3)),
    }
    one = image[:1, :224, :224]
    ref_enh = ref_utils.encode_image_masked(cv, one, tiles=2, ratio=0.6)
    with torch.no_grad():
        import comfy.clip_vision

        whole = cv.model(pixel_values=comfy.clip_vision.clip_preprocess(one, size=224).float(), intermediate_output=-2)[2]
        parts = tiles.grid_tiles(one, 2)[0]
        split = cv.model(pixel_values=comfy.clip_vision.clip_preprocess(parts, size=224).float(), intermediate_output=-2)[2]
    mine = tiles.enhance(whole, tiles.merge_grid_embeds(split, 2), 0.6)
    out["image_embeds_same_pixels_max_abs"] = float((mine - ref_enh["image_embeds"].detach()).abs().max())
    return out


def _weights(ref_nodes, ours, frames, g):
    # 3. weight schedules
    imgs = torch.rand(6, 4, 4, 3, generator=g)
    cases = []
    for timing in frames.TIMINGS:
        for method in frames.METHODS:
            for n_img in (0, 2, 3, 4, 5, 6):
                for w, fr, sf, ef, a, e in (("0.2, 1", 8, 0, 9999, 0, 0), ("1, 0.5, 0", 6, 1, 5, 2, 3), ("0, 0.3\n1", 5, 0, 4, 0, 1),
                                            ("0.1,0.7", 11, 3, 9, 1, 0), ("0.5", 0, 0, 9999, 0, 2)):
                    random.seed(11)
                    image = imgs[:n_img] if n_img else None
                    theirs = ref_nodes["IPAdapterWeights"]().weights(w, timing, fr, sf, ef, a, e, method, image=image)
                    mine = ours["IPAFrameWeights"]().schedule(w, timing, fr, sf, ef, a, e, method, image=image, seed=11)
                    same = theirs[0] == mine[0] and theirs[1] == mine[1] and theirs[2] == mine[2]
                    for k in (3, 4):
                        same = same and ((theirs[k] is None and mine[k] is None) or
                                         (theirs[k] is not None and mine[k] is not None and torch.equal(theirs[k], mine[k])))
                    cases.append(same)
    return {"cases": len(cases), "equal": sum(cases)}


def _windows(ref, ref_adapter, adapter, ours, g):
    # 4. one reference, weight and mask per frame inside context windows: the pack's attention patch vs ours
    full, refs = 12, 7
    feats = torch.randn(refs, 1024, generator=g) * 3
    fw = [0.1 * (i + 1) for i in range(10)]  # 10 weights for 12 frames: the last is repeated
    masks = torch.rand(full, 24, 24, generator=g)
    theirs = ref.ipadapter_execute(comfy_host.tiny_patcher().clone(), ref_adapter, None, pos_embed=feats, weight=fw,
                                   unfold_batch=True, attn_mask=masks)[0]
    build_image_prompt = comfy_host.pack_module("ip_core.embeds").build_image_prompt  # the host's copy of our classes
    emb = build_image_prompt(adapter.adapter, feats, torch.zeros_like(feats), combine="batch")
    mine = ours["IPAApplyAdapter"]().apply(comfy_host.tiny_patcher(), adapter, emb, 1.0, 0.0, 1.0, attn_mask=masks, frame_weights=fw)[0]
    their_patch = theirs.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 4)]
    my_patch = mine.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 4, 0)]
    windows = [list(range(0, 6)), list(range(4, 10)), list(range(6, 12)), [10, 11, 0, 1, 2, 3]]
    diffs, scale = [], 0.0
    for sub in windows:
        b = len(sub)
        q = torch.randn(2 * b, 16 * 16, 640, generator=g)
        k = torch.randn(2 * b, 77, 640, generator=g)
        v = torch.randn(2 * b, 77, 640, generator=g)
        extra = {"n_heads": 8, "dim_head": 80, "attn_precision": None, "cond_or_uncond": [0, 1],
                 "sigmas": torch.full((2 * b,), 5.0), "original_shape": [2 * b, 4, 32, 32], "block": ("input", 4),
                 "block_index": 0, "transformer_index": 2, "ad_params": {"full_length": full, "sub_idxs": sub}}
        with torch.no_grad():
            a, c = their_patch(q, k, v, dict(extra)), my_patch(q, k, v, dict(extra))
        diffs.append(float((a - c).abs().max()))
        scale = max(scale, float(a.abs().max()))
    (branch,) = my_patch.branches
    return {"max_abs": max(diffs), "scale": scale, "windows": len(windows),
            "held_frames": sorted({v[0].shape[0] for v in branch._arranged.values()})}


if __name__ == "__main__":
    scenario, out = sys.argv[1], sys.argv[2]
    sys.path.insert(0, str(comfy_host.REPO))
    sections = sys.argv[3].split(",") if len(sys.argv) > 3 else None  # e.g. "weights,windows" for a quick rerun
    result = {"parity": parity}[scenario](out, *([sections] if sections else []))
    print("RESULT " + json.dumps(result, default=str), flush=True)
