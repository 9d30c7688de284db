"""check_embeds_fit: embeds meet an adapter only with the tensors its layout makes (one check, before any matmul,
for a loaded file, Combine and Apply); check_embeds_values: what any embeds must be."""
import dataclasses

import pytest
import torch

from ip_core import AdapterMismatchError, IPAdapter, IPAdapterError, make_config
from ip_core.embeds import build_image_prompt, check_embeds_fit, check_embeds_values, combine_embeds
from ip_core.layers import custom_layer_specs
from ip_core.families.sd3 import make_sd3_config

LAYERS = custom_layer_specs([1, 3], [16, 16])


def _adapter(variant="base", width=24):
    torch.manual_seed(0)
    return IPAdapter(make_config(variant, LAYERS, 32, width)).eval()


@pytest.fixture(scope="module")
def base():
    return _adapter()


def _prompt(adapter, refs=2, combine="concat"):
    width = adapter.config.encoder_width
    shape = (refs, width) if adapter.config.encoder_output == "image_embeds" else (refs, 5, width)
    return build_image_prompt(adapter, torch.randn(shape), torch.zeros(shape), combine=combine)


@pytest.mark.parametrize("combine", ["concat", "batch", "average"])
def test_what_the_adapter_makes_fits_it(base, combine):
    check_embeds_fit(base, _prompt(base, combine=combine))
    plus = _adapter("plus", 40)
    check_embeds_fit(plus, _prompt(plus, combine=combine))


@pytest.mark.parametrize("field, value, match", [
    ("cond", torch.randn(1, 8, 33), r"tokens \[1, 8, 33\].*a multiple of 4 tokens of width 32"),
    ("cond", torch.randn(1, 7, 32), r"tokens \[1, 7, 32\].*a multiple of 4"),
    ("cond_features", torch.randn(2, 27), r"encoder features \[2, 27\].*image_embeds of width 24"),
    ("cond_features", torch.randn(2, 5, 24), r"encoder features \[2, 5, 24\].*\(2 dims\)"),
    ("cond_features", torch.randn(3, 24), "features of 3 references but tokens \\[1, 8, 32\\].*from 2"),
])
def test_shapes_the_layout_does_not_make_are_refused_naming_both_sides(base, field, value, match):
    e = _prompt(base)
    changes = {field: value}
    if field == "cond":
        changes["uncond"] = torch.zeros_like(value)
    else:
        changes["uncond_features"] = torch.zeros_like(value)
    with pytest.raises(AdapterMismatchError, match=match) as err:
        check_embeds_fit(base, dataclasses.replace(e, **changes))
    assert "SD1.5" in str(err.value) or "tokens, 2 layers" in str(err.value)  # the adapter's side is named
    assert "encode the reference image again" in str(err.value)


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int32, torch.bool, torch.complex64])
def test_tensors_that_are_not_float_are_refused(base, dtype):
    e = _prompt(base)
    with pytest.raises(IPAdapterError, match=f"cond holds {str(dtype).replace('torch.', '')} .*float numbers"):
        check_embeds_values(dataclasses.replace(e, cond=e.cond.to(dtype)))


@pytest.mark.parametrize("field", ["cond", "uncond", "cond_features", "uncond_features"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values_are_refused(base, field, bad):
    e = _prompt(base)
    t = getattr(e, field).clone()
    t.view(-1)[-1] = bad
    with pytest.raises(IPAdapterError, match=f"{field} contains NaN or infinite values"):
        check_embeds_fit(base, dataclasses.replace(e, **{field: t}))


def test_inconsistent_tensors_are_refused_without_an_adapter(base):
    e = _prompt(base)
    for changes, match in [(dict(uncond=e.uncond[:, :4]), "cond .* and uncond .* must be equal"),
                           (dict(cond=e.cond[0], uncond=e.uncond[0]), "must be equal"),
                           (dict(uncond_features=None), "uncond_features is missing"),
                           (dict(uncond_features=torch.zeros(2, 23)), "must be .* of the same shape"),
                           (dict(region_masks=torch.full((1, 4, 4), 2.0)), "region_masks .* within 0..1")]:
        with pytest.raises(IPAdapterError, match=match):
            check_embeds_values(dataclasses.replace(e, **changes))


def test_tile_masks_of_any_reference_pass_the_check(base):
    """A tiled reference's masks are resized bicubically (as the widely used pack does): a half mask on a 300 x 260
    reference overshoots 0..1 by 0.07 at its edge. Such embeds are valid; a mask at 1.5 is not."""
    from ip_core import tiles
    from ip_core.embeds import MASK_OVERSHOOT

    mask = torch.zeros(1, 300, 260)
    mask[:, :, :130] = 1
    masks = tiles.tile_masks(tiles.tile_layout(300, 260), mask)[:, 0]
    assert float(masks.max()) > 1.05 and float(masks.min()) < -0.05  # the overshoot is real
    e = _prompt(base, refs=1)
    rows = masks.shape[0]
    tiled = dataclasses.replace(e, cond=e.cond.repeat(rows, 1, 1), uncond=e.uncond.repeat(rows, 1, 1), region_masks=masks)
    check_embeds_values(tiled)
    with pytest.raises(IPAdapterError, match="region_masks .* within 0..1"):
        check_embeds_values(dataclasses.replace(tiled, region_masks=masks.clamp(0, 1) * (1 + 4 * MASK_OVERSHOOT)))


def test_combine_names_a_width_before_blaming_the_encoders(base):
    """A 27-wide feature row is not 'another CLIP vision model': it fits no encoder of this adapter."""
    e = _prompt(base, refs=1)
    odd = dataclasses.replace(e, cond_features=torch.randn(1, 27), uncond_features=torch.zeros(1, 27))
    with pytest.raises(AdapterMismatchError, match=r"embeds_2 carry encoder features \[1, 27\].*width 24"):
        combine_embeds(base, [e, odd], "average")


def test_sd3_embeds_are_features_of_its_encoders_width():
    """SD3.5's embeds stay encoder features (tokens are made per step): any count, the encoder's width."""
    config = make_sd3_config(1, hidden_size=64, encoder_width=24, num_tokens=4, resampler_dim=32, depth=1, heads=2,
                             dim_head=16, head_dim=32)
    assert config.prompt_tokens == (0, 24)
    assert _adapter().config.prompt_tokens == (4, 32)
