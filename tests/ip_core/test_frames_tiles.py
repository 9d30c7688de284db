"""ip_core.frames (per-frame rules, windows, weight schedules) and ip_core.tiles (tiling rule, masks, enhance).

Parity with the widely used pack itself runs in the real host (tests/integration, scenario "animation");
here the rules are checked against hand-worked values and against torchvision / PIL directly.
"""
import math
import random

import pytest
import torch
import torch.nn.functional as F

from ip_core import frames, tiles
from ip_core.errors import IPAdapterError


# ---------------------------------------------------------------- frames

def test_fewer_values_repeat_the_last_more_are_an_error():
    assert frames.frame_sources(3, 5) == [0, 1, 2, 2, 2]
    assert frames.frame_sources(4, 4) == [0, 1, 2, 3]
    assert frames.frame_sources(1, 3) == [0, 0, 0]
    with pytest.raises(IPAdapterError, match="references: 5 given for 4 frames"):
        frames.frame_sources(5, 4)
    with pytest.raises(IPAdapterError, match="no references"):
        frames.frame_sources(0, 4)


def test_context_windows_are_checked():
    assert frames.window_of(None, 4) == (4, [0, 1, 2, 3])
    assert frames.window_of({"ad_params": {"sub_idxs": None, "full_length": 16}}, 4) == (4, [0, 1, 2, 3])
    assert frames.window_of({"ad_params": {"sub_idxs": [14, 15, 0, 1], "full_length": 16}}, 4) == (16, [14, 15, 0, 1])
    with pytest.raises(IPAdapterError, match=r"frames \[16\] outside the animation's 16 frames"):
        frames.window_of({"ad_params": {"sub_idxs": [13, 14, 15, 16], "full_length": 16}}, 4)
    with pytest.raises(IPAdapterError, match="names 3 frames but the model was called on 4"):
        frames.window_of({"ad_params": {"sub_idxs": [0, 1, 2], "full_length": 16}}, 4)



def test_a_window_that_does_not_say_the_length_still_picks_each_frames_value():
    """full_length None (a host's context window without the animation's length): each frame picks its value by
    the rule (the last one repeated); only a surplus of values cannot be found."""
    assert frames.window_of({"ad_params": {"sub_idxs": [6, 7, 8], "full_length": None}}, 3) == (None, [6, 7, 8])
    assert frames.frame_picks(4, None, [2, 3, 9]) == [2, 3, 3]
    assert frames.frame_picks(4, 12, [2, 3, 9]) == [2, 3, 3]
    with pytest.raises(IPAdapterError, match="outside"):
        frames.window_of({"ad_params": {"sub_idxs": [-1, 0], "full_length": None}}, 2)
    with pytest.raises(IPAdapterError, match="no references"):
        frames.frame_picks(0, None, [0])
    with pytest.raises(IPAdapterError, match="5 given for 4 frames"):
        frames.frame_picks(5, 4, [0])

def test_schedules_by_hand():
    s = frames.frame_schedule("0, 1", "linear", frames=5)
    assert s.weights == [0.0, 0.25, 0.5, 0.75, 1.0] and s.weights_invert == s.weights[::-1] and s.total_frames == 5
    s = frames.frame_schedule("1, 0.5, 2", "custom")
    assert s.weights == [1.0, 0.5, 2.0]
    s = frames.frame_schedule("0, 1", "ease_in_out", frames=3)
    assert s.weights == pytest.approx([0.0, 0.5, 1.0])
    s = frames.frame_schedule("0.2, 1", "linear", frames=6, start_frame=2, end_frame=5)
    assert s.weights == pytest.approx([0.2, 0.2, 0.2, 0.6, 1.0, 1.0])
    s = frames.frame_schedule("0, 1", "ease_in", frames=3)
    assert s.weights == pytest.approx([0.0, math.sin(math.pi / 4), 1.0])
    r1 = frames.frame_schedule("0, 1", "random", frames=4, seed=7).weights
    rng = random.Random(7)
    assert r1 == [rng.uniform(0, 1) for _ in range(4)]
    # images: the schedule per image, and which image each frame shows
    s = frames.frame_schedule("0, 1", "linear", frames=2, images=3, add_starting_frames=1, add_ending_frames=2)
    assert s.weights == [0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    assert s.image_1 == [0, 0, 0, 1, 1, 2, 2, 2, 2] and s.image_2 is None
    s = frames.frame_schedule("0, 1", "linear", frames=2, images=3, method="shift batches")
    assert s.weights == [0.0, 1.0, 0.0, 1.0] and s.image_1 == [0, 0, 1, 1] and s.image_2 == [1, 1, 2, 2]
    s = frames.frame_schedule("0, 1", "linear", frames=2, images=4, method="alternate batches")
    assert s.image_1 == [0, 0, 2, 2, 2, 2] and s.image_2 == [1, 1, 1, 1, 3, 3]
    assert s.weights == [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    s = frames.frame_schedule("0, 1", "linear", frames=2, images=2, method="alternate batches")
    assert s.weights == [0.0, 1.0] and s.image_1 == [0, 0] and s.image_2 == [1, 1]


def test_schedule_bad_input():
    with pytest.raises(IPAdapterError, match="not a number"):
        frames.frame_schedule("1, x", "custom")
    with pytest.raises(IPAdapterError, match="at least 2 frames"):
        frames.frame_schedule("0, 1", "linear", frames=4, start_frame=3)
    with pytest.raises(IPAdapterError, match="unknown timing"):
        frames.frame_schedule("0, 1", "bounce")
    with pytest.raises(IPAdapterError, match="needs at least 2"):
        frames.frame_schedule("0, 1", "linear", frames=2, images=1, method="shift batches")
    with pytest.raises(IPAdapterError, match="finite"):
        frames.check_frame_weights([1.0, float("nan")])
    with pytest.raises(IPAdapterError, match="empty"):
        frames.check_frame_weights([])


@pytest.mark.parametrize("kwargs, match", [
    (dict(frames=10 ** 9), "frames is 1000000000; give at most 9999"),
    (dict(frames=9, end_frame=10 ** 5), "end_frame is 100000; give at most 9999"),
    (dict(frames=9, add_starting_frames=10 ** 4, images=2), "add_starting_frames is 10000"),
    (dict(frames=True), "frames must be a whole number"),
    (dict(frames=9999, images=11), "109989 frames long .* at most 100000 frames are made"),
    (dict(frames=9999, images=21, method="alternate batches"), "at most 100000"),
])
def test_schedules_are_bounded_before_they_are_made(kwargs, match):
    with pytest.raises(IPAdapterError, match=match):
        frames.frame_schedule("0, 1", "linear", **kwargs)
    assert len(frames.frame_schedule("0, 1", "linear", frames=9999, images=10).weights) == 99_990  # under the bound
    with pytest.raises(IPAdapterError, match="more than 100000 numbers"):
        frames.frame_schedule(",".join(["0.5"] * 100_001), "custom")


@pytest.mark.parametrize("method", frames.METHODS)
@pytest.mark.parametrize("timing, weights", [("custom", "0, 0.5, 1, 0.2"), ("linear", "0, 1"), ("random", "0, 1")])
def test_the_length_is_known_before_the_schedule_is_made(method, timing, weights):
    for images in range(0, 7):
        for n, adds in ((2, (0, 0)), (5, (3, 1)), (7, (0, 2))):
            if images == 1 and method != "full batch":
                continue
            s = frames.frame_schedule(weights, timing, n, 0, 9999, *adds, method=method, images=images, seed=1)
            span = 4 if timing == "custom" else n
            assert s.total_frames == frames.schedule_length(span, images, method, *adds), (images, n, adds)


# ---------------------------------------------------------------- tiles

@pytest.mark.parametrize("hw, resized, crop, origins", [
    ((300, 300), (512, 512), None, ((0, 0), (0, 256), (256, 0), (256, 256))),  # near square: 2x2
    ((200, 300), (256, 384), None, ((0, 0), (0, 128))),  # landscape 1.5: two tiles overlapping by half
    ((600, 200), (768, 256), None, ((0, 0), (256, 0), (512, 0))),  # exactly 3 tiles, no overlap
    ((100, 700), (256, 1792), (256, 1024), ((0, 0), (0, 256), (0, 512), (0, 768))),  # 7:1, centre 4 tiles
    ((10, 13), (512, 512), None, ((0, 0), (0, 256), (256, 0), (256, 256))),  # smaller than a tile: upscaled
])
def test_tile_layouts(hw, resized, crop, origins):
    lay = tiles.tile_layout(*hw)
    assert lay.resized_hw == resized and lay.crop_hw == crop and lay.origins == origins
    assert all(0 <= y and y + 256 <= lay.hw[0] and 0 <= x and x + 256 <= lay.hw[1] for y, x in lay.origins)


def test_tile_layout_refuses_strips():
    with pytest.raises(IPAdapterError, match="times longer than wide"):
        tiles.tile_layout(2, 1000)


def _reference_pipeline(image, mask, lay):
    """The tiling rule written with torchvision and PIL calls, as a second opinion."""
    import torchvision.transforms as T
    from PIL import Image

    oh, ow = lay.source_hw
    x = image.permute(0, 3, 1, 2)
    m = T.Resize((oh, ow), interpolation=T.InterpolationMode.BICUBIC, antialias=True)(mask[:, None])
    if lay.square:
        x, m = T.CenterCrop(lay.square)(x), T.CenterCrop(lay.square)(m)
    size = lay.resized_hw[::-1]
    x = torch.stack([T.ToTensor()(T.ToPILImage()(i).resize(size, resample=Image.Resampling.LANCZOS)) for i in x])
    m = T.Resize(lay.resized_hw, interpolation=T.InterpolationMode.BICUBIC, antialias=True)(m)
    if lay.crop_hw:
        x, m = T.CenterCrop(lay.crop_hw)(x), T.CenterCrop(lay.crop_hw)(m)
    return x.permute(0, 2, 3, 1), m[:, 0]


@pytest.mark.parametrize("hw", [(90, 70), (120, 300), (333, 64)])
def test_tiles_and_masks_equal_torchvision_and_pil(hw):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, *hw, 3, generator=g)
    mask = torch.rand(1, 40, 30, generator=g)
    lay = tiles.tile_layout(*hw)
    ref_img, ref_mask = _reference_pipeline(image, mask, lay)
    got = tiles.tile_images(image, lay)
    masks = tiles.tile_masks(lay, mask)
    assert got.shape == (lay.count, 2, 256, 256, 3) and masks.shape == (lay.count, 1, *lay.hw)
    for (y, x), tile, m in zip(lay.origins, got, masks):
        assert torch.equal(tile, ref_img[:, y:y + 256, x:x + 256])
        expected = torch.zeros_like(ref_mask)
        expected[:, y:y + 256, x:x + 256] = ref_mask[:, y:y + 256, x:x + 256]
        assert torch.equal(m, expected)
    # without a mask every tile's mask is 1 on its square exactly
    ones = tiles.tile_masks(lay)
    assert torch.equal(ones.sum(dim=(-1, -2))[:, 0], torch.full((lay.count,), 256.0 * 256.0))


def test_region_mask_limits_a_tile_by_the_attention_mask():
    region = torch.zeros(4, 6)
    region[:, :3] = 1
    half = torch.zeros(2, 8, 12)
    half[1] = 1
    out = tiles.region_mask(region, half)
    assert out.shape == (2, 4, 6) and out[0].sum() == 0 and torch.equal(out[1], region)
    assert torch.equal(tiles.region_mask(region)[0], region)


def test_enhance_grid_and_merges():
    image = torch.arange(2 * 6 * 9 * 1, dtype=torch.float32).reshape(2, 6, 9, 1)
    grid = tiles.grid_tiles(image, 3)
    assert grid.shape == (2, 9, 2, 3, 1)
    assert torch.equal(grid[1, 5], image[1, 2:4, 6:9])  # row 1, column 2
    # hidden states: a tile whose patch tokens are constant c_t pools to the mosaic's block means
    n, side, c = 2, 4, 3
    vals = torch.tensor([1.0, 2.0, 3.0, 4.0])
    hidden = torch.zeros(n * n, 1 + side * side, c)
    for t in range(n * n):
        hidden[t, 0] = 10 * t
        hidden[t, 1:] = vals[t]
    merged = tiles.merge_grid_hidden(hidden, n)
    assert merged.shape == (1, 1 + side * side, c)
    assert torch.allclose(merged[0, 0], torch.full((c,), 15.0))  # class tokens averaged
    patch = merged[0, 1:, 0].reshape(side, side)
    assert torch.allclose(patch[:2, :2], torch.tensor(1.0)) and torch.allclose(patch[2:, 2:], torch.tensor(4.0))
    # SigLIP's hidden states have no class token (27 x 27 patches at 384 px): all tokens are patches
    siglip = hidden[:, 1:]
    merged = tiles.merge_grid_hidden(siglip, n)
    assert merged.shape == (1, side * side, c) and torch.equal(merged[0, :, 0].reshape(side, side), patch)
    emb = torch.randn(2 * 4, 16)
    out = tiles.merge_grid_embeds(emb, 2)
    mosaic = emb[:4].reshape(2, 2, 4, 4).permute(0, 2, 1, 3).reshape(8, 8)
    assert torch.allclose(out[0], F.avg_pool2d(mosaic[None, None], 2).flatten())
    with pytest.raises(IPAdapterError, match="square image embedding width"):
        tiles.merge_grid_embeds(torch.randn(4, 1280), 2)
    whole, m = torch.ones(1, 4), torch.full((1, 4), 2.0)
    assert torch.equal(tiles.enhance(whole, m, 0.5), torch.tensor([[0.5] * 4, [2.0] * 4]))
    assert torch.equal(tiles.enhance(whole.expand(2, 4), m.expand(2, 4), 0.25), torch.full((2, 4), 1.75))
    with pytest.raises(IPAdapterError, match="cannot be cut into 4x4"):
        tiles.grid_tiles(torch.rand(1, 3, 10, 3), 4)
