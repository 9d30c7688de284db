"""Legacy mode (reproducing ComfyUI_IPAdapter_plus): Apply leaves the middle block out; Encode uses the host's
clip_preprocess and, for plus adapters, a black image as the unconditional input. The pack's own results are
compared in the real host (tests/integration, run_migrate.py parity); here: what each switch changes."""
import pytest
import torch

from comfy_standin import make_model, run_model
from ip_core.embeds import build_image_prompt
from ip_core.preprocess import preprocess_images
from nodes import host as host_module
from nodes.nodes_apply import IPAApplyAdapter
from nodes.nodes_encode import IPAEncodeImagePrompt


@pytest.fixture
def host_preprocess(monkeypatch):
    """A stand-in for comfy.clip_vision.clip_preprocess that records its calls (squash resize + a visible offset,
    so results tell which preprocessing ran)."""
    calls = []

    def fake(images, size, crop=True):
        calls.append((tuple(images.shape), size, crop))
        return preprocess_images(images, mode="squash", size=size) + 0.25

    monkeypatch.setattr(host_module, "clip_preprocess", fake)
    return calls


def _apply(model, adapter, legacy):
    cfg = adapter.config
    cond = torch.randn(1, cfg.encoder_width, generator=torch.Generator().manual_seed(0)) * 3
    embeds = build_image_prompt(adapter.adapter, cond, torch.zeros_like(cond))
    (patched,) = IPAApplyAdapter().apply(model, adapter, embeds, 1.0, 0.0, 1.0, legacy=legacy)
    return patched


def test_legacy_apply_leaves_the_middle_block_unpatched(host, base):
    model = make_model("sd15")
    ours, legacy = _apply(model, base, False), _apply(model, base, True)
    middle = [k for k in ours.attn2_patches() if k[0] == "middle"]
    assert middle and not [k for k in legacy.attn2_patches() if k[0] == "middle"]
    assert set(legacy.attn2_patches()) == set(ours.attn2_patches()) - set(middle)
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    ctx = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(run_model(ours, x, 5.0, ctx, ctx), run_model(legacy, x, 5.0, ctx, ctx))


def test_legacy_is_off_by_default(host, base):
    model = make_model("sd15")
    assert set(_apply(model, base, False).attn2_patches()) == set(IPAApplyAdapter().apply(
        model, base, build_image_prompt(base.adapter, torch.ones(1, 1024), torch.zeros(1, 1024)), 1.0, 0.0, 1.0)[0].attn2_patches())
    for cls, after in ((IPAApplyAdapter, ["weight_kolors"]), (IPAEncodeImagePrompt, ["tile_sharpening"])):
        spec = cls.INPUT_TYPES()["optional"]  # appended later: Apply's weight_kolors (Kolors FaceID), Encode's tile_sharpening
        assert list(spec)[-1 - len(after):] == ["legacy"] + after and spec["legacy"][1]["default"] is False


@pytest.mark.parametrize("crop, host_crop", [("center", True), ("squash", False), ("pad", None)])
def test_legacy_encode_preprocesses_with_the_host(host, base, vit_h, host_preprocess, crop, host_crop):
    img = torch.rand(1, 240, 320, 3, generator=torch.Generator().manual_seed(0))
    (emb,) = IPAEncodeImagePrompt().encode(base, vit_h, img, crop=crop, legacy=True)
    if host_crop is None:  # pad has no counterpart in the pack: ours
        assert host_preprocess == []
        pixels = preprocess_images(img, mode="pad")
    else:
        assert host_preprocess == [((1, 240, 320, 3), 224, host_crop)]
        pixels = preprocess_images(img, mode="squash") + 0.25
    with torch.no_grad():
        assert torch.allclose(emb.cond, base.adapter.project(vit_h.model(pixels)[2]), atol=1e-6)
        # base adapters: the same unconditional embedding in both modes (zeros before the projection)
        assert torch.allclose(emb.uncond, base.adapter.project(torch.zeros(1, 1024)), atol=1e-6)


def test_legacy_plus_uncond_is_a_black_image_through_the_hosts_preprocessing(host, plus, vit_h, host_preprocess):
    img = torch.rand(2, 224, 224, 3, generator=torch.Generator().manual_seed(0))
    (legacy,) = IPAEncodeImagePrompt().encode(plus, vit_h, img, combine="batch", legacy=True)
    (ours,) = IPAEncodeImagePrompt().encode(plus, vit_h, img, combine="batch")
    assert host_preprocess[-1] == ((1, 224, 224, 3), 224, True)  # the black picture
    with torch.no_grad():
        black = vit_h.model(preprocess_images(torch.zeros(1, 224, 224, 3), mode="squash") + 0.25)[1]
        zero = vit_h.model(torch.zeros(1, 3, 224, 224))[1]
        assert torch.allclose(legacy.uncond, plus.adapter.project(black).expand(2, -1, -1), atol=1e-5)
        assert torch.allclose(ours.uncond, plus.adapter.project(zero).expand(2, -1, -1), atol=1e-5)
    assert not torch.allclose(legacy.uncond, ours.uncond)


def test_a_sigma_window_works_under_inference_mode(host, base):
    """The host's executor samples under torch.inference_mode: its sigmas have no version counter."""
    model = make_model("sd15")
    cond = torch.randn(1, 1024, generator=torch.Generator().manual_seed(0))
    embeds = build_image_prompt(base.adapter, cond, torch.zeros_like(cond))
    (patched,) = IPAApplyAdapter().apply(model, base, embeds, 1.0, 0.0, 0.6)
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    ctx = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        out = run_model(patched, x, 5.0, ctx, ctx)
    assert torch.isfinite(out).all()
