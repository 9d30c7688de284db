"""Encode Image Prompt through the stand-in CLIP vision model."""
import pytest
import torch

import comfy_standin
from ip_core.errors import AdapterMismatchError, IPAdapterError
from ip_core.preprocess import preprocess_images
from nodes.nodes_encode import IPAEncodeImagePrompt


def _images(n, h=240, w=320, seed=0):
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(seed))


def test_base_cond_is_projection_of_image_embeds_and_uncond_of_zeros(host, base, vit_h):
    img = _images(1)
    (emb,) = IPAEncodeImagePrompt().encode(base, vit_h, img)
    with torch.no_grad():
        feats = vit_h.model(preprocess_images(img))[2]
        assert torch.allclose(emb.cond, base.adapter.project(feats), atol=1e-6)
        # official recipe: zeros of the CLIP embedding before the projection (not zero tokens)
        assert torch.allclose(emb.uncond, base.adapter.project(torch.zeros_like(feats)), atol=1e-6)
    assert emb.cond.shape == (1, 4, 768) and emb.uncond.abs().sum() > 0
    assert host.model_management.loaded, "the host must load the CLIP vision model before running it"


def test_plus_uncond_is_zero_pixels_through_the_encoder(host, plus, vit_h):
    (emb,) = IPAEncodeImagePrompt().encode(plus, vit_h, _images(1))
    with torch.no_grad():
        hidden = vit_h.model(torch.zeros(1, 3, 224, 224), intermediate_output=-2)[1]
        assert torch.allclose(emb.uncond, plus.adapter.project(hidden), atol=1e-5)
    assert emb.cond.shape == (1, 16, 768)


def test_encoder_mismatch_names_both_models(host, base):
    big_g = comfy_standin.ClipVisionModel(1664, 1280)
    with pytest.raises(AdapterMismatchError, match=r"(?s)ViT-H/14.*width 1280.*ViT-bigG/14.*CLIP-ViT-H-14"):
        IPAEncodeImagePrompt().encode(base, big_g, _images(1))


def test_plus_needs_hidden_states_of_the_right_width(host, plus):
    big_g = comfy_standin.ClipVisionModel(1664, 1280)
    with pytest.raises(AdapterMismatchError, match="penultimate_hidden_states"):
        IPAEncodeImagePrompt().encode(plus, big_g, _images(1))


@pytest.mark.parametrize("combine,shape", [("concat", (1, 12, 768)), ("average", (1, 4, 768)),
                                           ("norm average", (1, 4, 768)), ("batch", (3, 4, 768))])
def test_combine_modes(host, base, vit_h, combine, shape):
    (emb,) = IPAEncodeImagePrompt().encode(base, vit_h, _images(3), combine=combine)
    assert emb.cond.shape == shape and emb.uncond.shape == shape


def test_average_equals_projection_of_mean_features(host, base, vit_h):
    imgs = _images(2)
    (emb,) = IPAEncodeImagePrompt().encode(base, vit_h, imgs, combine="average")
    with torch.no_grad():
        feats = vit_h.model(preprocess_images(imgs))[2].mean(0, keepdim=True)
        assert torch.allclose(emb.cond, base.adapter.project(feats), atol=1e-6)


def test_negative_image_replaces_uncond(host, base, vit_h):
    img, neg = _images(1, seed=1), _images(1, seed=2)
    (plain,) = IPAEncodeImagePrompt().encode(base, vit_h, img)
    (with_neg,) = IPAEncodeImagePrompt().encode(base, vit_h, img, negative_image=neg)
    (neg_as_cond,) = IPAEncodeImagePrompt().encode(base, vit_h, neg)
    assert torch.equal(plain.cond, with_neg.cond)
    assert torch.allclose(with_neg.uncond, neg_as_cond.cond, atol=1e-6)
    assert not torch.allclose(with_neg.uncond, plain.uncond)


def test_crop_modes_see_different_parts_of_a_wide_image(host, base, vit_h):
    wide = torch.zeros(1, 100, 400, 3)
    wide[:, :, :100] = 1.0  # only the left edge is white: a centre crop cuts it away
    outs = {m: IPAEncodeImagePrompt().encode(base, vit_h, wide, crop=m)[0].cond for m in ("center", "pad", "squash")}
    assert not torch.allclose(outs["center"], outs["pad"])
    assert not torch.allclose(outs["pad"], outs["squash"])
    black = IPAEncodeImagePrompt().encode(base, vit_h, torch.zeros(1, 100, 400, 3), crop="center")[0].cond
    assert torch.allclose(outs["center"], black)  # centre crop really lost the white edge


def test_empty_batch_and_bad_inputs(host, base, vit_h):
    with pytest.raises(IPAdapterError, match="empty batch"):
        IPAEncodeImagePrompt().encode(base, vit_h, torch.zeros(0, 64, 64, 3))
    with pytest.raises(IPAdapterError, match="empty batch"):
        IPAEncodeImagePrompt().encode(base, vit_h, _images(1), negative_image=torch.zeros(0, 64, 64, 3))
    with pytest.raises(IPAdapterError, match="Load CLIP Vision"):
        IPAEncodeImagePrompt().encode(base, object(), _images(1))
    with pytest.raises(IPAdapterError, match="IPA_ADAPTER"):
        IPAEncodeImagePrompt().encode("not an adapter", vit_h, _images(1))
    nan = _images(1)
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(IPAdapterError, match="NaN"):
        IPAEncodeImagePrompt().encode(base, vit_h, nan)


def test_progress_bar_and_interrupt(host, base, vit_h, monkeypatch):
    monkeypatch.setattr("nodes.nodes_encode.ENCODE_CHUNK", 2)
    host.utils.ProgressBar.instances.clear()
    IPAEncodeImagePrompt().encode(base, vit_h, _images(5, 32, 32))
    bar = host.utils.ProgressBar.instances[-1]
    assert bar.total == 6 and bar.current == 6  # 5 references + the unconditional pass
    host.model_management.interrupt_processing = True
    with pytest.raises(comfy_standin.InterruptProcessingException):
        IPAEncodeImagePrompt().encode(base, vit_h, _images(5, 32, 32))
