"""Kolors FaceID-Plus in the nodes: Encode Face crops at 336 px for the ViT-L/14-336 CLIP part (a 224 px encoder is
refused), Apply IPAdapter sends the 4096-wide tokens through the model's encoder_hid_proj scaled by weight_kolors,
and a model without one (plain SDXL) is refused naming both sides. Small projection (64-wide tokens), SDXL's 70
layers (stride-0 K'/V' as in conftest.sdxl_adapter), the stand-in host."""
import pytest
import torch

import comfy_standin
from comfy_standin import make_model, run_model
from conftest import sdxl_adapter
from face_standin import StandinFaceAnalyzer
from ip_core.config import make_config
from ip_core.errors import AdapterMismatchError, IPAdapterError
from ip_core.families.faceid import build_face_prompt
from ip_core.families.kolors import hid_proj_tokens
from ip_core.layers import layer_specs
from ip_core.preprocess import preprocess_images
from nodes import face_analysis, nodes_faceid
from nodes.common import LoadedAdapter
from nodes.nodes_apply import IPAApplyAdapter
from nodes.nodes_faceid import IPAEncodeFace

TOKEN_DIM = 64


def _kolors_faceid(seed=0):
    config = make_config("faceid-plus", layer_specs("sdxl"), 2048, 512, num_tokens=6, clip_width=1024, token_dim=TOKEN_DIM)
    return sdxl_adapter(seed, config, proj_scale=0.1, kv_scale=0.05)


@pytest.fixture(scope="module")
def kolors():
    return LoadedAdapter(_kolors_faceid(), "Kolors-IP-Adapter-FaceID-Plus.bin")


@pytest.fixture
def analyzer(monkeypatch):
    a = StandinFaceAnalyzer()
    monkeypatch.setattr(face_analysis, "load_face_analyzer", lambda provider, model_name: a)
    return a


def _clip_336():
    cv = comfy_standin.ClipVisionModel(1024, 768)
    cv.image_size = 336  # ViT-L/14-336: 24 x 24 patches + CLS = 577 tokens
    return cv


def _kolors_model(seed=0):
    """The stand-in SDXL model with the layer Kolors loaders give the UNet (ComfyUI-Kolors-MZ's KolorsUNetModel)."""
    m = make_model("sdxl", seed)
    torch.manual_seed(seed)
    m.model.diffusion_model.encoder_hid_proj = torch.nn.Linear(TOKEN_DIM, 2048)
    return m


def _faces(n, seed=0):
    return torch.rand(n, 200, 160, 3, generator=torch.Generator().manual_seed(seed))


def test_encode_face_crops_336_px_and_uses_a_black_image_for_no_face(host, kolors, analyzer):
    cv = _clip_336()
    embeds, crops = IPAEncodeFace().encode(kolors, _faces(1), "CPU", clip_vision=cv)["result"]
    assert crops.shape == (1, 336, 336, 3) and embeds.cond.shape == (1, 6, TOKEN_DIM)
    with torch.no_grad():
        clip = cv.model(preprocess_images(crops, size=336), intermediate_output=-2)[1]
        black = preprocess_images(torch.zeros(1, 336, 336, 3), size=336)  # the widely used pack's "no face"
        uclip = cv.model(black, intermediate_output=-2)[1]
    assert clip.shape == (1, 577, 1024) and black.abs().min() > 0  # normalised black, not zero pixel values
    raw = torch.from_numpy(analyzer.embed(nodes_faceid._to_uint8(_faces(1)[0]), crop_size=336).embedding)[None]
    want = build_face_prompt(kolors.adapter, raw, clip, uclip, shortcut=True)
    torch.testing.assert_close(embeds.cond, want.cond, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(embeds.uncond, want.uncond, rtol=1e-5, atol=1e-5)


def test_a_224_px_vit_l_and_a_missing_encoder_are_refused_naming_the_336_file(host, kolors, analyzer):
    with pytest.raises(AdapterMismatchError, match=r"connect a Load CLIP Vision node \(ViT-L/14-336, clip-vit-large-patch14-336\)"):
        IPAEncodeFace().encode(kolors, _faces(1), "CPU")
    with pytest.raises(AdapterMismatchError, match=r"\(577 tokens, 336 px images\), but the connected CLIP vision model gives 257 tokens"):
        IPAEncodeFace().encode(kolors, _faces(1), "CPU", clip_vision=comfy_standin.ClipVisionModel(1024, 768))
    with pytest.raises(AdapterMismatchError, match="width 1280.*clip-vit-large-patch14-336"):
        IPAEncodeFace().encode(kolors, _faces(1), "CPU", clip_vision=comfy_standin.ClipVisionModel(1280, 1024))


def test_apply_sends_the_tokens_through_the_models_encoder_hid_proj_scaled_by_weight_kolors(host, kolors, analyzer):
    embeds, _ = IPAEncodeFace().encode(kolors, _faces(1), "CPU", clip_vision=_clip_336())["result"]
    model = _kolors_model()
    hid = model.model.diffusion_model.encoder_hid_proj
    (m,) = IPAApplyAdapter().apply(model, kolors, embeds, 1.0, 0.0, 1.0, weight_faceidv2=0.5, weight_kolors=1.5)
    branch = next(iter(m.attn2_patches().values())).branches[0]
    k_cond, v_cond, k_uncond, _ = branch._kv[0]
    scaled = embeds.with_faceidv2(0.5)
    want_k, want_v = kolors.adapter.layer_kv(0, hid_proj_tokens(scaled.cond, hid.weight.detach(), hid.bias.detach(), 1.5))
    torch.testing.assert_close(k_cond, want_k, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(v_cond, want_v, rtol=1e-6, atol=1e-6)
    want_ku, _ = kolors.adapter.layer_kv(0, hid_proj_tokens(scaled.uncond, hid.weight.detach(), hid.bias.detach(), 1.5))
    torch.testing.assert_close(k_uncond, want_ku, rtol=1e-6, atol=1e-6)
    # default weight_kolors 1: the official pipeline's encoder_hid_proj(tokens)
    (m1,) = IPAApplyAdapter().apply(model, kolors, embeds, 1.0, 0.0, 1.0)
    k1 = next(iter(m1.attn2_patches().values())).branches[0]._kv[0][0]
    with torch.no_grad():
        torch.testing.assert_close(k1, kolors.adapter.layer_kv(0, hid(embeds.with_faceidv2(1.0).cond))[0], rtol=1e-6, atol=1e-6)
    # the model output: weight 0 is the unpatched model bit for bit; weight 1 differs
    g = torch.Generator().manual_seed(3)
    x, ctx, uctx = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 8, 2048, generator=g), torch.randn(1, 8, 2048, generator=g)
    plain = run_model(model, x, 5.0, ctx, uctx)
    (zero,) = IPAApplyAdapter().apply(model, kolors, embeds, 0.0, 0.0, 1.0, weight_kolors=2.0)
    assert torch.equal(run_model(zero, x, 5.0, ctx, uctx), plain)
    assert not torch.equal(run_model(m, x, 5.0, ctx, uctx), plain)


def test_a_model_without_encoder_hid_proj_is_refused_naming_both_sides(host, kolors, analyzer):
    embeds, _ = IPAEncodeFace().encode(kolors, _faces(1), "CPU", clip_vision=_clip_336())["result"]
    with pytest.raises(AdapterMismatchError, match=r"(?s)needs the Kolors UNet's encoder_hid_proj \(Linear 64 -> 2048\), "
                                                   r"but the model's UNet has none: it is not a Kolors UNet.*"
                                                   r"Kolors-IP-Adapter-FaceID-Plus.bin needs a Kolors model"):
        IPAApplyAdapter().apply(make_model("sdxl"), kolors, embeds, 1.0, 0.0, 1.0)
    with pytest.raises(IPAdapterError, match="weight_kolors"):
        IPAApplyAdapter().apply(_kolors_model(), kolors, embeds, 1.0, 0.0, 1.0, weight_kolors=9.0)
    with pytest.raises(IPAdapterError, match="takes no composition_embeds"):
        IPAApplyAdapter().apply(_kolors_model(), kolors, embeds, 1.0, 0.0, 1.0, weight_type="style and composition",
                                composition_embeds=embeds)
