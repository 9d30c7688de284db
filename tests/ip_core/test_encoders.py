"""Encoders on a tiny OpenCLIP ViT: both backends agree, conversion is exact, files load safely or are refused."""
import os
import pickle

import pytest
import torch

from ip_core.encoders import (
    EncoderOutput,
    OpenCLIPEncoder,
    TransformersCLIPEncoder,
    VisionDims,
    build_openclip_visual,
    load_image_encoder,
    encoder_name_for_dims,
    openclip_to_transformers,
    transformers_config_for_openclip,
    transformers_to_openclip,
)
from ip_core.errors import AdapterFileError, IPAdapterError, UnsupportedAdapterError

pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")
from safetensors.torch import save_file  # noqa: E402

# A 3-block ViT (width 64, 4 heads, patch 14, 56 px -> 16 patches + class token, projection 32).
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 56, "layers": 3, "width": 64, "head_width": 16, "patch_size": 14},
    "text_cfg": {"context_length": 8, "vocab_size": 16, "width": 32, "heads": 2, "layers": 1},
}
LAYERS, WIDTH, TOKENS, PROJ = 3, 64, 17, 32


@pytest.fixture(scope="module")
def tiny_visual():
    torch.manual_seed(0)
    visual = build_openclip_visual(TINY_CFG)
    with torch.no_grad():
        # Perturb everything (LayerNorms start at 1/0) so a swapped or dropped tensor changes the outputs.
        for p in visual.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return visual.eval()


@pytest.fixture(scope="module")
def tiny_hf(tiny_visual):
    model = transformers.CLIPVisionModelWithProjection(transformers_config_for_openclip(tiny_visual))
    model.load_state_dict(openclip_to_transformers(tiny_visual.state_dict()), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(1))


def _assert_same_outputs(a: EncoderOutput, b: EncoderOutput, atol=1e-5):
    assert a.image_embeds.shape == b.image_embeds.shape
    assert a.penultimate_hidden_states.shape == b.penultimate_hidden_states.shape
    cos = torch.nn.functional.cosine_similarity(a.image_embeds, b.image_embeds, dim=-1)
    assert cos.min().item() > 0.9999
    torch.testing.assert_close(a.image_embeds, b.image_embeds, atol=atol, rtol=1e-4)
    torch.testing.assert_close(a.penultimate_hidden_states, b.penultimate_hidden_states, atol=atol, rtol=1e-4)


def _full_openclip_dict(visual):
    # What open_clip_pytorch_model.bin looks like: visual.* plus a text tower we must ignore.
    sd = {f"visual.{k}": v.clone() for k, v in visual.state_dict().items()}
    sd["token_embedding.weight"] = torch.randn(16, 32)
    sd["logit_scale"] = torch.tensor(4.6)
    return sd


# ---------------------------------------------------------------------------------------------------------
# Outputs


def test_openclip_encoder_outputs(tiny_visual, pixels):
    enc = OpenCLIPEncoder.from_model(tiny_visual)
    assert (enc.hidden_size, enc.projection_dim, enc.image_size, enc.name) == (WIDTH, PROJ, 56, "unknown")
    with torch.no_grad():
        out = enc.encode(pixels)
        expected_embeds = tiny_visual(pixels)  # open_clip's own forward: pooled, projected, not normalised
    assert out.image_embeds.shape == (2, PROJ)
    assert out.penultimate_hidden_states.shape == (2, TOKENS, WIDTH)
    torch.testing.assert_close(out.image_embeds, expected_embeds, atol=1e-6, rtol=0)
    assert not torch.allclose(out.image_embeds.norm(dim=-1), torch.ones(2))

    # Penultimate = output of block L-1 (the input of the last block), seen through a hook.
    seen = {}
    hook = tiny_visual.transformer.resblocks[LAYERS - 2].register_forward_hook(lambda m, i, o: seen.update(x=o))
    try:
        with torch.no_grad():
            tiny_visual(pixels)
    finally:
        hook.remove()
    torch.testing.assert_close(out.penultimate_hidden_states, seen["x"], atol=0, rtol=0)


def test_backends_agree_after_conversion(tiny_visual, tiny_hf, pixels):
    oc, hf = OpenCLIPEncoder.from_model(tiny_visual), TransformersCLIPEncoder.from_model(tiny_hf)
    assert (hf.hidden_size, hf.projection_dim, hf.image_size) == (oc.hidden_size, oc.projection_dim, oc.image_size)
    with torch.no_grad():
        a, b = oc.encode(pixels), hf.encode(pixels)
        hs = tiny_hf(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert len(hs) == LAYERS + 1  # embeddings (after pre_layrnorm) + one per block: [-2] is block L-1's output
    _assert_same_outputs(a, b)
    # The backends must not be trivially equal on an unrelated input either (the check can fail).
    with torch.no_grad():
        c = oc.encode(pixels.flip(-1))
    assert not torch.allclose(c.image_embeds, b.image_embeds, atol=1e-3)


def test_config_matches_openclip_vit_h_and_bigg():
    h = transformers_config_for_openclip("ViT-H-14")
    assert (h.hidden_size, h.num_hidden_layers, h.num_attention_heads, h.intermediate_size) == (1280, 32, 16, 5120)
    assert (h.patch_size, h.image_size, h.projection_dim, h.hidden_act, h.layer_norm_eps) == (14, 224, 1024, "gelu", 1e-5)
    g = transformers_config_for_openclip("ViT-bigG-14")
    assert (g.hidden_size, g.num_hidden_layers, g.num_attention_heads, g.intermediate_size, g.projection_dim) == (1664, 48, 16, 8192, 1280)
    tiny = transformers_config_for_openclip(VisionDims(width=64, layers=3, heads=4, mlp_dim=256, output_dim=32, image_size=56))
    assert (tiny.hidden_size, tiny.num_attention_heads, tiny.image_size) == (64, 4, 56)
    assert encoder_name_for_dims(1280, 1024) == "ViT-H/14" and encoder_name_for_dims(1664, 1280) == "ViT-bigG/14"
    with pytest.raises(IPAdapterError, match="ViT-H-14"):
        transformers_config_for_openclip("ViT-Q-99")


def test_vit_h_architecture_builds_without_weights_or_network():
    visual = build_openclip_visual("ViT-H-14", device="meta")  # shapes only: no memory, no download
    sd = visual.state_dict()
    assert sd["conv1.weight"].shape == (1280, 3, 14, 14) and sd["proj"].shape == (1280, 1024)
    assert sd["positional_embedding"].shape == (257, 1280)
    assert sum(1 for k in sd if k.endswith("attn.in_proj_weight")) == 32
    with torch.device("meta"):
        hf = transformers.CLIPVisionModelWithProjection(transformers_config_for_openclip("ViT-H-14"))
    expected = {k: tuple(v.shape) for k, v in hf.state_dict().items() if not k.endswith("position_ids")}
    converted = {k: tuple(v.shape) for k, v in openclip_to_transformers(sd).items()}
    assert converted == expected


# ---------------------------------------------------------------------------------------------------------
# Conversion


def test_round_trips_are_exact(tiny_visual, tiny_hf):
    full = _full_openclip_dict(tiny_visual)
    hf_sd = openclip_to_transformers(full)  # text keys ignored
    assert all(k.startswith(("vision_model.", "visual_projection.")) for k in hf_sd)
    back = transformers_to_openclip(hf_sd)
    visual_only = {k: v for k, v in full.items() if k.startswith("visual.")}
    assert set(back) == set(visual_only)
    assert all(torch.equal(back[k], visual_only[k]) for k in back)

    model_sd = {k: v for k, v in tiny_hf.state_dict().items() if not k.endswith("position_ids")}
    again = openclip_to_transformers(transformers_to_openclip(model_sd))
    assert set(again) == set(model_sd)
    assert all(torch.equal(again[k], model_sd[k]) for k in again)
    # Vision-only OpenCLIP keys (no visual. prefix) convert the same, and prefix="" gives them back.
    assert set(openclip_to_transformers(tiny_visual.state_dict())) == set(hf_sd)
    assert set(transformers_to_openclip(hf_sd, prefix="")) == set(tiny_visual.state_dict())


def test_conversion_refusals(tiny_visual):
    sd = dict(tiny_visual.state_dict())
    with pytest.raises(IPAdapterError, match="ln_post.weight is missing"):
        openclip_to_transformers({k: v for k, v in sd.items() if k != "ln_post.weight"})
    with pytest.raises(IPAdapterError, match=r"blocks \[1\] are missing"):
        openclip_to_transformers({k: v for k, v in sd.items() if not k.startswith("transformer.resblocks.1.")})
    with pytest.raises(UnsupportedAdapterError, match="ls_1"):
        openclip_to_transformers({**sd, "transformer.resblocks.0.ls_1.gamma": torch.ones(WIDTH)})
    hf_sd = openclip_to_transformers(sd)
    with pytest.raises(IPAdapterError, match="visual_projection"):
        transformers_to_openclip({k: v for k, v in hf_sd.items() if k != "visual_projection.weight"})
    with pytest.raises(IPAdapterError, match="vision_model"):
        transformers_to_openclip(sd)


# ---------------------------------------------------------------------------------------------------------
# Files


@pytest.mark.parametrize("layout", ["openclip-full.safetensors", "openclip-visual.bin", "transformers.safetensors", "wrapped.pt"])
def test_from_checkpoint_layouts(tmp_path, tiny_visual, pixels, layout):
    full = _full_openclip_dict(tiny_visual)
    path = tmp_path / layout
    if layout == "openclip-full.safetensors":
        save_file(full, str(path))
    elif layout == "openclip-visual.bin":
        torch.save(dict(tiny_visual.state_dict()), path)
    elif layout == "transformers.safetensors":
        save_file(openclip_to_transformers(full), str(path))
    else:  # open_clip training checkpoint: {"epoch", "state_dict": {"module.visual...."}}
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in full.items()}}, path)
    enc = load_image_encoder(path, arch=TINY_CFG)
    assert isinstance(enc, OpenCLIPEncoder)
    with torch.no_grad():
        _assert_same_outputs(enc.encode(pixels), OpenCLIPEncoder.from_model(tiny_visual).encode(pixels), atol=1e-6)
    assert enc.dtype == torch.float32 and not any(p.requires_grad for p in enc.module.parameters())
    assert all(p.device.type == "cpu" for p in enc.module.parameters())  # nothing left on the meta device


def test_from_checkpoint_dtype(tmp_path, tiny_visual, pixels):
    path = tmp_path / "v.safetensors"
    save_file({k: v.half() for k, v in _full_openclip_dict(tiny_visual).items()}, str(path))
    enc = OpenCLIPEncoder.from_checkpoint(path, arch=TINY_CFG, dtype=torch.bfloat16)
    assert enc.dtype == torch.bfloat16
    with torch.no_grad():
        out = enc.encode(pixels)  # float pixels are cast to the encoder's dtype
    assert out.image_embeds.dtype == torch.bfloat16


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "open_clip_pytorch_model.bin"
    with open(path, "wb") as f:
        pickle.dump({"visual.conv1.weight": torch.zeros(1), "evil": _RunsCode(marker)}, f, protocol=2)
    torch.save({"visual.conv1.weight": torch.zeros(1), "evil": _RunsCode(marker)}, tmp_path / "zip.pt")
    for p in (path, tmp_path / "zip.pt"):
        with pytest.raises(AdapterFileError, match=p.name):
            OpenCLIPEncoder.from_checkpoint(p, arch=TINY_CFG)
    assert not marker.exists()


def test_wrong_architecture_is_refused_with_remedy(tmp_path, tiny_visual):
    path = tmp_path / "tiny.safetensors"
    save_file(_full_openclip_dict(tiny_visual), str(path))
    with pytest.raises(AdapterFileError, match=r"tiny\.safetensors: does not fit the ViT-H-14 architecture.*other shapes"):
        OpenCLIPEncoder.from_checkpoint(path, arch="ViT-H-14")


def test_bigg_file_for_vit_h_names_the_right_arch(tmp_path):
    # Real shapes, zero storage cost: a bigG-shaped dict of empty (expanded scalar) tensors, checked against ViT-H.
    from ip_core.encoders import _check_shapes

    bigg = {k: torch.empty(()).expand(v.shape) for k, v in build_openclip_visual("ViT-bigG-14", device="meta").state_dict().items()}
    vit_h = build_openclip_visual("ViT-H-14", device="meta").state_dict()
    with pytest.raises(AdapterFileError, match="pass arch='ViT-bigG-14'"):
        _check_shapes(vit_h, bigg, tmp_path / "CLIP-ViT-H-14.safetensors", "ViT-H-14")


def test_non_vision_files_are_refused(tmp_path, tiny_visual):
    adapter = tmp_path / "ip-adapter_sd15.safetensors"
    save_file({"image_proj.proj.weight": torch.zeros(4, 4), "ip_adapter.1.to_k_ip.weight": torch.zeros(4, 4)}, str(adapter))
    with pytest.raises(AdapterFileError, match="ip-adapter_sd15.safetensors: not a CLIP vision model.*IP-Adapter file"):
        OpenCLIPEncoder.from_checkpoint(adapter, arch=TINY_CFG)

    truncated = tmp_path / "clip.safetensors"
    save_file(_full_openclip_dict(tiny_visual), str(truncated))
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(AdapterFileError, match="clip.safetensors"):
        OpenCLIPEncoder.from_checkpoint(truncated, arch=TINY_CFG)

    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(AdapterFileError, match="empty"):
        OpenCLIPEncoder.from_checkpoint(empty, arch=TINY_CFG)
    html = tmp_path / "page.bin"
    html.write_bytes(b"<html>404</html>")
    with pytest.raises(AdapterFileError, match="unrecognised file format"):
        OpenCLIPEncoder.from_checkpoint(html, arch=TINY_CFG)
    with pytest.raises(AdapterFileError, match="no such file"):
        OpenCLIPEncoder.from_checkpoint(tmp_path / "missing.safetensors", arch=TINY_CFG)

    no_proj = tmp_path / "vision_no_projection.safetensors"
    hf_sd = openclip_to_transformers(tiny_visual.state_dict())
    del hf_sd["visual_projection.weight"]
    save_file(hf_sd, str(no_proj))
    with pytest.raises(AdapterFileError, match="vision_no_projection.safetensors: .*visual_projection"):
        OpenCLIPEncoder.from_checkpoint(no_proj, arch=TINY_CFG)


def test_arch_names_never_download():
    for bad in ("hf-hub:laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "local-dir:/tmp/x"):
        with pytest.raises(IPAdapterError, match="nothing is downloaded"):
            build_openclip_visual(bad, device="meta")
    with pytest.raises(IPAdapterError, match="unknown open_clip architecture"):
        build_openclip_visual("ViT-Q-99", device="meta")


def test_transformers_from_pretrained(tmp_path, tiny_hf, pixels):
    tiny_hf.save_pretrained(tmp_path / "clip_vision")
    enc = TransformersCLIPEncoder.from_pretrained(tmp_path / "clip_vision")
    assert isinstance(load_image_encoder(tmp_path / "clip_vision"), TransformersCLIPEncoder)
    with torch.no_grad():
        _assert_same_outputs(enc.encode(pixels), TransformersCLIPEncoder.from_model(tiny_hf).encode(pixels), atol=0)
    with pytest.raises(AdapterFileError, match="config.json"):
        TransformersCLIPEncoder.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(UnsupportedAdapterError, match="CLIPVisionModelWithProjection"):
        TransformersCLIPEncoder.from_model(transformers.CLIPVisionModel(tiny_hf.config))


# ---------------------------------------------------------------------------------------------------------
# Images in, features out


def test_encode_images_from_comfy_image(tiny_visual):
    enc = OpenCLIPEncoder.from_model(tiny_visual)
    images = torch.rand(3, 40, 90, 3, generator=torch.Generator().manual_seed(2))  # ComfyUI IMAGE, wide
    for mode in ("center", "pad", "squash"):
        out = enc.encode_images(images, mode=mode)
        assert out.image_embeds.shape == (3, PROJ) and out.penultimate_hidden_states.shape == (3, TOKENS, WIDTH)
        assert not out.image_embeds.requires_grad
    centre, pad = enc.encode_images(images, "center"), enc.encode_images(images, "pad")
    assert not torch.allclose(centre.image_embeds, pad.image_embeds, atol=1e-4)
    with pytest.raises(IPAdapterError, match=r"preprocess_images\(images, size=56\)"):
        enc.encode(torch.zeros(1, 3, 224, 224))
    with pytest.raises(UnsupportedAdapterError, match="not an open_clip VisionTransformer"):
        OpenCLIPEncoder.from_model(torch.nn.Linear(2, 2))
