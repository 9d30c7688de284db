"""FaceID in the nodes: Encode Face through a stand-in face analyzer, Apply with face embeds, the LoRA
patches handed to the host, and the errors for every mismatch. The real InsightFace path runs when it is
installed with its models (INSIGHTFACE_ROOT or COMFYUI_PATH/models/insightface) and skips otherwise."""
import os

import numpy as np
import pytest
import torch

import comfy_standin
from comfy_standin import make_model
from face_standin import StandinFaceAnalyzer
from test_nodes_legacy import host_preprocess  # noqa: F401  (fixture: the host's clip_preprocess, stood in)
from conftest import random_adapter
from ip_core.adapter import IPAdapter
from ip_core.config import make_config
from ip_core.errors import AdapterMismatchError
from ip_core.families.faceid import FacePromptEmbeds, build_face_prompt
from ip_core.lora import lora_targets
from ip_core.layers import layer_specs
from ip_core.preprocess import preprocess_images
from nodes import face_analysis, host as host_module, nodes_faceid
from nodes.common import LoadedAdapter
from nodes.nodes_apply import IPAApplyAdapter
from nodes.nodes_encode import IPAEncodeImagePrompt
from nodes.families.faceid import apply_faceid_lora
from nodes.nodes_faceid import IPAEncodeFace


def faceid_adapter(variant="faceid", base="sd15", rank=4, seed=0):
    torch.manual_seed(seed)
    kw = {"lora_rank": rank} if variant in ("faceid", "faceid-plus") else {}
    if variant == "faceid-plus":
        kw["clip_width"] = 1280
    ctx = 768 if base == "sd15" else 2048
    return IPAdapter(make_config(variant, layer_specs(base), ctx, 512, **kw)).eval()


@pytest.fixture(scope="module")
def faceid():
    return LoadedAdapter(faceid_adapter("faceid"), "ip-adapter-faceid_sd15.bin")


@pytest.fixture(scope="module")
def plus():
    return LoadedAdapter(faceid_adapter("faceid-plus", seed=1), "ip-adapter-faceid-plusv2_sd15.bin")


@pytest.fixture
def analyzer(monkeypatch):
    a = StandinFaceAnalyzer()
    monkeypatch.setattr(face_analysis, "load_face_analyzer", lambda provider, model_name: a)
    return a


def _faces(n, seed=0):
    return torch.rand(n, 200, 160, 3, generator=torch.Generator().manual_seed(seed))


def test_encode_face_gives_the_official_faceid_tokens(host, faceid, analyzer):
    img = _faces(2)
    out = IPAEncodeFace().encode(faceid, img, "CPU", combine="batch")
    embeds, crops = out["result"]
    raw = torch.stack([torch.from_numpy(analyzer.embed(nodes_faceid._to_uint8(img[i])).embedding) for i in range(2)])
    want = build_face_prompt(faceid.adapter, raw, combine="batch")
    assert isinstance(embeds, FacePromptEmbeds) and embeds.cond.shape == (2, 4, 768)
    assert torch.equal(embeds.cond, want.cond) and torch.equal(embeds.uncond, want.uncond)
    assert crops.shape == (2, 224, 224, 3) and 0 <= crops.min() and crops.max() <= 1
    assert "2 face(s) encoded" in out["ui"]["text"][0]


def test_no_face_names_the_image_and_several_faces_say_the_largest_was_used(host, faceid, analyzer, monkeypatch):
    img = _faces(3)
    img[1] = 0
    with pytest.raises(face_analysis.FaceAnalysisError, match=r"no face found in image 1 \(of 3\).*640 down to 320"):
        IPAEncodeFace().encode(faceid, img, "CPU")
    crowd = StandinFaceAnalyzer(faces_per_image=3)
    monkeypatch.setattr(face_analysis, "load_face_analyzer", lambda provider, model_name: crowd)
    out = IPAEncodeFace().encode(faceid, _faces(1), "CPU")
    assert "image 0: 3 faces, used the largest" in out["ui"]["text"][0]


def test_plus_encodes_the_crops_with_clip_and_applies_the_v2_shortcut_scale(host, plus, analyzer):
    vit_h = comfy_standin.ClipVisionModel(1280, 1024)
    with pytest.raises(AdapterMismatchError, match="connect a Load CLIP Vision node"):
        IPAEncodeFace().encode(plus, _faces(1), "CPU")
    embeds, crops = IPAEncodeFace().encode(plus, _faces(1), "CPU", clip_vision=vit_h)["result"]
    with torch.no_grad():
        clip = vit_h.model(preprocess_images(crops), intermediate_output=-2)[1]
        uclip = vit_h.model(torch.zeros(1, 3, 224, 224), intermediate_output=-2)[1]
    raw = torch.from_numpy(analyzer.embed(nodes_faceid._to_uint8(_faces(1)[0])).embedding)[None]
    want = build_face_prompt(plus.adapter, raw, clip, uclip, shortcut=True)
    torch.testing.assert_close(embeds.with_faceidv2(0.4).cond, want.with_faceidv2(0.4).cond, rtol=1e-5, atol=1e-5)
    v1, _ = IPAEncodeFace().encode(plus, _faces(1), "CPU", clip_vision=vit_h, plus_version="v1")["result"]
    assert not v1.shortcut and not torch.allclose(v1.cond, embeds.cond)
    big_g = comfy_standin.ClipVisionModel(1664, 1280)
    with pytest.raises(AdapterMismatchError, match="width 1664.*CLIP-ViT-H-14"):
        IPAEncodeFace().encode(plus, _faces(1), "CPU", clip_vision=big_g)


def test_legacy_gives_the_widely_used_packs_face_tokens(host, plus, analyzer, host_preprocess, monkeypatch):
    """legacy: InsightFace sees the picture truncated to 8 bits (not rounded), the crops and a black "no face" image
    go through the host's clip_preprocess (the pack's encoder path) instead of the official zero normalised image."""
    vit_h = comfy_standin.ClipVisionModel(1280, 1024)
    image = torch.full((1, 40, 32, 3), 0.5)  # 127.5: truncated 127, rounded 128
    seen = []
    embed = analyzer.embed
    monkeypatch.setattr(analyzer, "embed", lambda img, crop_size=224: seen.append(img.copy()) or embed(img, crop_size))
    embeds, crops = IPAEncodeFace().encode(plus, image, "CPU", clip_vision=vit_h, legacy=True)["result"]
    assert seen[0].max() == seen[0].min() == 127
    assert host_preprocess == [((1, 224, 224, 3), 224, True)] * 2  # the crop, then the black image
    with torch.no_grad():
        clip = vit_h.model(host_module.clip_preprocess(crops, 224), intermediate_output=-2)[1]
        uclip = vit_h.model(host_module.clip_preprocess(torch.zeros(1, 224, 224, 3), 224), intermediate_output=-2)[1]
    raw = torch.from_numpy(embed(seen[0]).embedding)[None]
    want = build_face_prompt(plus.adapter, raw, clip, uclip, shortcut=True)
    torch.testing.assert_close(embeds.cond, want.cond, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(embeds.uncond, want.uncond, rtol=1e-5, atol=1e-5)
    calls = len(host_preprocess)
    official, _ = IPAEncodeFace().encode(plus, image, "CPU", clip_vision=vit_h)["result"]
    assert not torch.allclose(official.uncond, embeds.uncond) and len(host_preprocess) == calls  # ours: not the host's


def test_apply_uses_weight_faceidv2_in_the_branch(host, plus, analyzer):
    vit_h = comfy_standin.ClipVisionModel(1280, 1024)
    embeds, _ = IPAEncodeFace().encode(plus, _faces(1), "CPU", clip_vision=vit_h)["result"]
    (m,) = IPAApplyAdapter().apply(make_model("sd15"), plus, embeds, 1.0, 0.0, 1.0, faceid_lora_strength=0.0,
                                   weight_faceidv2=0.25)
    branch = next(iter(m.attn2_patches().values())).branches[0]
    k_cond = branch._kv[0][0]
    want_k, _ = plus.adapter.layer_kv(0, embeds.with_faceidv2(0.25).cond)
    assert torch.equal(k_cond, want_k)
    assert not torch.equal(k_cond, plus.adapter.layer_kv(0, embeds.with_faceidv2(1.0).cond)[0])


def test_faceid_and_image_embeds_do_not_mix(host, faceid, analyzer):
    base = LoadedAdapter(random_adapter("base", seed=1), "ip-adapter_sd15.safetensors")
    face_embeds, _ = IPAEncodeFace().encode(faceid, _faces(1), "CPU")["result"]
    with pytest.raises(AdapterMismatchError, match=r"(?s)FaceID face tokens.*ip-adapter_sd15.safetensors is not a FaceID adapter.*Encode Image Prompt"):
        IPAApplyAdapter().apply(make_model("sd15"), base, face_embeds, 1.0, 0.0, 1.0)
    vit_h = comfy_standin.ClipVisionModel(1280, 1024)
    (image_embeds,) = IPAEncodeImagePrompt().encode(base, vit_h, _faces(1))
    with pytest.raises(AdapterMismatchError, match=r"(?s)ip-adapter-faceid_sd15.bin is a FaceID adapter.*Encode Face"):
        IPAApplyAdapter().apply(make_model("sd15"), faceid, image_embeds, 1.0, 0.0, 1.0)
    with pytest.raises(AdapterMismatchError, match="is a FaceID adapter .*Use the Encode Face"):
        IPAEncodeImagePrompt().encode(faceid, vit_h, _faces(1))
    with pytest.raises(AdapterMismatchError, match="Encode Face needs a FaceID adapter, but ip-adapter_sd15"):
        IPAEncodeFace().encode(base, _faces(1), "CPU")


def _unet_shapes(adapter):
    return {t.ldm_key: t.shape for t in lora_targets(adapter)}


def test_lora_goes_to_the_host_as_weight_patches_keyed_by_ldm_names(host, faceid, monkeypatch):
    calls = []
    monkeypatch.setattr(host_module, "unet_weight_shapes", lambda model: _unet_shapes(faceid.adapter))
    monkeypatch.setattr(host_module, "add_unet_lora", lambda model, pairs, s: calls.append((pairs, s)) or list(pairs))
    model = object()
    assert apply_faceid_lora(model, faceid, 0.0) is model and not calls  # strength 0: nothing added
    apply_faceid_lora(model, faceid, 0.8)
    pairs, strength = calls[0]
    assert strength == 0.8 and len(pairs) == 128
    up, down = pairs["output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight"]
    layer = faceid.adapter.lora_layers["29"].to_k_lora  # layer index 14 (output 11) = key 29, attn2
    assert torch.equal(up, layer.up.weight) and torch.equal(down, layer.down.weight)


def test_sd15_lora_on_an_sdxl_unet_names_both_sides(host, faceid, monkeypatch):
    with torch.device("meta"):
        sdxl = faceid_adapter("faceid", "sdxl", rank=4)
    monkeypatch.setattr(host_module, "unet_weight_shapes", lambda model: _unet_shapes(sdxl))
    with pytest.raises(AdapterMismatchError, match=r"(?s)LoRA in ip-adapter-faceid_sd15.bin \(SD1.5, 16 layers\) does not fit .*"
                                                   r"attn2.to_k.weight: model \[\d+, 2048\], LoRA \[\d+, 768\].*_sdxl"):
        apply_faceid_lora(object(), faceid, 1.0)


def test_missing_insightface_names_the_packages_and_the_folder(tmp_path):
    try:
        import insightface  # noqa: F401
        import onnxruntime  # noqa: F401
        pytest.skip("insightface is installed")
    except ImportError:
        pass
    with pytest.raises(face_analysis.FaceAnalysisError, match=r"(?s)pip install insightface onnxruntime.*models.buffalo_l"):
        face_analysis.InsightFaceAnalyzer(str(tmp_path), "CPU", "buffalo_l")


def test_incomplete_model_folder_says_what_is_missing(tmp_path):
    folder = tmp_path / "models" / "buffalo_l"
    folder.mkdir(parents=True)
    (folder / "det_10g.onnx").write_bytes(b"x")
    with pytest.raises(face_analysis.FaceAnalysisError, match=r"incomplete: it needs det_10g.onnx, w600k_r50.onnx \(missing: w600k_r50.onnx\)"):
        face_analysis.check_model_folder(str(tmp_path), "buffalo_l")
    nested = tmp_path / "models" / "antelopev2" / "antelopev2"
    nested.mkdir(parents=True)
    with pytest.raises(face_analysis.FaceAnalysisError, match="move them up one folder"):
        face_analysis.check_model_folder(str(tmp_path), "antelopev2")
    with pytest.raises(face_analysis.FaceAnalysisError, match="unknown execution provider 'TPU'"):
        face_analysis.load_face_analyzer("TPU", "buffalo_l")


def _insightface_root():
    for root in (os.environ.get("INSIGHTFACE_ROOT"),
                 os.path.join(os.environ.get("COMFYUI_PATH", ""), "models", "insightface") if os.environ.get("COMFYUI_PATH") else None):
        if root and os.path.isdir(os.path.join(root, "models", "buffalo_l")):
            return root
    return None


def test_real_insightface_path_when_installed():
    pytest.importorskip("insightface")
    pytest.importorskip("onnxruntime")
    root = _insightface_root()
    if root is None:
        pytest.skip("no InsightFace models (set INSIGHTFACE_ROOT to a folder with models/buffalo_l)")
    analyzer = face_analysis.InsightFaceAnalyzer(root, "CPU", "buffalo_l")
    assert analyzer.embed(np.zeros((256, 256, 3), np.uint8)) is None  # a black image has no face
    import insightface.data

    img = insightface.data.get_image("t1")[:, :, ::-1].copy()  # BGR sample -> RGB, several faces
    face = analyzer.embed(img)
    assert face is not None and face.embedding.shape == (512,) and face.crop.shape == (224, 224, 3)
    assert face.faces_found > 1
