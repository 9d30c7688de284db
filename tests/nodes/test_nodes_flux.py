"""Flux adapters on the nodes (stand-in host): loading XLabs files, encoding with the right / wrong CLIP vision,
the unconditional image, the family checks. The patching itself runs in the real host (tests/integration
test_integration_flux.py): the stand-in has no Flux model."""
import os

import pytest
import torch
from safetensors.torch import save_file

import comfy_standin
from comfy_standin import make_model
from ip_core.embeds import build_image_prompt
from ip_core.errors import AdapterMismatchError
from ipa_factories import randomize
from ip_core.families.flux import FluxIPAdapter, make_flux_config
from ip_core.preprocess import preprocess_images
from nodes.common import LoadedAdapter
from nodes.nodes_apply import IPAApplyAdapter
from nodes.nodes_encode import IPAEncodeImagePrompt
from nodes.nodes_load import IPALoadAdapter


@pytest.fixture(scope="module")
def xlabs():
    return LoadedAdapter(randomize(FluxIPAdapter(make_flux_config("flux-xlabs", 3, 0, 64, 32, 768, 16))), "flux-ip-adapter-v2.safetensors")


@pytest.fixture(scope="module")
def instantx():
    return LoadedAdapter(randomize(FluxIPAdapter(make_flux_config("flux-instantx", 1, 2, 64, 32, 1152, 8))), "ip-adapter.bin")


def _images(n, seed=0):
    return torch.rand(n, 200, 260, 3, generator=torch.Generator().manual_seed(seed))


def test_load_node_reads_an_xlabs_file_under_any_name(host, xlabs):
    sd = xlabs.adapter.released_state_dict()
    flat = {f"ip_adapter_proj_model.{k}": v for k, v in sd["image_proj"].items()}
    for k, v in sd["ip_adapter"].items():
        i, name, part = k.split(".")
        flat[f"double_blocks.{i}.processor.ip_adapter_double_stream_{name[3]}_proj.{part}"] = v
    save_file(flat, os.path.join(host.models_dir, "ipadapter", "my flux style.safetensors"))
    out = IPALoadAdapter().load("my flux style.safetensors")
    assert out["ui"]["text"] == ["my flux style.safetensors: Flux XLabs flux-ip-adapter v2, 16 tokens, 3 double blocks, "
                                 "needs ViT-L/14 image_embeds (width 768)"]
    # for the web extension: the family, and Apply's family inputs this adapter does not read (all: Flux reads none)
    assert out["ui"]["family"] == ["flux"]
    assert out["ui"]["unused_inputs"] == ["faceid_lora_strength", "weight_faceidv2", "weight_kolors"]
    assert out["result"][0].adapter.fingerprint() == xlabs.adapter.fingerprint()


def test_xlabs_encodes_clip_l_embeds_with_a_black_image_as_negative(host, xlabs):
    vit_l = comfy_standin.ClipVisionModel(1024, 768)
    img = _images(2)
    (emb,) = IPAEncodeImagePrompt().encode(xlabs, vit_l, img, combine="batch")
    with torch.no_grad():
        feats = vit_l.model(preprocess_images(img))[2]
        black = vit_l.model(preprocess_images(torch.zeros(1, 224, 224, 3)))[2]
        assert torch.allclose(emb.cond, torch.cat([xlabs.adapter.project(f[None]) for f in feats]), atol=1e-6)
        # diffusers' Flux pipeline: no negative image given -> a black image through the encoder
        assert torch.allclose(emb.uncond, xlabs.adapter.project(black).expand(2, -1, -1), atol=1e-6)
    assert emb.cond.shape == (2, 16, 32)
    (neg,) = IPAEncodeImagePrompt().encode(xlabs, vit_l, img[:1], negative_image=img[1:])
    with torch.no_grad():
        assert torch.allclose(neg.uncond, xlabs.adapter.project(feats[1:]), atol=1e-6)


def test_wrong_encoders_are_named(host, xlabs, instantx):
    vit_h = comfy_standin.ClipVisionModel(1280, 1024)
    with pytest.raises(AdapterMismatchError, match=r"(?s)ViT-L/14.*width 1024.*ViT-H/14"):
        IPAEncodeImagePrompt().encode(xlabs, vit_h, _images(1))
    with pytest.raises(AdapterMismatchError, match=r"(?s)SigLIP so400m.*width 768.*ViT-L/14"):
        IPAEncodeImagePrompt().encode(instantx, comfy_standin.ClipVisionModel(1024, 768), _images(1))


def test_hosts_siglip_tokens_are_refused_for_instantx(host, instantx):
    siglip = comfy_standin.ClipVisionModel(1152, 1152)
    model = siglip.model
    forward = model.forward
    # ComfyUI's SigLIP returns the layer-normed token states as image_embeds (no pooling head)
    model.forward = lambda pixel_values, intermediate_output=None: (lambda o: (o[0], o[1], o[0], None))(forward(pixel_values, intermediate_output))
    with pytest.raises(AdapterMismatchError, match="pooler_output"):
        IPAEncodeImagePrompt().encode(instantx, siglip, _images(1))


def test_flux_adapter_on_sd_model_and_sd_options_are_refused(host, xlabs):
    feats = torch.randn(1, 768)
    embeds = build_image_prompt(xlabs.adapter, feats, torch.zeros_like(feats))
    with pytest.raises(AdapterMismatchError, match=r"an adapter for Flux but the model is SD1\.5"):
        IPAApplyAdapter().apply(make_model("sd15"), xlabs, embeds, 1.0, 0.0, 1.0)
    with pytest.raises(AdapterMismatchError, match=r"an adapter for Flux but the model is SDXL"):
        IPAApplyAdapter().apply(make_model("sdxl"), xlabs, embeds, 1.0, 0.0, 1.0)


def test_tiled_xlabs_references_get_the_black_image_negative_too(host, xlabs):
    vit_l = comfy_standin.ClipVisionModel(1024, 768)
    (emb,) = IPAEncodeImagePrompt().encode(xlabs, vit_l, torch.rand(1, 256, 600, 3), tiles="tiled")
    with torch.no_grad():
        black = xlabs.adapter.project(vit_l.model(preprocess_images(torch.zeros(1, 224, 224, 3)))[2])
    assert emb.region_masks is not None and emb.uncond.shape[0] == emb.cond.shape[0] > 1
    assert torch.allclose(emb.uncond, black.expand(emb.uncond.shape[0], -1, -1), atol=1e-6)
