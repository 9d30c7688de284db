"""Preprocessing: bit-exact with transformers' CLIPImageProcessor (PIL), and sane pad / squash modes."""
import numpy as np
import pytest
import torch

from ip_core.errors import IPAdapterError
from ip_core.preprocess import CLIP_MEAN, CLIP_STD, pil_bicubic_resize, preprocess_images

Image = pytest.importorskip("PIL.Image")


def _pil_processor():
    transformers = pytest.importorskip("transformers")
    # transformers >= 5 renamed the PIL implementation (the one the official IP-Adapter code ran) to *Pil;
    # in 4.x CLIPImageProcessor itself is the PIL one.
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls()


def _noise(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth(h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    chans = [127 + 120 * np.sin(xx / 17.0 + c) * np.cos(yy / 11.0) for c in range(3)]
    return np.stack(chans, -1).round().astype(np.uint8)


def _as_comfy(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).float()[None] / 255.0


@pytest.mark.parametrize(
    "h,w,th,tw",
    [(512, 768, 224, 336), (100, 150, 224, 336), (37, 400, 224, 2421), (640, 480, 298, 224), (225, 225, 224, 224), (1, 1, 5, 3), (5, 3, 7, 2)],
)
@pytest.mark.parametrize("pattern", [_noise, _smooth])
def test_resize_is_pil_bicubic_exactly(h, w, th, tw, pattern):
    a = pattern(h, w)
    ref = np.asarray(Image.fromarray(a).resize((tw, th), Image.BICUBIC)).astype(np.float64)
    ours = pil_bicubic_resize(torch.from_numpy(a).permute(2, 0, 1)[None].double(), th, tw)[0].permute(1, 2, 0).numpy()
    assert ours.shape == ref.shape
    assert np.array_equal(ours, ref)


@pytest.mark.parametrize("h,w", [(512, 768), (300, 200), (224, 224), (100, 100), (37, 400), (223, 1000)])
def test_center_equals_clip_image_processor(h, w):
    a = _noise(h, w, seed=h + w)
    ref = _pil_processor()(images=Image.fromarray(a), return_tensors="pt")["pixel_values"]
    ours = preprocess_images(_as_comfy(a), mode="center")
    assert ours.shape == ref.shape == (1, 3, 224, 224)
    assert ours.dtype == torch.float32
    # Same 8-bit integers and the same float32 normalisation: identical up to float32 rounding.
    assert (ours - ref).abs().max().item() < 1e-6


def test_center_close_to_torchvision_clip_image_processor():
    # transformers >= 5 made CLIPImageProcessor the torchvision implementation: a float resize rounded
    # once, so up to a few 8-bit steps away from PIL's two rounded passes on noise.
    transformers = pytest.importorskip("transformers")
    if getattr(transformers, "CLIPImageProcessorPil", None) is None:
        pytest.skip("transformers < 5: CLIPImageProcessor is the PIL implementation, tested above")
    pytest.importorskip("torchvision")
    a = _smooth(300, 500)
    ref = transformers.CLIPImageProcessor()(images=Image.fromarray(a), return_tensors="pt")["pixel_values"]
    ours = preprocess_images(_as_comfy(a))
    diff = (ours - ref).abs()
    assert diff.max().item() < 2.5 / 255 / min(CLIP_STD)
    assert diff.mean().item() < 0.5 / 255 / min(CLIP_STD)


def test_batch_grayscale_uint8_and_single_image():
    a, b = _noise(64, 96, 1), _noise(64, 96, 2)
    batch = torch.cat([_as_comfy(a), _as_comfy(b)])
    out = preprocess_images(batch)
    assert out.shape == (2, 3, 224, 224)
    assert torch.equal(out[1:], preprocess_images(_as_comfy(b)))
    assert torch.equal(preprocess_images(torch.from_numpy(a)[None]), out[:1])  # uint8 input
    assert torch.equal(preprocess_images(_as_comfy(a)[0]), out[:1])  # [H, W, C] without batch
    gray = _as_comfy(a)[..., :1]
    assert torch.equal(preprocess_images(gray), preprocess_images(gray.expand(-1, -1, -1, 3)))


def test_values_are_rounded_to_8_bits_like_the_reference():
    a = _smooth(50, 70)
    x = _as_comfy(a)
    jitter = (torch.rand_like(x) - 0.5) * (0.8 / 255)  # less than half an 8-bit step
    assert torch.equal(preprocess_images(x), preprocess_images(x + jitter))
    # Out-of-range values are clipped like 8-bit pixels.
    assert torch.equal(preprocess_images(x * 0 + 2.0), preprocess_images(x * 0 + 1.0))


def _wide_test_image():
    # 100 x 400: red left quarter, blue right quarter, grey middle.
    img = torch.full((1, 100, 400, 3), 0.5)
    img[:, :, :100] = torch.tensor([1.0, 0.0, 0.0])
    img[:, :, 300:] = torch.tensor([0.0, 0.0, 1.0])
    return img


def _normalised(rgb):
    return (torch.tensor(rgb) - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)


def test_pad_keeps_edges_center_cuts_them():
    img = _wide_test_image()
    red, blue, grey = _normalised([1.0, 0, 0]), _normalised([0, 0, 1.0]), _normalised([128 / 255] * 3)

    center = preprocess_images(img, mode="center")
    # The centre crop of a 4:1 image keeps the middle: no red or blue anywhere.
    assert torch.allclose(center[0, :, 112, 0], grey, atol=1e-5)
    assert torch.allclose(center[0, :, 112, -1], grey, atol=1e-5)

    pad = preprocess_images(img, mode="pad")
    assert pad.shape == (1, 3, 224, 224)
    # 400x100 -> 224x56 image centred vertically in rows 84..139; rows outside are the mean colour (= 0).
    assert torch.equal(pad[0, :, :84], torch.zeros(3, 84, 224))
    assert torch.equal(pad[0, :, 140:], torch.zeros(3, 84, 224))
    assert torch.allclose(pad[0, :, 112, 0], red, atol=1e-5)
    assert torch.allclose(pad[0, :, 112, -1], blue, atol=1e-5)
    assert torch.allclose(pad[0, :, 112, 112], grey, atol=1e-5)


def test_pad_tall_image_and_square_is_resize():
    tall = _wide_test_image().transpose(1, 2)  # 400 high, 100 wide
    pad = preprocess_images(tall, mode="pad")
    assert torch.equal(pad[0, :, :, :84], torch.zeros(3, 224, 84))
    assert torch.equal(pad[0, :, :, 140:], torch.zeros(3, 224, 84))
    assert not torch.equal(pad[0, :, :, 84:140], torch.zeros(3, 224, 56))
    square = _as_comfy(_noise(300, 300))
    # For a square image all three modes are the same plain resize.
    assert torch.equal(preprocess_images(square, "pad"), preprocess_images(square, "center"))
    assert torch.equal(preprocess_images(square, "squash"), preprocess_images(square, "center"))


def test_squash_keeps_everything_and_matches_pil():
    img = _wide_test_image()
    out = preprocess_images(img, mode="squash")
    red, blue = _normalised([1.0, 0, 0]), _normalised([0, 0, 1.0])
    assert torch.allclose(out[0, :, 0, 0], red, atol=1e-5)
    assert torch.allclose(out[0, :, 223, 223], blue, atol=1e-5)
    a = _noise(90, 300, 5)
    ref = np.asarray(Image.fromarray(a).resize((224, 224), Image.BICUBIC)).astype(np.float32) / 255.0
    ref = (torch.from_numpy(ref).permute(2, 0, 1) - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    assert (preprocess_images(_as_comfy(a), "squash")[0] - ref).abs().max().item() < 1e-5


def test_other_sizes():
    a = _as_comfy(_noise(60, 80))
    for mode in ("center", "pad", "squash"):
        assert preprocess_images(a, mode=mode, size=112).shape == (1, 3, 112, 112)


@pytest.mark.parametrize(
    "bad,match",
    [
        (torch.rand(0, 32, 32, 3), "empty batch"),
        (torch.rand(2, 3, 32, 32), "channels-first"),
        (torch.rand(1, 32, 32, 4), "alpha"),
        (torch.rand(32, 32), "shape"),
        (torch.full((1, 8, 8, 3), float("nan")), "NaN"),
        (torch.zeros(1, 0, 8, 3), "1x1"),
        (np.zeros((8, 8, 3)), "torch tensor"),
        (torch.zeros(1, 8, 8, 3, dtype=torch.int32), "dtype"),
    ],
)
def test_bad_images_are_refused_with_remedy(bad, match):
    with pytest.raises(IPAdapterError, match=match):
        preprocess_images(bad)


def test_bad_mode_and_size():
    img = torch.rand(1, 8, 8, 3)
    with pytest.raises(IPAdapterError, match="center, pad, squash"):
        preprocess_images(img, mode="crop")
    with pytest.raises(IPAdapterError, match="positive"):
        preprocess_images(img, size=0)


@pytest.mark.parametrize("h, w", [(1000, 300), (853, 256), (300, 1000), (640, 480), (2000, 300)])
def test_center_resize_is_pils_horizontal_then_vertical_two_pass(h, w):
    """The resize is PIL's bicubic as two rounded 8-bit passes, horizontal first: what Pillow <= 12 always did
    (and so CLIPImageProcessor in the official pipeline). Pillow 13 runs the vertical pass first for some
    sizes (portrait ones here), so there the two differ by a few 8-bit steps (README, Limitations)."""
    a = _noise(h, w, 4)
    out_h, out_w = (int(224 * h / w), 224) if w <= h else (224, int(224 * w / h))
    two_pass = Image.fromarray(a).resize((out_w, h), Image.BICUBIC).resize((out_w, out_h), Image.BICUBIC)
    ours = pil_bicubic_resize(torch.from_numpy(a).permute(2, 0, 1)[None].double(), out_h, out_w)
    assert torch.equal(ours[0].permute(1, 2, 0), torch.from_numpy(np.array(two_pass)).double())
