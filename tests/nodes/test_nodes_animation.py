"""Frames and tiles through the stand-in host: per-frame references, weights and masks, AnimateDiff-style
context windows, tiled and enhanced encodes, and the frame weights nodes."""
import pytest
import torch

import comfy_standin
from comfy_standin import make_model, run_context_windows, run_model
from ip_core import tiles
from ip_core.adapter import IPAdapter
from ip_core.config import make_config
from ip_core.layers import layer_specs
from ip_core.embeds import build_image_prompt
from ip_core.errors import IPAdapterError
from ip_core.preprocess import preprocess_images
from nodes.common import LoadedAdapter
from nodes.nodes_animation import IPACombineFrameWeights, IPAFrameWeights, IPAFrameWeightsFromStrategy, IPAPromptSchedule
from nodes.nodes_apply import IPAApplyAdapter
from nodes.nodes_encode import IPAEncodeImagePrompt

F = 8  # frames


def _features(n, seed=0):
    return torch.randn(n, 1024, generator=torch.Generator().manual_seed(seed)) * 3


def _embeds(adapter, feats, combine="batch"):
    return build_image_prompt(adapter.adapter, feats, torch.zeros_like(feats), combine=combine)


def _apply(model, adapter, embeds, weight=1.0, **kw):
    return IPAApplyAdapter().apply(model, adapter, embeds, weight, 0.0, 1.0, **kw)[0]


def _latents(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, 8, 8, generator=g), torch.randn(n, 8, 768, generator=g), torch.randn(n, 8, 768, generator=g)


def _branches(m):
    return {b for p in m.attn2_patches().values() for b in p.branches}


def test_per_frame_identical_references_equal_the_shared_run_bit_for_bit(host, base):
    model = make_model("sd15")
    one = _features(1)
    x, c, u = _latents(4)
    shared = run_model(_apply(model, base, _embeds(base, one, "concat")), x, 5.0, c, u)
    per_frame = run_model(_apply(model, base, _embeds(base, one.expand(4, -1).clone())), x, 5.0, c, u)
    fewer = run_model(_apply(model, base, _embeds(base, one.expand(2, -1).clone())), x, 5.0, c, u)  # last repeated
    assert torch.equal(per_frame, shared) and torch.equal(fewer, shared)


def test_each_frame_gets_its_reference_weight_and_mask(host, base):
    model = make_model("sd15")
    feats = _features(3)
    x, c, u = _latents(4)
    mask = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(5))
    fw = [1.0, 0.5, 0.0, 2.0]
    out = run_model(_apply(model, base, _embeds(base, feats), attn_mask=mask, frame_weights=fw), x, 5.0, c, u)
    for i, src in enumerate([0, 1, 2, 2]):  # fewer references than frames: the last one is repeated
        alone = _apply(model, base, _embeds(base, feats[src:src + 1], "concat"), weight=fw[i],
                       attn_mask=mask[min(i, 1)])
        ref = run_model(alone, x[i:i + 1], 5.0, c[i:i + 1], u[i:i + 1])
        assert torch.allclose(out[[i, 4 + i]], ref, atol=1e-5), i


def test_context_windows_pick_their_frames(host, base):
    """AnimateDiff's pattern: windows of 4 frames overlapping by 2 over 8 frames give what one call on all 8
    frames gives, and only the current window's K'/V' arrangement stays held."""
    model = make_model("sd15")
    feats = _features(6, seed=3)  # 6 references for 8 frames: frames 6, 7 repeat the last
    mask = torch.rand(F, 16, 16, generator=torch.Generator().manual_seed(6))
    fw = [0.2 * i for i in range(F)]
    patched = _apply(model, base, _embeds(base, feats), attn_mask=mask, frame_weights=fw)
    x, c, u = _latents(F, seed=2)
    full = run_model(patched, x, 5.0, c, u)
    windowed, windows = run_context_windows(patched, x, 5.0, c, u, length=4, overlap=2)
    assert windows == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]]
    assert torch.allclose(windowed, full, atol=1e-5)
    (branch,) = _branches(patched)
    held = {k[-1] for k in branch._arranged}
    assert held == {(4, 5, 5, 5)}  # the last window, frames 4..7 -> references 4, 5, 5, 5
    assert all(v[0].shape[0] == 2 * 4 for v in branch._arranged.values())
    # without the adapter the windows also equal the full call: the check above is not vacuous
    assert not torch.allclose(full, run_model(model, x, 5.0, c, u), atol=1e-3)


@pytest.mark.parametrize("causal_window_fix,says_total", [(True, True), (False, True), (False, False)],
                         ids=["anchor frame", "no anchor", "older host: no total_frames"])
def test_core_context_windows_pick_their_frames(host, base, causal_window_fix, says_total):
    """The host's own context windows (transformer_options["context_window"]: frames index_list of total_frames,
    with causal_window_fix the frame before the window prepended) give each frame its reference, weight and
    mask, as AnimateDiff's ad_params do: windows of 4 overlapping by 2 over 8 frames equal one call on all 8.
    Older hosts' windows do not say total_frames: frames still pick theirs."""
    model = make_model("sd15")
    feats = _features(6, seed=3)
    mask = torch.rand(F, 16, 16, generator=torch.Generator().manual_seed(6))
    fw = [0.2 * i for i in range(F)]
    patched = _apply(model, base, _embeds(base, feats), attn_mask=mask, frame_weights=fw)
    x, c, u = _latents(F, seed=2)
    full = run_model(patched, x, 5.0, c, u)
    windowed, windows = comfy_standin.run_core_context_windows(patched, x, 5.0, c, u, length=4, overlap=2,
                                                              causal_window_fix=causal_window_fix, says_total=says_total)
    assert windows == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]]
    assert torch.allclose(windowed, full, atol=1e-5)
    (branch,) = _branches(patched)
    # the last window's frames (and its anchor, frame 3) -> references 3 (or none), 4, 5, 5, 5
    assert {k[-1] for k in branch._arranged} == {(3, 4, 5, 5, 5) if causal_window_fix else (4, 5, 5, 5)}
    if not says_total:
        return
    # AnimateDiff-Evolved's ad_params, when a call has both, name the frames
    last = [6, 7]
    ad = run_model(patched, x[last], 5.0, c[last], u[last], ad_params={"full_length": F, "sub_idxs": last},
                   context_window=comfy_standin.ContextWindow([0, 1], F))
    assert torch.allclose(ad, full[[6, 7, 14, 15]], atol=1e-5)
    # a window over another axis (a video latent's frames, dim 2) names no batch items: the call is the batch
    two = _apply(model, base, _embeds(base, feats[:2]), frame_weights=[0.5, 1.5])
    other = run_model(two, x[:2], 5.0, c[:2], u[:2], context_window=comfy_standin.ContextWindow([4, 5], F, dim=2))
    assert torch.equal(other, run_model(two, x[:2], 5.0, c[:2], u[:2]))


def test_core_context_window_errors_are_clear(host, base):
    patched = _apply(make_model("sd15"), base, _embeds(base, _features(2)))
    x, c, u = _latents(2)
    with pytest.raises(IPAdapterError, match=r"frames \[8\] outside the animation's 8 frames"):
        run_model(patched, x, 5.0, c, u, context_window=comfy_standin.ContextWindow([7, 8], 8))
    with pytest.raises(IPAdapterError, match="names 3 frames but the model was called on 2"):
        run_model(patched, x, 5.0, c, u, context_window=comfy_standin.ContextWindow([4, 5, 6], 8))


def test_frame_errors_are_clear(host, base):
    model = make_model("sd15")
    x, c, u = _latents(2)
    with pytest.raises(IPAdapterError, match="references of .*: 3 given for 2 frames"):
        run_model(_apply(model, base, _embeds(base, _features(3))), x, 5.0, c, u)
    with pytest.raises(IPAdapterError, match="frame_weights of .*: 3 given for 2 frames"):
        run_model(_apply(model, base, _embeds(base, _features(1), "concat"), frame_weights=[1, 1, 1]), x, 5.0, c, u)
    patched = _apply(model, base, _embeds(base, _features(2)))
    with pytest.raises(IPAdapterError, match=r"frames \[8\] outside the animation's 8 frames"):
        run_model(patched, x, 5.0, c, u, ad_params={"full_length": 8, "sub_idxs": [7, 8]})
    with pytest.raises(IPAdapterError, match="frame_weights contains nan"):
        _apply(model, base, _embeds(base, _features(1), "concat"), frame_weights=[1.0, float("nan")])


def test_tiled_encode_equals_one_masked_adapter_per_tile(host, base, vit_h):
    image = torch.rand(1, 200, 300, 3, generator=torch.Generator().manual_seed(4))
    (emb,) = IPAEncodeImagePrompt().encode(base, vit_h, image, tiles="tiled")
    lay = tiles.tile_layout(200, 300)
    assert emb.cond.shape == (2, 4, 768) and emb.region_masks.shape == (2, *lay.hw)
    parts = tiles.tile_images(image, lay)
    for g in range(2):  # each row: the tile's own encoding
        (alone,) = IPAEncodeImagePrompt().encode(base, vit_h, parts[g])
        assert torch.equal(emb.cond[g:g + 1], alone.cond)
    model = make_model("sd15")
    attn = torch.rand(1, 10, 10, generator=torch.Generator().manual_seed(1))
    patched = _apply(model, base, emb, weight=0.7, attn_mask=attn)
    assert len(_branches(patched)) == 2
    chained = model
    for part, region in emb.regions():
        chained = _apply(chained, base, part, weight=0.7, attn_mask=tiles.region_mask(region, attn))
    x, c, u = _latents(2)
    assert torch.equal(run_model(patched, x, 5.0, c, u), run_model(chained, x, 5.0, c, u))


def test_tiled_encode_with_combine_batch_gives_each_frame_its_own_references_tiles(host, base, vit_h, monkeypatch):
    """tiles 'tiled' + combine 'batch' (the widely used pack's IPAdapter Tiled Batch): frame i attends to the tiles
    of reference i, each tile in its region; encoded a few references at a time, with the same result."""
    from nodes import nodes_encode

    images = torch.rand(3, 200, 300, 3, generator=torch.Generator().manual_seed(5))
    (emb,) = IPAEncodeImagePrompt().encode(base, vit_h, images, combine="batch", tiles="tiled", reference_weights="1, 0.5, 2")
    lay = tiles.tile_layout(200, 300)
    assert emb.cond.shape == (2 * 3, 4, 768) and emb.region_masks.shape == (2, *lay.hw) and emb.per_batch_item
    alone = [IPAEncodeImagePrompt().encode(base, vit_h, images[i:i + 1], tiles="tiled", reference_weights=w)[0]
             for i, w in enumerate(("1", "0.5", "2"))]
    for g in range(2):  # region by region, frame by frame
        for i in range(3):
            assert torch.allclose(emb.cond[g * 3 + i], alone[i].cond[g], atol=1e-6)
            assert torch.equal(emb.uncond[g * 3 + i], alone[i].uncond[g])
    monkeypatch.setattr(nodes_encode, "ENCODE_CHUNK", 2)  # 3 references: chunks of 2 and 1
    (chunked,) = IPAEncodeImagePrompt().encode(base, vit_h, images, combine="batch", tiles="tiled", reference_weights="1, 0.5, 2")
    assert torch.allclose(chunked.cond, emb.cond, atol=1e-6) and torch.equal(chunked.region_masks, emb.region_masks)
    model = make_model("sd15")
    patched = _apply(model, base, emb, weight=0.7)
    assert len(_branches(patched)) == 2  # one per tile, each holding the three frames' references
    x, c, u = _latents(3)
    together = run_model(patched, x, 5.0, c, u)
    for i in range(3):
        one = run_model(_apply(model, base, alone[i], weight=0.7), x[i:i + 1], 5.0, c[i:i + 1], u[i:i + 1])
        assert torch.allclose(together[[i, 3 + i]], one, atol=1e-5)
    with pytest.raises(IPAdapterError, match="references of .*: 3 given for 2 frames"):
        run_model(patched, x[:2], 5.0, c[:2], u[:2])
    with pytest.raises(IPAdapterError, match="2 negative images for 3 reference images"):
        IPAEncodeImagePrompt().encode(base, vit_h, images, combine="batch", tiles="tiled", negative_image=images[:2])


def test_enhance_adds_the_merged_grid_to_the_whole_image(host, base, vit_h):
    image = torch.rand(1, 224, 224, 3, generator=torch.Generator().manual_seed(7))
    (emb,) = IPAEncodeImagePrompt().encode(base, vit_h, image, tiles="enhance", enhance_tiles=2, enhance_ratio=0.5)
    with torch.no_grad():
        whole = vit_h.model(preprocess_images(image))[2]
        split = vit_h.model(preprocess_images(tiles.grid_tiles(image, 2)[0]))[2]
        feats = torch.cat([whole * 0.5, tiles.merge_grid_embeds(split, 2)])
        assert torch.allclose(emb.cond, base.adapter.project(feats).reshape(1, 8, 768), atol=1e-5)
    (off,) = IPAEncodeImagePrompt().encode(base, vit_h, image, tiles="enhance", enhance_tiles=1)
    (plain,) = IPAEncodeImagePrompt().encode(base, vit_h, image)
    assert torch.equal(off.cond, plain.cond)


def test_enhance_merges_only_what_the_adapter_reads(host):
    """A plus adapter on ViT-bigG (image_embeds 1280 wide, no square) enhances its hidden states; the image_embeds
    it does not read are not merged (that merge needs a square width)."""
    big_g = comfy_standin.ClipVisionModel(1664, 1280)
    plus = LoadedAdapter(IPAdapter(make_config("plus", layer_specs("sdxl"), 2048, 1664)).eval(), "plus_vit-g.bin")
    image = torch.rand(1, 224, 224, 3, generator=torch.Generator().manual_seed(7))
    (emb,) = IPAEncodeImagePrompt().encode(plus, big_g, image, tiles="enhance", enhance_tiles=2, enhance_ratio=0.5)
    with torch.no_grad():
        whole = big_g.model(preprocess_images(image), intermediate_output=-2)[1]
        split = big_g.model(preprocess_images(tiles.grid_tiles(image, 2)[0]), intermediate_output=-2)[1]
        assert torch.allclose(emb.cond_features, torch.cat([whole * 0.5, tiles.merge_grid_hidden(split, 2)]), atol=1e-5)


def test_frame_weights_nodes(host):
    imgs = torch.rand(3, 8, 8, 3)
    w, inv, total, im1, im2, strategy = IPAFrameWeights().schedule("0, 1", "linear", 3, 0, 9999, 1, 0, "full batch", image=imgs)
    assert w == [0.0, 0.0, 0.5, 1.0, 0.0, 0.5, 1.0, 0.0, 0.5, 1.0] and inv == w[::-1] and total == 10
    assert torch.equal(im1, imgs[[0, 0, 0, 0, 1, 1, 1, 2, 2, 2]]) and im2 is None
    again = IPAFrameWeightsFromStrategy().schedule(strategy, image=imgs[:2])
    assert again[0] == w[:7] and torch.equal(again[3], imgs[[0, 0, 0, 0, 1, 1, 1]])
    with pytest.raises(IPAdapterError, match="from an IPAdapter Frame Weights node"):
        IPAFrameWeightsFromStrategy().schedule({"weights": "1"})
    r1 = IPAFrameWeights().schedule("0, 1", "random", 4, seed=3)[0]
    assert r1 == IPAFrameWeights().schedule("0, 1", "random", 4, seed=3)[0] and len(r1) == 4


def test_combined_weights_equal_the_packs_combine_weights(reference_pack):
    """IPAdapter Combine Frame Weights returns what the pack's IPAdapterCombineWeights returns: weights_1's
    weights then weights_2's (a single weight counts as a list of one), and how many."""
    theirs = reference_pack.IPAdapterCombineWeights()
    fade = IPAFrameWeights().schedule("0, 1", "ease_in", 5)[0]
    for a, b in ((0.25, 0.75), (fade, 0.5), (0.0, fade), (fade, fade[::-1]), ([1.0], [0.3, 0.2])):
        ours = IPACombineFrameWeights().combine(a, b)
        assert ours == theirs.combine(a, b) and ours[1] == len(ours[0]), (a, b)
    with pytest.raises(IPAdapterError, match="weights_2 contains nan"):
        IPACombineFrameWeights().combine(0.5, [0.1, float("nan")])
    with pytest.raises(IPAdapterError, match="weights_1 must be numbers"):
        IPACombineFrameWeights().combine(["a"], 0.5)


PROMPTS = ("", "\n\n", "a cat", "a cat\n\na dog\n", "one\ntwo\nthree\nfour\nfive", ' "quoted" \n  spaced  ')


def test_the_prompt_schedule_equals_the_packs_for_the_same_schedule(reference_pack):
    """IPAdapter Prompt Schedule gives the text the pack's Prompt Schedule From Weights Strategy gives for the
    strategy of the same IPAdapter Weights settings and reference images: per image its line (the last repeated,
    extra lines left out, empty lines skipped) keyed by the frame where the image starts, the added starting /
    ending frames keyed 0 and after the end; no images or no lines: empty. Also through From Strategy, which passes
    the strategy on with the count of the images it was made with, as the pack does."""
    pack_weights, pack_schedule = reference_pack.IPAdapterWeights(), reference_pack.IPAdapterPromptScheduleFromWeightsStrategy()
    checked = 0
    for images in (0, 1, 2, 5):
        image = torch.rand(images, 8, 8, 3) if images else None
        for timing, frames, start, end, add_start, add_end, method in (
                ("linear", 4, 0, 9999, 0, 0, "full batch"), ("ease_out", 6, 1, 5, 2, 3, "full batch"),
                ("custom", 0, 0, 9999, 1, 0, "full batch"), ("linear", 3, 0, 9999, 0, 2, "shift batches"),
                ("ease_in_out", 5, 0, 9999, 4, 1, "alternate batches")):
            if method != "full batch" and images == 1:
                continue  # ours refuses a cross-fade with one image (the pack makes an empty schedule)
            settings = ("0.2, 1.0", timing, frames, start, end, add_start, add_end, method)
            strategy = IPAFrameWeights().schedule(*settings, image=image)[5]
            theirs_strategy = pack_weights.weights(*settings, image=image)[5]
            again = IPAFrameWeightsFromStrategy().schedule(strategy, image=torch.rand(3, 8, 8, 3))[5]
            theirs_again = pack_weights.weights(weights_strategy=theirs_strategy, image=torch.rand(3, 8, 8, 3))[5]
            for prompt in PROMPTS:
                expected = pack_schedule.prompt_schedule(theirs_strategy, prompt)
                assert IPAPromptSchedule().schedule(strategy, prompt) == expected, (images, settings, prompt)
                assert IPAPromptSchedule().schedule(again, prompt) == pack_schedule.prompt_schedule(theirs_again, prompt)
                checked += 1
    assert checked == 6 * (4 * 5 - 2)
    # 5 images, 5 frames each after 4 starting frames, 1 ending frame: lines a, b, b, b, b
    assert IPAPromptSchedule().schedule(strategy, "a\nb") == (
        '"0": "a",\n"4": "a",\n"9": "b",\n"14": "b",\n"19": "b",\n"24": "b",\n"29": "b",\n',)


def test_the_prompt_schedule_refuses_what_is_not_a_strategy_of_ours(host):
    with pytest.raises(IPAdapterError, match="from an IPAdapter Frame Weights node"):
        IPAPromptSchedule().schedule({"frames": 4, "frame_count": 2}, "a")
    strategy = IPAFrameWeights().schedule("0, 1", "linear", 4, image=torch.rand(2, 8, 8, 3))[5]
    with pytest.raises(IPAdapterError, match="images is 1000000000, outside 0..100000"):
        IPAPromptSchedule().schedule({**strategy, "images": 10 ** 9}, "a")
    with pytest.raises(IPAdapterError, match="prompt must be text"):
        IPAPromptSchedule().schedule(strategy, ["a"])


def test_a_reference_repeated_over_frames_is_held_once(host, base):
    feats = _features(3, seed=9)
    per_frame = feats[[0, 0, 0, 1, 1, 2, 2, 2]]  # what Frame Weights' image_1 gives: each image over a few frames
    model = make_model("sd15")
    patched = _apply(model, base, _embeds(base, per_frame))
    (branch,) = _branches(patched)
    assert branch._row == [0, 0, 0, 1, 1, 2, 2, 2]
    assert all(t.shape[0] == 3 for parts in branch._kv.values() for t in parts)  # 3 distinct, not 8
    x, c, u = _latents(F, seed=4)
    full = run_model(patched, x, 5.0, c, u)
    for i, src in enumerate([0, 0, 0, 1, 1, 2, 2, 2]):
        alone = _apply(model, base, _embeds(base, feats[src:src + 1], "concat"))
        assert torch.allclose(full[[i, F + i]], run_model(alone, x[i:i + 1], 5.0, c[i:i + 1], u[i:i + 1]), atol=1e-5), i
