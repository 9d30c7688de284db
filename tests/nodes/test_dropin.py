"""The drop-in layer (nodes/dropin/): the other pack's ids, registered only where that pack is absent, computed by
our nodes. Its interface and pictures against the pack itself: tests/integration/test_integration_dropin.py."""
import shutil
import sys
import types

import pytest
import torch

import pack_standin
from comfy_standin import make_model, run_model
from nodes import dropin, migrate_table, pack_interface
from nodes.dropin import compute
from nodes.nodes_animation import IPACombineFrameWeights
from test_nodes_apply import _run
from test_nodes_legacy import host_preprocess  # noqa: F401  (fixture: the host's clip_preprocess, stood in)
from test_nodes_toolkit import folders  # noqa: F401  (fixture: output / input folders, stood in)


def test_the_converter_reads_the_packs_inputs_from_the_interface_table():
    # Every id the pack registers today has a recipe; the rest of the table are its removed first-generation ids.
    assert set(pack_interface.NODES) <= set(migrate_table.PACK)
    assert set(migrate_table.PACK) - set(pack_interface.NODES) == set(migrate_table.FIRST_GENERATION)
    for node_id in pack_interface.NODES:
        entry = migrate_table.PACK[node_id]
        assert (entry["required"], entry["optional"], entry["outputs"]) == pack_interface.signature(node_id)
    assert pack_interface.signature("IPAdapterEmbeds")[1] == ("neg_embed:EMBEDS", "attn_mask:MASK", "clip_vision:CLIP_VISION")


def test_the_switch_chooses_the_packs_results_by_default(monkeypatch):
    monkeypatch.delenv(dropin.ENV, raising=False)
    assert dropin.mode() == "pack" and dropin.legacy()
    monkeypatch.setenv(dropin.ENV, "Corrected")
    assert dropin.mode() == "corrected" and not dropin.legacy()
    monkeypatch.setenv(dropin.ENV, "maybe")
    with pytest.raises(ValueError, match="pack, corrected, off"):
        dropin.mode()


def test_no_ids_where_opted_out_or_where_the_pack_is_imported(monkeypatch, tmp_path):
    monkeypatch.delenv(dropin.ENV, raising=False)
    classes, names = dropin.registrations()
    assert sorted(classes) == sorted(pack_interface.NODES) and names["IPAdapterAdvanced"] == "IPAdapter Advanced"
    monkeypatch.setenv(dropin.ENV, "off")
    assert dropin.registrations() == ({}, {})
    monkeypatch.setenv(dropin.ENV, "pack")
    fake = types.ModuleType("custom_nodes.ComfyUI_IPAdapter_plus.IPAdapterPlus")
    fake.__file__ = str(tmp_path / "ComfyUI_IPAdapter_plus" / "IPAdapterPlus.py")
    fake.NODE_CLASS_MAPPINGS = {}
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    assert dropin.installed_pack() == str(tmp_path / "ComfyUI_IPAdapter_plus")
    assert dropin.registrations() == ({}, {})


def test_every_id_of_the_pack_computes_here():
    assert set(compute.COMPUTE) | set(compute.RECIPE_IDS) == set(pack_interface.NODES)
    assert not set(compute.COMPUTE) & set(compute.RECIPE_IDS)


def _pipe(adapter, vit_h):
    return compute.Pipeline(adapter, vit_h)


def test_krita_chain_equals_our_nodes_in_legacy_mode(host, plus, vit_h, monkeypatch, host_preprocess):
    """Encoder (weight) x2 -> Combine Embeds (concat) -> Embeds, attn_mask null: our Encode (two references with
    their weights, legacy) and Apply (legacy), patch for patch."""
    from nodes.nodes_apply import IPAApplyAdapter
    from nodes.nodes_encode import IPAEncodeImagePrompt

    monkeypatch.delenv(dropin.ENV, raising=False)
    images = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    pipe = _pipe(plus, vit_h)
    e1, n1 = compute.encoder(pipe, images[:1], 0.8)
    e2, _ = compute.encoder(pipe, images[1:], 0.5)
    assert n1.negative and not e1.negative
    (combined,) = compute.combine(e1, "concat", embed2=e2)
    model = make_model("sd15")
    (drop,) = compute.run("IPAdapterEmbeds", dict(model=model, ipadapter=pipe, pos_embed=combined, weight=1.0,
                                                  weight_type="linear", start_at=0.0, end_at=1.0,
                                                  embeds_scaling="V only", attn_mask=None))
    (ours_embeds,) = IPAEncodeImagePrompt().encode(plus, vit_h, images, reference_weights="0.8, 0.5", legacy=True)
    (ours,) = IPAApplyAdapter().apply(model, plus, ours_embeds, 1.0, 0.0, 1.0, legacy=True)
    assert torch.allclose(combined.prompt.cond, ours_embeds.cond, atol=1e-6)
    assert torch.allclose(combined.prompt.uncond, ours_embeds.uncond, atol=1e-6)
    assert sorted(drop.attn2_patches()) == sorted(ours.attn2_patches())


def test_the_corrected_switch_gives_the_official_unconditional_image(host, plus, vit_h, monkeypatch, host_preprocess):
    images = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    monkeypatch.setenv(dropin.ENV, "corrected")
    corrected = compute.encoder(_pipe(plus, vit_h), images, 1.0)[0].prompt
    monkeypatch.setenv(dropin.ENV, "pack")
    pack = compute.encoder(_pipe(plus, vit_h), images, 1.0)[0].prompt
    assert not torch.allclose(corrected.uncond, pack.uncond)


def test_links_of_our_own_types_are_refused_with_the_node_to_use(host, plus):
    with pytest.raises(Exception, match="IPAdapter Model Loader"):
        compute.run("IPAdapterEncoder", dict(ipadapter=plus, image=torch.rand(1, 64, 64, 3), weight=1.0))
    with pytest.raises(Exception, match="IPAdapter Encoder"):
        compute.run("IPAdapterCombineEmbeds", dict(embed1=torch.zeros(1, 1280), method="concat"))


# ------------------------------------------------------------------ tiles
def _image(h, w, seed=0, batch=1):
    return torch.rand(batch, h, w, 3, generator=torch.Generator().manual_seed(seed))


def _tiled_inputs(pipe, image, **kw):
    return dict(model=make_model("sd15"), ipadapter=pipe, image=image, weight=0.7, weight_type="linear",
                combine_embeds="concat", start_at=0.0, end_at=1.0, sharpening=0.0, embeds_scaling="V only", **kw)


def test_tiled_gives_our_tiled_encoding_and_the_packs_tiles_and_masks(host, plus, vit_h, monkeypatch, host_preprocess):
    """A 256 x 512 reference: two tiles side by side; the model equals Encode Image Prompt
    (tiles 'tiled', legacy) + Apply IPAdapter; the tiles are the two halves and each mask covers its half."""
    from nodes.nodes_apply import IPAApplyAdapter
    from nodes.nodes_encode import IPAEncodeImagePrompt

    monkeypatch.delenv(dropin.ENV, raising=False)
    image, pipe = _image(256, 512), _pipe(plus, vit_h)
    model, tiles, masks = compute.run("IPAdapterTiled", _tiled_inputs(pipe, image))
    assert tiles.shape == (2, 256, 256, 3) and masks.shape == (2, 256, 512)
    assert masks[0, :, :256].eq(1).all() and masks[0, :, 256:].eq(0).all()
    assert masks[1, :, :256].eq(0).all() and masks[1, :, 256:].eq(1).all()
    (embeds,) = IPAEncodeImagePrompt().encode(plus, vit_h, image, tiles="tiled", legacy=True)
    (ours,) = IPAApplyAdapter().apply(make_model("sd15"), plus, embeds, 0.7, 0.0, 1.0, legacy=True)
    assert torch.equal(_run(model), _run(ours))
    sharp_model, sharp_tiles, _ = compute.run("IPAdapterTiled", {**_tiled_inputs(pipe, image), "sharpening": 0.5})
    (embeds,) = IPAEncodeImagePrompt().encode(plus, vit_h, image, tiles="tiled", legacy=True, tile_sharpening=0.5)
    (ours,) = IPAApplyAdapter().apply(make_model("sd15"), plus, embeds, 0.7, 0.0, 1.0, legacy=True)
    assert torch.equal(_run(sharp_model), _run(ours)) and not torch.allclose(sharp_tiles, tiles, atol=1e-3)


def test_tiled_batch_of_one_image_is_tiled(host, plus, vit_h, host_preprocess):
    pipe, image = _pipe(plus, vit_h), _image(256, 256)
    inputs = {k: v for k, v in _tiled_inputs(pipe, image).items() if k != "combine_embeds"}
    model, tiles, _ = compute.run("IPAdapterTiledBatch", {**inputs, "encode_batch_size": 0})
    model_tiled, tiles_tiled, _ = compute.run("IPAdapterTiled", _tiled_inputs(pipe, image))
    assert torch.equal(tiles, tiles_tiled) and torch.equal(_run(model), _run(model_tiled))


@pytest.fixture
def pack_nodes(host, monkeypatch):
    """The widely used pack's own node classes, loaded into the stand-in host (pack_standin.py); both packs see the
    same host preprocessing (a squash resize, so that any size of tile goes in)."""
    from ip_core.preprocess import preprocess_images

    return pack_standin.load(monkeypatch, host, lambda images, size, crop=True: preprocess_images(images, "squash", size))


def _frame_masks(h, w):
    """One attn_mask per frame: all, the lower half, the left part."""
    m = torch.ones(3, h, w)
    m[1, :h // 2], m[2, :, w // 3:] = 0, 0
    return m


@pytest.mark.parametrize("node_id, adapter, weight_type, scaling, shape, references, frames, masked, sharpening", [
    ("IPAdapterTiledBatch", "base", "linear", "V only", (200, 300), 3, 3, False, 0.0),  # two overlapping tiles side by side
    ("IPAdapterTiledBatch", "plus", "ease in", "K+V w/ C penalty", (256, 256), 3, 4, False, 0.0),  # 2 x 2; frame 4 repeats
    ("IPAdapterTiledBatch", "base", "linear", "V only", (256, 256), 3, 3, True, 0.0),  # a square reference, a mask per frame
    ("IPAdapterTiled", "plus", "style transfer", "V only", (300, 200), 1, 2, False, 0.0),  # one reference for every frame
    ("IPAdapterTiled", "base", "linear", "V only", (200, 300), 1, 2, False, 0.6),  # sharpened before the cut
])
def test_tiled_ids_equal_the_packs_own_nodes(request, host, vit_h, pack_nodes, monkeypatch, node_id, adapter,
                                             weight_type, scaling, shape, references, frames, masked, sharpening):
    """IPAdapter Tiled Batch, several references (one per frame), and IPAdapter Tiled: the model, tiles and masks equal
    the pack's own node's (loaded from its source in ../shared/hosts), frame by frame. (An attn_mask on a reference
    that is not square differs: ours is stretched over the image, the pack's cut like the reference; docs/nodes.md.)"""
    monkeypatch.delenv(dropin.ENV, raising=False)  # the pack's results (legacy)
    a = request.getfixturevalue(adapter)
    images = _image(*shape, seed=3, batch=references)
    options = dict(weight=0.7, weight_type=weight_type, start_at=0.0, end_at=1.0, sharpening=sharpening, embeds_scaling=scaling,
                   attn_mask=_frame_masks(*shape) if masked else None)
    options.update(encode_batch_size=0) if node_id == "IPAdapterTiledBatch" else options.update(combine_embeds="concat")
    model = make_model("sd15")
    ref_model, ref_tiles, ref_masks = pack_nodes[node_id]().apply_tiled(
        model, a.adapter.released_state_dict(), images, clip_vision=vit_h, **options)
    ours, tiles, masks = compute.run(node_id, dict(model=model, ipadapter=_pipe(a, vit_h), image=images, **options))
    assert torch.allclose(tiles, ref_tiles, atol=1e-6) and torch.allclose(masks, ref_masks, atol=1e-6)
    g = torch.Generator().manual_seed(9)
    x, c, u = (torch.randn(frames, *s, generator=g) for s in ((4, 8, 8), (8, 768), (8, 768)))
    expected, got = run_model(ref_model, x, 5.0, c, u), run_model(ours, x, 5.0, c, u)
    assert not torch.allclose(expected, run_model(model, x, 5.0, c, u), atol=1e-3)  # the tiles do act
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_a_batch_node_with_a_weight_list_equals_the_packs_own_node(host, vit_h, base, pack_nodes, monkeypatch):
    """IPAdapter Batch with its weight linked from IPAdapter Weights (one weight per frame, as the pack's weights
    example sends it): the pack's model, frame by frame."""
    monkeypatch.delenv(dropin.ENV, raising=False)
    images, model = _image(64, 64, seed=4, batch=3), make_model("sd15")
    options = dict(weight=[1.0, 0.3, 0.0], weight_type="linear", start_at=0.0, end_at=1.0, embeds_scaling="V only",
                   encode_batch_size=0)
    ref = pack_nodes["IPAdapterBatch"]().apply_ipadapter(model, base.adapter.released_state_dict(), image=images,
                                                         clip_vision=vit_h, **options)[0]
    (ours,) = compute.run("IPAdapterBatch", dict(model=model, ipadapter=_pipe(base, vit_h), image=images, **options))
    g = torch.Generator().manual_seed(2)
    x, c, u = (torch.randn(3, *s, generator=g) for s in ((4, 8, 8), (8, 768), (8, 768)))
    expected, plain = run_model(ref, x, 5.0, c, u), run_model(model, x, 5.0, c, u)
    assert torch.allclose(run_model(ours, x, 5.0, c, u), expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(expected[2], plain[2]) and not torch.allclose(expected[1], plain[1], atol=1e-3)  # weight 0: untouched


@pytest.mark.parametrize("weight_type", ["composition precise", "style transfer precise", "ease in", "style transfer"])
def test_mad_scientist_layer_weights_equal_the_packs_own_node(host, vit_h, plus, pack_nodes, monkeypatch, weight_type):
    """IPAdapter Mad Scientist with layer_weights (as the pack's precise composition example): the weights replace
    the weight type's own (a precise type keeps its swap of cond and uncond, any other acts as linear)."""
    monkeypatch.delenv(dropin.ENV, raising=False)
    image, model = _image(64, 64, seed=6), make_model("sd15")
    options = dict(weight=0.9, weight_faceidv2=1.0, weight_type=weight_type, combine_embeds="concat", start_at=0.0,
                   end_at=1.0, embeds_scaling="K+mean(V) w/ C penalty", layer_weights="0:0, 3:0.8, 4:0.5, 6:0.35, 11:1")
    ref = pack_nodes["IPAdapterMS"]().apply_ipadapter(model, plus.adapter.released_state_dict(), image=image,
                                                      clip_vision=vit_h, **options)[0]
    (ours,) = compute.run("IPAdapterMS", dict(model=model, ipadapter=_pipe(plus, vit_h), image=image, **options))
    g = torch.Generator().manual_seed(3)
    x, c, u = (torch.randn(1, *s, generator=g) for s in ((4, 8, 8), (8, 768), (8, 768)))
    assert torch.allclose(run_model(ours, x, 5.0, c, u), run_model(ref, x, 5.0, c, u), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind, strength, blur", [("fade", 0.3, 5), ("dissolve", 0.5, 0), ("gaussian", 0.2, 4),
                                                  ("shuffle", 0.7, 3)])
def test_noise_equals_the_packs_own_node(pack_nodes, kind, strength, blur):
    image = _image(300, 200, seed=8)
    (ref,) = pack_nodes["IPAdapterNoise"]().make_noise(kind, strength, blur, image_optional=image)
    (ours,) = compute.run("IPAdapterNoise", dict(type=kind, strength=strength, blur=blur, image_optional=image))
    assert ours.shape == ref.shape and torch.allclose(ours, ref, atol=1e-6)


# ------------------------------------------------------------------ regions
@pytest.fixture
def node_helpers(monkeypatch):
    """The host's node_helpers.conditioning_set_values (what ConditioningSetMask calls), stood in."""
    module = types.ModuleType("node_helpers")

    def conditioning_set_values(conditioning, values):
        return [[t[0], {**t[1], **values}] for t in conditioning]

    module.conditioning_set_values = conditioning_set_values
    monkeypatch.setitem(sys.modules, "node_helpers", module)


def test_regional_conditioning_masks_the_prompts_only_with_a_mask(node_helpers):
    text = [[torch.zeros(1, 77, 768), {"pooled_output": None}]]
    mask = torch.zeros(1, 64, 64)
    params, pos, neg = compute.run("IPAdapterRegionalConditioning", dict(
        image=_image(64, 64), image_weight=0.6, prompt_weight=1.5, weight_type="ease in", start_at=0.1, end_at=0.9,
        mask=mask, positive=text, negative=None))
    assert pos[0][1]["mask"] is mask and pos[0][1]["mask_strength"] == 1.5 and pos[0][1]["set_area_to_bounds"] is False
    assert neg is None and "mask" not in text[0][1]
    (region,) = params.regions
    assert (region["weight"], region["weight_type"], region["start_at"], region["end_at"]) == (0.6, "ease in", 0.1, 0.9)
    unmasked, pos, _ = compute.run("IPAdapterRegionalConditioning", dict(
        image=_image(64, 64), image_weight=1.0, prompt_weight=1.0, weight_type="linear", start_at=0.0, end_at=1.0,
        positive=text))
    assert pos is text and unmasked.regions[0]["attn_mask"] is None


def test_from_params_chains_one_encode_and_apply_per_region_in_order(host, plus, vit_h, host_preprocess):
    from nodes.nodes_apply import IPAApplyAdapter
    from nodes.nodes_encode import IPAEncodeImagePrompt

    left, right = torch.zeros(1, 64, 64), torch.zeros(1, 64, 64)
    left[:, :, :32], right[:, :, 32:] = 1, 1
    images = [_image(64, 64, seed=s) for s in range(3)]
    regions = [compute.regional_conditioning(img, w, 1.0, "linear", 0.0, 1.0, mask=m)[0]
               for img, w, m in zip(images, (0.5, 0.8, 1.0), (left, right, None))]
    (two,) = compute.run("IPAdapterCombineParams", dict(params_1=regions[0], params_2=regions[1]))
    (joined,) = compute.run("IPAdapterCombineParams", dict(params_1=two, params_2=regions[2]))
    assert [r["weight"] for r in joined.regions] == [0.5, 0.8, 1.0]
    (model,) = compute.run("IPAdapterFromParams", dict(model=make_model("sd15"), ipadapter=_pipe(plus, vit_h),
                                                        ipadapter_params=joined, combine_embeds="concat",
                                                        embeds_scaling="K+V"))
    ours = make_model("sd15")
    for img, w, m in zip(images, (0.5, 0.8, 1.0), (left, right, None)):
        (e,) = IPAEncodeImagePrompt().encode(plus, vit_h, img, legacy=True)
        (ours,) = IPAApplyAdapter().apply(ours, plus, e, w, 0.0, 1.0, attn_mask=m, embeds_scaling="K+V", legacy=True)
    assert torch.equal(_run(model), _run(ours))
    with pytest.raises(Exception, match="params_2 must be IPADAPTER_PARAMS"):
        compute.run("IPAdapterCombineParams", dict(params_1=two, params_2=torch.zeros(1)))


# ------------------------------------------------------------------ images, files, loaders, weights
def test_prep_image_crops_where_asked_then_resizes_to_224():
    tall = _image(448, 224)
    (top,) = compute.run("PrepImageForClipVision", dict(image=tall, interpolation="LANCZOS", crop_position="top",
                                                         sharpening=0.0))
    (bottom,) = compute.run("PrepImageForClipVision", dict(image=tall, interpolation="NEAREST", crop_position="bottom",
                                                            sharpening=0.0))
    eight_bit = (tall * 255).byte().float() / 255  # 224 px already: PIL's resize keeps the pixels
    assert top.shape == (1, 224, 224, 3) and torch.equal(top, eight_bit[:, :224]) and torch.equal(bottom, eight_bit[:, 224:])
    (padded,) = compute.run("PrepImageForClipVision", dict(image=_image(224, 112), interpolation="BICUBIC",
                                                            crop_position="pad", sharpening=0.0))
    assert padded[:, :, :56].eq(0).all() and padded[:, :, 168:].eq(0).all()
    assert torch.equal(padded[:, :, 56:168], (_image(224, 112) * 255).byte().float() / 255)
    (sharp,) = compute.run("PrepImageForClipVision", dict(image=tall, interpolation="LANCZOS", crop_position="top",
                                                           sharpening=0.3))
    assert torch.allclose(sharp, sharpen_by_the_pixel(top, 0.3), atol=1e-6) and not torch.allclose(sharp, top, atol=1e-2)


@pytest.mark.parametrize("crop_position, sharpening", [("top", 0.3), ("pad", 1.0), ("center", 0.0)])
def test_prep_image_equals_the_packs_own_node(pack_nodes, crop_position, sharpening):
    image = _image(300, 200, seed=5, batch=2)
    (ref,) = pack_nodes["PrepImageForClipVision"]().prep_image(image, "LANCZOS", crop_position, sharpening)
    (ours,) = compute.run("PrepImageForClipVision", dict(image=image, interpolation="LANCZOS", crop_position=crop_position,
                                                          sharpening=sharpening))
    assert ours.shape == ref.shape == (2, 224, 224, 3) and torch.equal(ours, ref)  # bit for bit: Noise seeds from the sum


def test_prep_then_noise_give_the_packs_noise(pack_nodes):
    """The pack's IPAdapter Noise seeds from the image's float sum, which depends on the memory order of its input:
    a Prep Image result laid out as the pack's gives the pack's noise (they differed by 0.13 when it was not)."""
    image = _image(300, 200, seed=6)
    for sharpening in (0.15, 0.0):
        (ref,) = pack_nodes["PrepImageForClipVision"]().prep_image(image, "LANCZOS", "top", sharpening)
        (ours,) = compute.run("PrepImageForClipVision", dict(image=image, interpolation="LANCZOS", crop_position="top",
                                                              sharpening=sharpening))
        (noise_ref,) = pack_nodes["IPAdapterNoise"]().make_noise("fade", 0.3, 5, image_optional=ref)
        (noise,) = compute.run("IPAdapterNoise", dict(type="fade", strength=0.3, blur=5, image_optional=ours))
        assert torch.equal(noise, noise_ref), sharpening


def sharpen_by_the_pixel(images, amount):
    """Contrast-adaptive sharpening written out pixel by pixel in float64 (NHWC): the specification the drop-in's
    sharpening follows (zeros outside the image, NaN where all nine are black -> 0)."""
    n, c, h, w = images.permute(0, 3, 1, 2).shape
    x = images.double().permute(0, 3, 1, 2).tolist()
    out = torch.empty(n, c, h, w, dtype=torch.float64)
    px = lambda b, ch, i, j: x[b][ch][i][j] if 0 <= i < h and 0 <= j < w else 0.0  # noqa: E731
    for b in range(n):
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    plus = [px(b, ch, i + di, j + dj) for di, dj in ((-1, 0), (0, -1), (0, 0), (0, 1), (1, 0))]
                    diag = [px(b, ch, i + di, j + dj) for di, dj in ((-1, -1), (-1, 1), (1, -1), (1, 1))]
                    mx, mn = max(plus) + max(diag), min(plus) + min(diag)
                    if mx == 0:
                        out[b, ch, i, j] = 0.0
                        continue
                    wgt = -((min(mn, 2 - mx) / mx) ** 0.5) * (amount * (1 / 5 - 1 / 8) + 1 / 8)
                    edges = plus[0] + plus[1] + plus[3] + plus[4]
                    out[b, ch, i, j] = min(max((edges * wgt + plus[2]) / (1 + 4 * wgt), 0.0), 1.0)
    return out.permute(0, 2, 3, 1).float()


def test_saved_embeds_load_back_as_safetensors_and_the_packs_pickles_are_refused(folders, host, plus, vit_h,
                                                                              host_preprocess):
    out_dir, in_dir = folders
    pos, neg = compute.encoder(_pipe(plus, vit_h), _image(64, 64), 1.0)
    compute.run("IPAdapterSaveEmbeds", dict(embeds=pos, filename_prefix="ipadapter/cat"))
    compute.run("IPAdapterSaveEmbeds", dict(embeds=neg, filename_prefix="ipadapter/cat_neg"))
    for name in ("cat", "cat_neg"):
        shutil.copy(out_dir / "ipadapter" / f"{name}_00001.ipadpt", in_dir / f"{name}.ipadpt")
    torch.save(torch.randn(1, 1280), in_dir / "theirs.ipadpt")
    assert compute.dynamic_choices(pack_interface.FILES_EMBEDS) == ["cat.ipadpt", "cat_neg.ipadpt", "theirs.ipadpt"]
    (loaded,) = compute.run("IPAdapterLoadEmbeds", dict(embeds="cat.ipadpt"))
    (loaded_neg,) = compute.run("IPAdapterLoadEmbeds", dict(embeds="cat_neg.ipadpt"))
    assert torch.equal(loaded.features(), pos.features()) and torch.equal(loaded_neg.features(), neg.features())
    model = make_model("sd15")
    args = dict(model=model, ipadapter=_pipe(plus, vit_h), weight=1.0, weight_type="linear", start_at=0.0, end_at=1.0,
                embeds_scaling="V only")
    (from_file,) = compute.run("IPAdapterEmbeds", dict(args, pos_embed=loaded, neg_embed=loaded_neg))
    (direct,) = compute.run("IPAdapterEmbeds", dict(args, pos_embed=pos, neg_embed=neg))
    assert torch.equal(_run(from_file), _run(direct))
    with pytest.raises(Exception, match="theirs.ipadpt: a pickle"):
        compute.run("IPAdapterLoadEmbeds", dict(embeds="theirs.ipadpt"))


def test_combine_weights_joins_the_lists_through_our_node():
    assert compute.run("IPAdapterCombineWeights", dict(weights_1=0.5, weights_2=[0.1, 0.2])) == ([0.5, 0.1, 0.2], 3)
    assert compute.COMPUTE["IPAdapterCombineWeights"](weights_1=[0.5], weights_2=0.1) == \
        IPACombineFrameWeights().combine([0.5], 0.1)


def test_prompt_schedule_keys_each_prompt_line_by_the_frame_its_image_starts():
    """3 images, 4 frames each, 2 frames before and 1 after: lines a, b, b (the last repeated), keyed 0 (the added
    start), 2, 6, 10 and 14 (the added end)."""
    out = compute.run("IPAdapterWeights", dict(weights="1.0, 0.0", timing="linear", frames=4, start_frame=0,
                                               end_frame=9999, add_starting_frames=2, add_ending_frames=1,
                                               method="full batch", image=_image(8, 8, batch=3)))
    (again,) = compute.run("IPAdapterWeightsFromStrategy", dict(weights_strategy=out[5]))[5:]
    (schedule,) = compute.run("IPAdapterPromptScheduleFromWeightsStrategy", dict(weights_strategy=again,
                                                                                 prompt="a\n\nb\n"))
    assert schedule == '"0": "a",\n"2": "a",\n"6": "b",\n"10": "b",\n"14": "b",\n'
    assert compute.run("IPAdapterPromptScheduleFromWeightsStrategy", dict(weights_strategy=out[5], prompt="")) == ("",)


def _faceid_loader_run(monkeypatch, preset, strength, lora_files):
    """Unified Loader FaceID with the preset's files stood in: what it put on the model (host LoRA file / the
    adapter's own LoRA) and the pipeline."""
    from test_nodes_faceid import faceid_adapter

    from nodes.common import LoadedAdapter

    adapter = LoadedAdapter(faceid_adapter("faceid"), "ip-adapter-faceid_sd15.bin")
    model, done = make_model("sd15"), []
    monkeypatch.setattr(compute.IPAUnifiedLoader, "load", lambda self, m, p: (m, adapter, "vit-h"))
    monkeypatch.setattr(compute.host, "model_files", lambda folder: (lora_files, ["/loras"]) if folder == "loras" else ([], []))
    monkeypatch.setattr(compute.host, "model_path", lambda folder, name: f"/{folder}/{name}")
    monkeypatch.setattr(compute.host, "apply_lora_file", lambda m, path, s: done.append(("file", path, s)) or "with file")
    monkeypatch.setattr(type(compute.family_for(adapter.config)), "finish",
                        lambda self, m, a, s: done.append(("own", a.name, s)) or "with own")
    out, pipe = compute.run("IPAdapterUnifiedLoaderFaceID", dict(model=model, preset=preset, lora_strength=strength,
                                                                 provider="CUDA"))
    assert pipe.adapter is adapter and pipe.clip_vision == "vit-h" and pipe.provider == "CUDA"
    return (out if out is not model else "unchanged"), done


def test_unified_loader_faceid_puts_the_lora_file_the_pack_loads_on_the_model(monkeypatch, caplog):
    """As the pack's loader: the preset's LoRA file from models/loras, through the host's LoRA loader, on the model it
    returns (its FaceID nodes add none); without that file, the same release's LoRA stored in the adapter file, said
    in the log; in corrected mode that stored LoRA (the official one); none at strength 0 or for presets without one."""
    monkeypatch.delenv(dropin.ENV, raising=False)
    files = ["other.safetensors", "ip-adapter-faceid_sd15_lora.safetensors"]
    assert _faceid_loader_run(monkeypatch, "FACEID", 0.6, files) == (
        "with file", [("file", "/loras/ip-adapter-faceid_sd15_lora.safetensors", 0.6)])
    assert _faceid_loader_run(monkeypatch, "FACEID", 0.0, files) == ("unchanged", [])
    assert _faceid_loader_run(monkeypatch, "FACEID PORTRAIT (style transfer)", 0.6, files) == ("unchanged", [])
    assert _faceid_loader_run(monkeypatch, "FACEID", 0.6, files[:1]) == (
        "with own", [("own", "ip-adapter-faceid_sd15.bin", 0.6)])
    assert "no ip-adapter-faceid_sd15_lora.safetensors in models/loras" in caplog.text
    monkeypatch.setenv(dropin.ENV, "corrected")
    assert _faceid_loader_run(monkeypatch, "FACEID", 0.6, files) == ("with own", [("own", "ip-adapter-faceid_sd15.bin", 0.6)])


def test_apply_ids_given_a_faceid_pipeline_compute_as_ipadapter_faceid(monkeypatch):
    """SwarmUI sends IPAdapter after a Unified Loader FaceID: the pack runs its face path then, weight_faceidv2 = 2 x
    weight; IPAdapter's weight types by the recipe's names, IPAdapter Batch as FaceID Batch."""
    from test_nodes_faceid import faceid_adapter

    from nodes.common import LoadedAdapter

    pipe = compute.Pipeline(LoadedAdapter(faceid_adapter("faceid"), "ip-adapter-faceid_sd15.bin"), "vit-h")
    calls = []
    monkeypatch.setattr(compute, "faceid", lambda *a, **kw: calls.append((a, kw)) or ("model", "faces"))
    args = dict(model="m", ipadapter=pipe, image="img", weight=0.7, start_at=0.1, end_at=0.9)
    assert compute.run("IPAdapter", dict(args, weight_type="prompt is more important")) == ("model",)
    assert calls[-1] == (("m", pipe, "img", 0.7, 1.4, "ease out", "concat", 0.1, 0.9, "V only"),
                         dict(attn_mask=None, clip_vision=None, batch=False))
    compute.run("IPAdapterBatch", dict(args, weight_type="linear", embeds_scaling="K+V", encode_batch_size=0))
    assert calls[-1][0][5:] == ("linear", "concat", 0.1, 0.9, "K+V") and calls[-1][1]["batch"]
    with pytest.raises(Exception, match="list of weights with a FaceID adapter"):
        compute.run("IPAdapterAdvanced", dict(args, weight=[0.5, 0.6], weight_type="linear", combine_embeds="concat",
                                              embeds_scaling="V only"))


def test_faceid_plus_with_a_negative_image_is_refused_and_plain_faceid_ignores_it_as_the_pack(monkeypatch):
    from test_nodes_faceid import faceid_adapter

    from nodes.common import LoadedAdapter

    args = dict(model="m", image="img", weight=1.0, weight_faceidv2=1.0, weight_type="linear", combine_embeds="concat",
                start_at=0.0, end_at=1.0, embeds_scaling="V only", image_negative=torch.zeros(1, 8, 8, 3))
    plus = compute.Pipeline(LoadedAdapter(faceid_adapter("faceid-plus"), "ip-adapter-faceid-plusv2_sd15.bin"), "vit-h")
    with pytest.raises(Exception, match="image_negative with a FaceID Plus adapter .*Disconnect it"):
        compute.run("IPAdapterFaceID", dict(args, ipadapter=plus))
    seen = []
    monkeypatch.setattr(compute.IPAEncodeFace, "encode", lambda self, *a, **kw: seen.append(a) or ("embeds", "faces"))
    monkeypatch.setattr(compute.IPAApplyAdapter, "apply", lambda self, *a, **kw: ("model",))
    base = compute.Pipeline(LoadedAdapter(faceid_adapter("faceid"), "ip-adapter-faceid_sd15.bin"), "vit-h")
    assert compute.run("IPAdapterFaceID", dict(args, ipadapter=base)) == ("model", "faces") and len(seen) == 1
