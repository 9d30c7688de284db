"""The toolkit nodes through the ComfyUI stand-in: preset loader, combine, weighted / masked references,
save / load, noise, regions."""
import os
import shutil

import pytest
import torch

import comfy_standin
from conftest import random_adapter
from ip_core.embeds import build_image_prompt
from ip_core.errors import AdapterFileError, AdapterMismatchError, IPAdapterError
from ip_core.preprocess import preprocess_images
from nodes import host as host_mod
from nodes.common import LoadedAdapter
from nodes.nodes_apply import IPAApplyAdapter
from nodes.nodes_encode import IPAEncodeImagePrompt
from nodes.nodes_toolkit import (IPAApplyRegions, IPACombineEmbeds, IPALoadEmbeds, IPANoise, IPARegion, IPASaveEmbeds,
                                 IPAUnifiedLoader)


@pytest.fixture(scope="module")
def other():
    return LoadedAdapter(random_adapter("base", seed=5), "other.safetensors")


def _images(n, seed=0):
    return torch.rand(n, 224, 224, 3, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ Load IPAdapter (preset)
@pytest.fixture
def preset_host(host, adapter_files, monkeypatch):
    from safetensors.torch import save_file

    cv_dir = os.path.join(host.models_dir, "clip_vision")
    os.makedirs(cv_dir)
    host.folder_paths.add_model_folder_path("clip_vision", cv_dir)
    save_file({"vision_model.embeddings.patch_embedding.weight": torch.zeros(1280, 3, 14, 14)}, os.path.join(cv_dir, "vit-h renamed.safetensors"))
    loaded = []
    monkeypatch.setattr(host_mod, "load_clip_vision", lambda path: loaded.append(os.path.basename(path)) or "the host's CLIP_VISION")
    host.loaded_clip_vision = loaded
    host.adapter_dir = os.path.join(host.models_dir, "ipadapter")
    return host


def test_preset_loader_by_released_name_then_by_contents(preset_host, adapter_files):
    shutil.copy(adapter_files["base"], os.path.join(preset_host.adapter_dir, "ip-adapter_sd15.safetensors"))
    shutil.copy(adapter_files["plus"], os.path.join(preset_host.adapter_dir, "renamed.bin"))
    model = comfy_standin.make_model("sd15")
    out = IPAUnifiedLoader().load(model, "STANDARD (medium strength)")
    m, adapter, cv = out["result"]
    assert m is model and cv == "the host's CLIP_VISION" and adapter.name == "ip-adapter_sd15.safetensors"
    assert "ip-adapter_sd15.safetensors (by name)" in out["ui"]["text"][0]
    assert "vit-h renamed.safetensors (by contents)" in out["ui"]["text"][0]
    out = IPAUnifiedLoader().load(model, "PLUS (high strength)")
    assert out["result"][1].name == "renamed.bin" and "renamed.bin (by contents)" in out["ui"]["text"][0]
    assert out["result"][1].config.variant == "plus"


def test_preset_loader_errors(preset_host, adapter_files):
    shutil.copy(adapter_files["base"], os.path.join(preset_host.adapter_dir, "ip-adapter-plus_sd15.safetensors"))
    model = comfy_standin.make_model("sd15")
    with pytest.raises(AdapterMismatchError, match="named as preset 'PLUS.*holds SD1.5 base.*not a SD1.5 plus, 16 tokens"):
        IPAUnifiedLoader().load(model, "PLUS (high strength)")
    with pytest.raises(IPAdapterError, match="needs ip-adapter-full-face_sd15.safetensors.*Files found: ip-adapter-plus_sd15.safetensors: SD1.5 base"):
        IPAUnifiedLoader().load(model, "FULL FACE - SD1.5 only (portraits stronger)")
    with pytest.raises(AdapterMismatchError, match="has no SDXL adapter"):
        IPAUnifiedLoader().load(comfy_standin.make_model("sdxl"), "FULL FACE - SD1.5 only (portraits stronger)")
    shutil.copy(adapter_files["base"], os.path.join(preset_host.adapter_dir, "ip-adapter_sd15_vit-G.safetensors"))
    with pytest.raises(AdapterMismatchError, match="holds SD1.5 base.*ViT-H/14.*not a SD1.5 base, 4 tokens, ViT-bigG/14"):
        IPAUnifiedLoader().load(model, "VIT-G (medium strength)")


@pytest.fixture(scope="module")
def faceid_files(tmp_path_factory):
    """Random SD1.5 FaceID and FaceID Plus files in the released layouts (small LoRA rank, ViT-H CLIP width)."""
    from ip_core.adapter import IPAdapter, save_adapter
    from ip_core.config import make_config
    from ip_core.layers import layer_specs

    d = tmp_path_factory.mktemp("faceid")
    torch.manual_seed(0)
    faceid = IPAdapter(make_config("faceid", layer_specs("sd15"), 768, 512, lora_rank=4))
    plus = IPAdapter(make_config("faceid-plus", layer_specs("sd15"), 768, 512, lora_rank=4, clip_width=1280))
    return {"faceid": save_adapter(faceid, d / "faceid.bin", format="bin"), "plus": save_adapter(plus, d / "plus.safetensors")}


def test_faceid_presets_by_released_name_then_by_contents(preset_host, faceid_files):
    ipa = preset_host.adapter_dir
    shutil.copy(faceid_files["faceid"], os.path.join(ipa, "ip-adapter-faceid_sd15.bin"))
    shutil.copy(faceid_files["plus"], os.path.join(ipa, "ip-adapter-faceid-plusv2_sd15.safetensors"))
    model = comfy_standin.make_model("sd15")
    out = IPAUnifiedLoader().load(model, "FACEID")
    m, adapter, cv = out["result"]
    assert m is model and adapter.name == "ip-adapter-faceid_sd15.bin" and adapter.config.variant == "faceid"
    # the adapter's encoder is InsightFace; the CLIP vision output is still ViT-H, as the pack's loader returns
    assert cv == "the host's CLIP_VISION" and preset_host.loaded_clip_vision == ["vit-h renamed.safetensors"]
    assert "ip-adapter-faceid_sd15.bin (by name)" in out["ui"]["text"][0] and "plus_version" not in out["ui"]["text"][0]
    out = IPAUnifiedLoader().load(model, "FACEID PLUS V2")
    assert out["result"][1].name == "ip-adapter-faceid-plusv2_sd15.safetensors" and out["result"][1].config.clip_width == 1280
    assert out["ui"]["text"][0].endswith("on Encode Face set plus_version to v2 (shortcut)")
    with pytest.raises(IPAdapterError, match="needs ip-adapter-faceid-plus_sd15.*Files found: ip-adapter-faceid-plusv2_sd15"
                                             ".safetensors: SD1.5 FaceID Plus/PlusV2.*ip-adapter-faceid_sd15.bin: SD1.5 FaceID"):
        IPAUnifiedLoader().load(model, "FACEID PLUS - SD1.5 only")  # the PlusV2 release is not taken for Plus
    os.rename(os.path.join(ipa, "ip-adapter-faceid-plusv2_sd15.safetensors"), os.path.join(ipa, "my face plus.safetensors"))
    out = IPAUnifiedLoader().load(model, "FACEID PLUS - SD1.5 only")
    assert out["result"][1].name == "my face plus.safetensors" and "(by contents)" in out["ui"]["text"][0]
    assert out["ui"]["text"][0].endswith("on Encode Face set plus_version to v1")


def test_faceid_preset_errors(preset_host, faceid_files):
    shutil.copy(faceid_files["faceid"], os.path.join(preset_host.adapter_dir, "ip-adapter-faceid-portrait_sd15.bin"))
    with pytest.raises(AdapterMismatchError, match="named as preset 'FACEID PORTRAIT.*holds SD1.5 FaceID .*not a SD1.5 "
                                                   "faceid-portrait, 16 tokens, InsightFace ArcFace adapter"):
        IPAUnifiedLoader().load(comfy_standin.make_model("sd15"), "FACEID PORTRAIT (style transfer)")
    with pytest.raises(AdapterMismatchError, match="'FACEID PORTRAIT UNNORM - SDXL only \\(strong\\)' has no SD1.5 adapter"):
        IPAUnifiedLoader().load(comfy_standin.make_model("sd15"), "FACEID PORTRAIT UNNORM - SDXL only (strong)")
    with pytest.raises(IPAdapterError, match="needs ip-adapter-faceid-portrait_sdxl_unnorm.*Files found: "
                                             "ip-adapter-faceid-portrait_sd15.bin: SD1.5 FaceID"):
        IPAUnifiedLoader().load(comfy_standin.make_model("sdxl"), "FACEID PORTRAIT UNNORM - SDXL only (strong)")


# ------------------------------------------------------------------ Combine Image Prompts
def test_combine_projects_the_combined_features(host, base, vit_h):
    (e1,) = IPAEncodeImagePrompt().encode(base, vit_h, _images(2))
    (e2,) = IPAEncodeImagePrompt().encode(base, vit_h, _images(1, seed=1))
    feats = torch.cat([e1.cond_features, e2.cond_features])
    with torch.no_grad():
        for method, merged in {"average": feats.mean(0, keepdim=True), "subtract": (feats[0] - feats[1:].mean(0))[None],
                               "concat": feats}.items():
            (c,) = IPACombineEmbeds().combine(base, e1, method, embeds_2=e2)
            # each reference is projected on its own (ip_core.embeds: the same numbers alone or in a batch)
            rows = torch.cat([base.adapter.project(merged[r:r + 1]) for r in range(merged.shape[0])])
            assert torch.equal(c.cond, rows.reshape(1, -1, 768)), method
            assert c.uncond.shape == c.cond.shape
    (same,) = IPACombineEmbeds().combine(base, e1, "concat")
    assert same is e1


def test_combine_refuses_mismatched_embeds(host, base, other, plus, vit_h):
    (e1,) = IPAEncodeImagePrompt().encode(base, vit_h, _images(1))
    (eo,) = IPAEncodeImagePrompt().encode(other, vit_h, _images(1))
    with pytest.raises(AdapterMismatchError, match="another adapter \\(same layout, other weights\\)"):
        IPACombineEmbeds().combine(base, e1, "add", embeds_3=eo)
    (ep,) = IPAEncodeImagePrompt().encode(plus, vit_h, _images(1))
    with pytest.raises(AdapterMismatchError, match="another adapter"):
        IPACombineEmbeds().combine(base, e1, "add", embeds_2=ep)
    (eb,) = IPAEncodeImagePrompt().encode(base, vit_h, _images(2), combine="batch")
    with pytest.raises(IPAdapterError, match="embeds_2 holds one reference per batch item"):
        IPACombineEmbeds().combine(base, e1, "add", embeds_2=eb)
    bare = build_image_prompt(base.adapter, torch.randn(1, 1024), torch.zeros(1, 1024))
    bare.cond_features = bare.uncond_features = None
    with pytest.raises(IPAdapterError, match="embeds_1 carries no encoder features"):
        IPACombineEmbeds().combine(base, bare, "add")
    odd = build_image_prompt(plus.adapter, torch.randn(1, 100, 1280), torch.zeros(1, 100, 1280))
    (ep,) = IPAEncodeImagePrompt().encode(plus, vit_h, _images(1))
    with pytest.raises(AdapterMismatchError, match="different feature shapes.*embeds_1: \\[257, 1280\\], embeds_2: \\[100, 1280\\]"):
        IPACombineEmbeds().combine(plus, ep, "average", embeds_2=odd)
    with pytest.raises(IPAdapterError, match="unknown combine method"):
        IPACombineEmbeds().combine(base, e1, "blend")


# ------------------------------------------------------------------ Encode: reference_weights, mask
def test_reference_weights_and_mask_on_encode(host, plus, vit_h):
    imgs = _images(2)
    mask = torch.zeros(2, 224, 224)
    mask[0, :112] = 1
    mask[1, :, 100:] = 1
    (e,) = IPAEncodeImagePrompt().encode(plus, vit_h, imgs, reference_weights="1, 0.5", mask=mask)
    with torch.no_grad():
        px = preprocess_images(imgs) * mask[:, None]
        hidden = vit_h.model(px)[1]
    assert torch.equal(e.cond_features[0], hidden[0]) and torch.equal(e.cond_features[1], hidden[1] * 0.5)
    (plain,) = IPAEncodeImagePrompt().encode(plus, vit_h, imgs)
    assert torch.equal(plain.uncond, e.uncond)  # weights and masks touch the references only
    (one,) = IPAEncodeImagePrompt().encode(plus, vit_h, imgs, reference_weights="", mask=mask[:1])
    with torch.no_grad():
        assert torch.equal(one.cond_features, vit_h.model(preprocess_images(imgs) * mask[:1, None])[1])
    with pytest.raises(IPAdapterError, match="mask holds 3 masks .* for 2 reference images"):
        IPAEncodeImagePrompt().encode(plus, vit_h, imgs, mask=torch.ones(3, 8, 8))
    with pytest.raises(IPAdapterError, match="reference_weights has 3 numbers for 2"):
        IPAEncodeImagePrompt().encode(plus, vit_h, imgs, reference_weights="1,1,1")


# ------------------------------------------------------------------ Save / Load
@pytest.fixture
def folders(host, tmp_path, monkeypatch):
    out_dir, in_dir = tmp_path / "output", tmp_path / "input"
    out_dir.mkdir()
    in_dir.mkdir()

    def save_path(prefix, root):  # folder_paths.get_save_image_path, the parts the node uses
        folder = os.path.join(root, os.path.dirname(prefix))
        os.makedirs(folder, exist_ok=True)
        return folder, os.path.basename(prefix), 1, os.path.dirname(prefix), prefix

    monkeypatch.setattr(host_mod, "output_directory", lambda: str(out_dir))
    monkeypatch.setattr(host_mod, "input_directory", lambda: str(in_dir))
    monkeypatch.setattr(host_mod, "save_path", save_path)
    monkeypatch.setattr(host_mod, "annotated_input_path", lambda name: str(in_dir / name))
    return out_dir, in_dir


def test_save_and_load_embeds(folders, base, other, vit_h):
    out_dir, in_dir = folders
    (e,) = IPAEncodeImagePrompt().encode(base, vit_h, _images(2))
    r = IPASaveEmbeds().save(e, "ipadapter/cats", "two cats")
    saved = out_dir / "ipadapter" / "cats_00001_.safetensors"
    assert saved.is_file() and "ipadapter/cats_00001_.safetensors" in r["ui"]["text"][0]
    shutil.copy(saved, in_dir / "cats.safetensors")
    torch.save(torch.randn(1, 1024), in_dir / "theirs.ipadpt")
    (in_dir / "photo.png").write_bytes(b"x")
    assert IPALoadEmbeds.INPUT_TYPES()["required"]["embeds_file"][0] == ["cats.safetensors", "theirs.ipadpt"]
    out = IPALoadEmbeds().load("cats.safetensors", ipadapter=base)
    loaded = out["result"][0]
    assert "two cats" in out["ui"]["text"][0]
    assert torch.equal(loaded.cond, e.cond) and torch.equal(loaded.cond_features, e.cond_features)
    IPAApplyAdapter().apply(comfy_standin.make_model("sd15"), base, loaded, 1.0, 0.0, 1.0)
    with pytest.raises(AdapterMismatchError, match="cats.safetensors: these image prompt embeds were made for another adapter"):
        IPALoadEmbeds().load("cats.safetensors", ipadapter=other)
    with pytest.raises(AdapterMismatchError, match="another adapter"):
        IPAApplyAdapter().apply(comfy_standin.make_model("sd15"), other, loaded, 1.0, 0.0, 1.0)
    with pytest.raises(AdapterFileError, match="theirs.ipadpt: a pickle"):
        IPALoadEmbeds().load("theirs.ipadpt")


def test_load_embeds_checks_the_tensors_against_the_adapter(folders, base):
    """A file whose metadata names this adapter but whose tokens are 769 wide: refused at Load (with the adapter) and
    at Apply, naming the file, both widths and what to do, before any matmul."""
    from safetensors.torch import save_file

    _, in_dir = folders
    (e,) = IPAEncodeImagePrompt().encode(base, comfy_standin.ClipVisionModel(1280, 1024), _images(1))
    meta = {"format": "ipadapter-image-prompt-embeds", "format_version": "1", "note": "", **e.metadata()}
    wide = torch.randn(1, 4, 769)
    save_file({"cond": wide, "uncond": wide.clone()}, str(in_dir / "wide.safetensors"), metadata=meta)
    with pytest.raises(AdapterMismatchError, match=r"wide.safetensors: .*tokens \[1, 4, 769\].*of width 768.*"
                                                   r"Connect the Load IPAdapter that made this file") as err:
        IPALoadEmbeds().load("wide.safetensors", ipadapter=base)
    assert "base.safetensors" in str(err.value)
    loaded = IPALoadEmbeds().load("wide.safetensors")["result"][0]
    with pytest.raises(AdapterMismatchError, match=r"tokens \[1, 4, 769\].*of width 768.*Connect the same Load IPAdapter"):
        IPAApplyAdapter().apply(comfy_standin.make_model("sd15"), base, loaded, 1.0, 0.0, 1.0)
    save_file({"cond": wide.to(torch.int8), "uncond": wide.to(torch.int8).clone()}, str(in_dir / "int8.safetensors"), metadata=meta)
    with pytest.raises(AdapterFileError, match="int8.safetensors: cond holds int8"):
        IPALoadEmbeds().load("int8.safetensors")


@pytest.mark.parametrize("references, combine", [(1, "concat"), (2, "batch")])  # batch: per region, one row per frame
def test_tiled_embeds_survive_save_and_load(folders, base, vit_h, references, combine):
    out_dir, in_dir = folders
    (e,) = IPAEncodeImagePrompt().encode(base, vit_h, torch.rand(references, 256, 512, 3), tiles="tiled", combine=combine)
    assert e.region_masks is not None and e.cond.shape[0] == 2 * references
    IPASaveEmbeds().save(e, "tiles", "")
    shutil.copy(out_dir / "tiles_00001_.safetensors", in_dir / "tiles.safetensors")
    back = IPALoadEmbeds().load("tiles.safetensors", ipadapter=base)["result"][0]
    assert torch.equal(back.region_masks, e.region_masks) and torch.equal(back.cond, e.cond)
    x, ctx = torch.randn(references, 4, 8, 8), torch.randn(references, 77, 768)
    model = comfy_standin.make_model("sd15")
    (ours,) = IPAApplyAdapter().apply(model, base, back, 1.0, 0.0, 1.0)
    (theirs,) = IPAApplyAdapter().apply(model, base, e, 1.0, 0.0, 1.0)
    assert torch.equal(comfy_standin.run_model(ours, x, 5.0, ctx, ctx), comfy_standin.run_model(theirs, x, 5.0, ctx, ctx))


# ------------------------------------------------------------------ Noise, regions
def test_noise_node(host):
    img = _images(1)
    (a,) = IPANoise().make("shuffle", 0.4, 2, img)
    (b,) = IPANoise().make("shuffle", 0.4, 2, img, seed_override=-1)
    (c,) = IPANoise().make("shuffle", 0.4, 2, img, seed_override=3)
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (1, 224, 224, 3)
    with pytest.raises(IPAdapterError, match="strength is 1.5"):
        IPANoise().make("fade", 1.5, 0)


def test_regions_equal_chained_apply_nodes(host, base, vit_h):
    (e1,) = IPAEncodeImagePrompt().encode(base, vit_h, _images(1))
    (e2,) = IPAEncodeImagePrompt().encode(base, vit_h, _images(1, seed=4))
    left, right = torch.zeros(8, 8), torch.zeros(8, 8)
    left[:, :4], right[:, 4:] = 1, 1
    (regions,) = IPARegion().add(e1, left, 0.8)
    (regions,) = IPARegion().add(e2, right, 0.6, regions=regions)
    model = comfy_standin.make_model("sd15")
    (ours,) = IPAApplyRegions().apply(model, base, regions, 0.0, 1.0)
    (chain,) = IPAApplyAdapter().apply(model, base, e1, 0.8, 0.0, 1.0, attn_mask=left)
    (chain,) = IPAApplyAdapter().apply(chain, base, e2, 0.6, 0.0, 1.0, attn_mask=right)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ctx = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(1))
    assert torch.equal(comfy_standin.run_model(ours, x, 5.0, ctx, ctx), comfy_standin.run_model(chain, x, 5.0, ctx, ctx))
    with pytest.raises(IPAdapterError, match="regions must come from an Image Prompt Region node"):
        IPAApplyRegions().apply(model, base, (), 0.0, 1.0)
