"""Toolkit parity scenarios inside a real ComfyUI (COMFYUI_PATH), with the widely used pack loaded beside ours:

    python tests/integration/run_toolkit.py presets|combine|encoder|noise|embeds_files OUT_DIR

Each compares our output with the pack's own functions / nodes on the same inputs (the pack's code is only
loaded by the host, never copied). Prints one line `RESULT <json>` that test_integration_toolkit.py checks.
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


def _ours(node_id):
    import nodes as host_nodes  # ComfyUI's nodes module (booted)

    return host_nodes.NODE_CLASS_MAPPINGS[node_id]


# Released names (the pack's README list), plus names users have: sub folders, both extensions, old light.
RELEASED_ADAPTERS = [
    "ip-adapter_sd15.safetensors", "ip-adapter_sd15_light_v11.bin", "ip-adapter_sd15_vit-G.safetensors",
    "ip-adapter-plus_sd15.safetensors", "ip-adapter-plus-face_sd15.safetensors", "ip-adapter-full-face_sd15.safetensors",
    "ip-adapter_sdxl_vit-h.safetensors", "ip-adapter-plus_sdxl_vit-h.safetensors",
    "ip-adapter-plus-face_sdxl_vit-h.safetensors", "ip-adapter_sdxl.safetensors",
    "ip-adapter-faceid_sd15.bin", "ip-adapter-faceid_sdxl.bin", "ip-adapter-faceid-plus_sd15.bin",
    "ip-adapter-faceid-plusv2_sd15.bin", "ip-adapter-faceid-plusv2_sdxl.bin", "ip-adapter-faceid-portrait-v11_sd15.bin",
    "ip-adapter-faceid-portrait_sd15.bin", "ip-adapter-faceid-portrait_sdxl.bin", "ip-adapter-faceid-portrait_sdxl_unnorm.bin",
    "ip_adapter_plus_general.bin",  # Kolors
]
RELEASED_ENCODERS = ["CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors", "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors",
                     "clip-vit-large-patch14-336.bin"]
FOLDERS = {
    "released": (RELEASED_ADAPTERS, RELEASED_ENCODERS),
    "old light, bin and safetensors": (["ip-adapter_sd15_light.safetensors", "ip-adapter-plus_sd15.bin",
                                        "ip-adapter-plus_sd15.safetensors", "ip-adapter_sd15.bin"], RELEASED_ENCODERS[:1]),
    "sub folders": (["sd15/ip-adapter_sd15_light_v11.bin", "sd15/ip-adapter_sd15_light.safetensors",
                     "sdxl/ip-adapter_sdxl.safetensors", "sdxl/ip-adapter-plus_sdxl_vit-h.bin"],
                    ["bigG/CLIP-ViT-bigG-14-laion2B-39B-b160k.bin", "h/CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"]),
    "only plus face": (["ip-adapter-plus-face_sd15.safetensors", "ip-adapter-plus-face_sdxl_vit-h.safetensors"], []),
    "faceid: old portrait, plusv2 only, sub folders": (
        ["faceid/ip-adapter-faceid-portrait_sd15.bin", "faceid/ip-adapter-faceid-plusv2_sd15.safetensors",
         "xl/ip-adapter-faceid-portrait_sdxl_unnorm.bin", "xl/ip-adapter-faceid_sdxl.safetensors"], RELEASED_ENCODERS),
}


def presets(out_dir):
    """For folders of files named as released: the pack's get_ipadapter_file / get_clipvision_file against our
    choose_adapter / choose_encoder, every preset x SD1.5 / SDXL, on the same file lists."""
    _, _, _, ref = comfy_host.boot_with_both_packs(COMFY, out_dir)
    import folder_paths
    utils = sys.modules[ref.__name__.rsplit(".", 1)[0] + ".utils"]
    from ip_core.errors import IPAdapterError
    from ip_core.presets import PRESET_NAMES, choose_adapter, choose_encoder, preset

    listing = {}
    folder_paths.get_filename_list = lambda folder: sorted(listing[folder])
    folder_paths.get_full_path = lambda folder, name: f"{folder}/{name}"

    def no_contents(name):  # the files are names only here: content detection finds nothing
        raise IPAdapterError("empty file")

    cases, mismatches = 0, []
    for label, (adapters, encoders) in FOLDERS.items():
        listing["ipadapter"], listing["clip_vision"] = adapters, encoders
        for name in PRESET_NAMES:
            for family in ("sd15", "sdxl"):
                try:
                    theirs, _, _ = utils.get_ipadapter_file(name, family == "sdxl")
                    theirs = theirs and theirs[len("ipadapter/"):]
                except Exception:
                    theirs = "refused"
                try:
                    mine = choose_adapter(name, family, sorted(adapters), no_contents).name
                except IPAdapterError as e:
                    mine = "refused" if "has no" in str(e) else None
                cases += 1
                if mine != theirs:
                    mismatches.append([label, name, family, theirs, mine])
            theirs = utils.get_clipvision_file(name)
            theirs = theirs and theirs[len("clip_vision/"):]
            try:
                mine = choose_encoder(preset(name).clip_vision_name, sorted(encoders), lambda n: None).name
            except IPAdapterError:
                mine = None
            cases += 1
            if mine != theirs:
                mismatches.append([label, name, "clip_vision", theirs, mine])
    return {"cases": cases, "mismatches": mismatches}


def preset_node(out_dir):
    """The node in the host: released names, then the same files renamed (chosen by contents), then an error."""
    import shutil

    host_nodes, ours, _, _ = comfy_host.boot_with_both_packs(COMFY, out_dir)
    import folder_paths
    from ip_core.adapter import IPAdapter, save_adapter
    from ip_core.config import make_config
    from ip_core.layers import layer_specs

    ipa = os.path.join(out_dir, "ipadapter")
    cvdir = os.path.join(out_dir, "clip_vision")
    os.makedirs(cvdir, exist_ok=True)
    folder_paths.add_model_folder_path("clip_vision", cvdir)
    for i, (name, variant, width) in enumerate([("ip-adapter_sd15.safetensors", "base", 1024),
                                                 ("ip-adapter-plus_sd15.safetensors", "plus", 1280),
                                                 ("ip-adapter-full-face_sd15.safetensors", "full-face", 1280)]):
        torch.manual_seed(i)
        save_adapter(IPAdapter.from_config(make_config(variant, layer_specs("sd15"), 768, width)), os.path.join(ipa, name))
    cv = comfy_host.small_clip_vision(out_dir)
    from safetensors.torch import save_file

    # a ViT-H-shaped header is all the content check reads; the host loader is swapped for the small model
    save_file({"vision_model.embeddings.patch_embedding.weight": torch.zeros(1280, 3, 14, 14)},
              os.path.join(cvdir, "my_vit_h.safetensors"))
    asked = []
    hostmod = comfy_host.pack_module("nodes.host")
    hostmod.load_clip_vision = lambda path: asked.append(os.path.basename(path)) or cv
    model = comfy_host.comfy_model_from_unet(comfy_host.sd15_unet())
    loader = _ours("IPAUnifiedLoader")()
    out = {}
    for p in ("STANDARD (medium strength)", "PLUS (high strength)", "FULL FACE - SD1.5 only (portraits stronger)"):
        r = loader.load(model, p)
        out[p] = {"text": r["ui"]["text"][0], "adapter": r["result"][1].name, "clip_vision": asked[-1],
                  "model_is_input": r["result"][0] is model, "clip_vision_is_host_model": r["result"][2] is cv}
    for name in os.listdir(ipa):  # renamed: nothing matches a released name any more
        shutil.move(os.path.join(ipa, name), os.path.join(ipa, "renamed_" + name.replace("ip-adapter", "x")))
    r = loader.load(model, "PLUS (high strength)")
    out["renamed plus"] = {"text": r["ui"]["text"][0], "adapter": r["result"][1].name}
    try:
        loader.load(model, "VIT-G (medium strength)")
        out["missing"] = None
    except Exception as e:
        out["missing"] = f"{type(e).__name__}: {e}"
    return out


def combine(out_dir):
    """IPAdapterCombineEmbeds against COMBINE_METHODS on the same CLIP features (bit for bit), then our node:
    its tokens are the projection of the pack's combined features."""
    host_nodes, ours, ref_classes, _ = comfy_host.boot_with_both_packs(COMFY, out_dir)
    from ip_core.embeds import COMBINE_METHODS, combine_rows

    theirs_node = ref_classes["IPAdapterCombineEmbeds"]()
    g = torch.Generator().manual_seed(0)
    inputs = {"image_embeds": [torch.randn(2, 1024, generator=g), torch.randn(1, 1024, generator=g), torch.randn(3, 1024, generator=g)],
              "hidden_states": [torch.randn(1, 257, 1280, generator=g), torch.randn(2, 257, 1280, generator=g)]}
    results = {}
    for kind, embeds in inputs.items():
        for method in COMBINE_METHODS:
            for n in range(1, len(embeds) + 1):
                if method == "subtract" and sum(e.shape[0] for e in embeds[:n]) < 2:
                    continue
                (theirs,) = theirs_node.batch(embeds[0], method, *embeds[1:n])
                mine = combine_rows(torch.cat(embeds[:n]), method)
                results[f"{kind}/{method}/{n}"] = bool(torch.equal(theirs, mine))
    # through the nodes: two Encode outputs combined by ours vs the pack's method on their features
    _save = __import__("run_in_comfy")._save_random_adapter
    _save(os.path.join(out_dir, "ipadapter", "plus.safetensors"), seed=2, variant="plus")
    adapter = ours["IPALoadAdapter"]().load("plus.safetensors")["result"][0]
    cv = comfy_host.small_clip_vision(out_dir)
    (e1,) = ours["IPAEncodeImagePrompt"]().encode(adapter, cv, torch.rand(2, 224, 224, 3, generator=g))
    (e2,) = ours["IPAEncodeImagePrompt"]().encode(adapter, cv, torch.rand(1, 224, 224, 3, generator=g))
    node = {}
    for method in COMBINE_METHODS:
        (c,) = _ours("IPACombineEmbeds")().combine(adapter, e1, method, embeds_2=e2)
        (feats,) = theirs_node.batch(e1.cond_features, method, e2.cond_features)
        with torch.no_grad():
            tokens = adapter.adapter.project(feats)
        tokens = tokens.reshape(1, -1, tokens.shape[-1])
        node[method] = {"equal": bool(torch.equal(c.cond, tokens)), "shape": list(c.cond.shape),
                        "uncond_shape": list(c.uncond.shape)}
    return {"methods": results, "node": node}


def encoder(out_dir):
    """IPAdapterEncoder's weight and mask against ours: the pixels the encoder sees and the features it gives."""
    host_nodes, ours, ref_classes, _ = comfy_host.boot_with_both_packs(COMFY, out_dir)
    import comfy.clip_vision
    from ip_core.embeds import weight_references
    from ip_core.encoder_mask import apply_encoder_masks, encoder_masks
    from ip_core.preprocess import preprocess_images

    _save = __import__("run_in_comfy")._save_random_adapter
    results = {}
    for variant in ("base", "plus"):
        name = f"{variant}.safetensors"
        _save(os.path.join(out_dir, "ipadapter", name), seed=1, variant=variant)
        adapter = ours["IPALoadAdapter"]().load(name)["result"][0]
        sd = adapter.adapter.released_state_dict()
        cv = comfy_host.small_clip_vision(out_dir)
        seen = []
        hook = cv.model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["pixel_values"].clone()), with_kwargs=True)
        g = torch.Generator().manual_seed(3)
        # 224 x 224 8-bit images: ComfyUI's clip_preprocess (the pack's) and our centre crop see the same pixels
        images = torch.round(torch.rand(2, 224, 224, 3, generator=g) * 255) / 255
        for mask_hw in ((224, 224), (300, 260), (257, 301)):
            mask = (torch.rand(1, *mask_hw, generator=g) > 0.4).float()
            weights = [1.0, 0.5] if variant == "base" else [0.7, -0.3]
            theirs = []
            for i, w in enumerate(weights):
                seen.clear()
                theirs.append(ref_classes["IPAdapterEncoder"]().encode(sd, images[i:i + 1], w, mask=mask, clip_vision=cv)[0])
                pack_pixels = seen[0]
            theirs = torch.cat(theirs)
            px = comfy.clip_vision.clip_preprocess(images[1:2])
            mine_pixels = apply_encoder_masks(px, encoder_masks(mask, 1, (224, 224), "center"))
            key = f"{variant}/mask{mask_hw[0]}x{mask_hw[1]}"
            results[key] = {"pixels_equal": bool(torch.equal(pack_pixels, mine_pixels)),
                            "preprocess_equal": bool(torch.equal(px, preprocess_images(images[1:2])))}
            with torch.no_grad():  # one image per call, as the pack was called (batching changes the last bits)
                masked = apply_encoder_masks(comfy.clip_vision.clip_preprocess(images), encoder_masks(mask, 2, (224, 224), "center"))
                outs = [cv.model(pixel_values=masked[i:i + 1], intermediate_output=-2) for i in range(2)]
            feats = torch.cat([o[2] if variant == "base" else o[1] for o in outs])
            results[key]["features_equal"] = bool(torch.equal(theirs, weight_references(feats.float(), weights)))
            # the node end to end (our preprocessing, which equals ComfyUI's for these images)
            (emb,) = ours["IPAEncodeImagePrompt"]().encode(adapter, cv, images, reference_weights=", ".join(map(str, weights)), mask=mask)
            results[key]["node_features_max_abs_diff"] = float((emb.cond_features - theirs).abs().max())
        hook.remove()
    return results


def noise(out_dir):
    """IPAdapterNoise against ip_core.noise.make_noise: every type, strengths, blurs, with and without an image."""
    host_nodes, ours, ref_classes, _ = comfy_host.boot_with_both_packs(COMFY, out_dir)
    from ip_core.noise import NOISE_TYPES, make_noise

    g = torch.Generator().manual_seed(0)
    images = {"none": None, "300x260": torch.rand(2, 300, 260, 3, generator=g), "224": torch.rand(1, 224, 224, 3, generator=g)}
    results = {}
    for kind in NOISE_TYPES:
        for strength in (0.0, 0.35, 1.0):
            for blur in (0, 5, 6):
                for label, image in images.items():
                    (theirs,) = ref_classes["IPAdapterNoise"]().make_noise(kind, strength, blur, image_optional=image)
                    before = torch.get_rng_state()
                    mine = make_noise(kind, strength, blur, image)
                    results[f"{kind}/{strength}/{blur}/{label}"] = {
                        "equal": bool(torch.equal(theirs, mine)), "rng_untouched": bool(torch.equal(before, torch.get_rng_state()))}
    (node_out,) = _ours("IPANoise")().make("gaussian", 0.5, 0, images["224"], seed_override=-1)
    (theirs,) = ref_classes["IPAdapterNoise"]().make_noise("gaussian", 0.5, 0, image_optional=images["224"])
    (seeded,) = _ours("IPANoise")().make("gaussian", 0.5, 0, images["224"], seed_override=7)
    (seeded_again,) = _ours("IPANoise")().make("gaussian", 0.5, 0, images["224"], seed_override=7)
    return {"cases": results, "node_equal": bool(torch.equal(node_out, theirs)),
            "seeded_repeatable": bool(torch.equal(seeded, seeded_again)), "seeded_differs": not torch.equal(seeded, theirs)}


def _errors(calls: dict) -> dict:
    """label -> "ErrorType: message" of what each call raised, or None when it returned."""
    out = {}
    for label, call in calls.items():
        try:
            call()
            out[label] = None
        except Exception as e:
            out[label] = f"{type(e).__name__}: {e}"
    return out


def embeds_files(out_dir):
    """Save / Load through the host's output / input folders; the pack's .ipadpt pickle is refused."""
    import shutil

    host_nodes, ours, ref_classes, _ = comfy_host.boot_with_both_packs(COMFY, out_dir)
    in_dir, out_images = comfy_host.use_io_folders(out_dir)
    _save = __import__("run_in_comfy")._save_random_adapter
    _save(os.path.join(out_dir, "ipadapter", "a.safetensors"), seed=1)
    _save(os.path.join(out_dir, "ipadapter", "b.safetensors"), seed=2)
    a = ours["IPALoadAdapter"]().load("a.safetensors")["result"][0]
    b = ours["IPALoadAdapter"]().load("b.safetensors")["result"][0]
    cv = comfy_host.small_clip_vision(out_dir)
    (emb,) = ours["IPAEncodeImagePrompt"]().encode(a, cv, torch.rand(2, 224, 224, 3))
    saved = _ours("IPASaveEmbeds")().save(emb, "ipadapter/test", "two references")
    files = sorted(str(p.relative_to(out_images)) for p in Path(out_images).rglob("*.safetensors"))
    shutil.copy(os.path.join(out_images, files[0]), os.path.join(in_dir, "test.safetensors"))
    listed = _ours("IPALoadEmbeds").INPUT_TYPES()["required"]["embeds_file"][0]
    loaded = _ours("IPALoadEmbeds")().load("test.safetensors")
    le = loaded["result"][0]
    res = {"saved_text": saved["ui"]["text"][0], "files": files, "listed": listed, "loaded_text": loaded["ui"]["text"][0],
           "round_trip": all(torch.equal(x, y) for x, y in zip(emb.state_dict().values(), le.state_dict().values()))}
    (patched,) = ours["IPAApplyAdapter"]().apply(comfy_host.comfy_model_from_unet(comfy_host.sd15_unet()), a, le, 1.0, 0.0, 1.0)
    res["applies_with_its_adapter"] = patched is not None
    res.update(_errors({
        "other_adapter_apply": lambda: ours["IPAApplyAdapter"]().apply(patched, b, le, 1.0, 0.0, 1.0),
        "other_adapter_load": lambda: _ours("IPALoadEmbeds")().load("test.safetensors", ipadapter=b),
    }))
    # the pack's own Save Embeds writes a torch.save pickle (.ipadpt) into the output folder
    theirs_node = ref_classes["IPAdapterSaveEmbeds"]()
    theirs_node.save(torch.randn(1, 1024), "theirs")
    pickles = sorted(Path(out_images).glob("theirs*.ipadpt"))
    shutil.copy(pickles[0], os.path.join(in_dir, "theirs.ipadpt"))
    Path(in_dir, "model.safetensors").write_bytes(Path(out_dir, "ipadapter", "a.safetensors").read_bytes())
    res.update(_errors({label: (lambda name=name: _ours("IPALoadEmbeds")().load(name))
                        for label, name in {"pickle": "theirs.ipadpt", "foreign": "model.safetensors"}.items()}))
    # the host's own refusals (folder_paths.get_save_image_path) and names outside the input folder: user errors
    from safetensors.torch import save_file

    wide = torch.randn(1, 4, 769)
    meta = {"format": "ipadapter-image-prompt-embeds", "format_version": "1", "note": "", **emb.metadata()}
    save_file({"cond": wide, "uncond": wide.clone()}, os.path.join(in_dir, "wide.safetensors"), metadata=meta)
    escape = os.path.join(out_dir, "escape")
    res.update(_errors({
        "save_dotdot": lambda: _ours("IPASaveEmbeds")().save(emb, "../../../escape/x"),
        "save_absolute": lambda: _ours("IPASaveEmbeds")().save(emb, os.path.join(escape, "x")),
        "load_dotdot": lambda: _ours("IPALoadEmbeds")().load("../ipadapter/a.safetensors"),
        "load_wide": lambda: _ours("IPALoadEmbeds")().load("wide.safetensors", ipadapter=a),
        "apply_wide": lambda: ours["IPAApplyAdapter"]().apply(patched, a, _ours("IPALoadEmbeds")().load("wide.safetensors")["result"][0], 1.0, 0.0, 1.0),
    }))
    res["escaped"] = os.path.exists(escape)
    return res


if __name__ == "__main__":
    scenario, out = sys.argv[1], sys.argv[2]
    sys.path.insert(0, str(comfy_host.REPO))
    fn = {"presets": presets, "preset_node": preset_node, "combine": combine, "encoder": encoder, "noise": noise,
          "embeds_files": embeds_files}[scenario]
    print("RESULT " + json.dumps(fn(out), default=str), flush=True)
