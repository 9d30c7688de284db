"""Image prompt tokens: the official unconditional embeddings, encoder fit checks, combining references."""
import pytest
import torch

from ip_core import AdapterMismatchError, IPAdapter, IPAdapterError, make_config
from ip_core.embeds import build_image_prompt, check_embeds_fit, combine_features, features_for, unconditional_features
from ip_core.encoders import EncoderOutput
from ip_core.layers import custom_layer_specs

LAYERS = custom_layer_specs([1, 3], [16, 16])


def adapter(variant, width):
    torch.manual_seed(0)
    return IPAdapter(make_config(variant, LAYERS, 32, width, num_tokens=5 if variant == "full-face" else None)).eval()


def out(b=2, embeds=24, hidden=40, tokens=5):
    return EncoderOutput(image_embeds=torch.randn(b, embeds), penultimate_hidden_states=torch.randn(b, tokens, hidden))


def test_base_uncond_is_zeros_before_the_projection_so_tokens_are_layernorm_of_the_bias():
    a = adapter("base", 24)
    feats = features_for(a.config, out())
    uncond = unconditional_features(a.config, feats)
    assert torch.equal(uncond, torch.zeros(2, 24))
    embeds = build_image_prompt(a, feats, uncond, combine="batch")
    bias_tokens = a.image_proj.norm(a.image_proj.proj.bias.reshape(4, 32))
    torch.testing.assert_close(embeds.uncond, bias_tokens.expand(2, 4, 32))
    assert embeds.uncond.abs().sum() > 0  # not zeros: the paper's "zero image embedding" is before the projection


def test_plus_uncond_is_the_encoders_hidden_states_of_a_zero_normalised_image():
    a = adapter("plus", 40)
    seen = []

    def encode_pixels(px):
        seen.append(px)
        return EncoderOutput(image_embeds=torch.zeros(1, 24), penultimate_hidden_states=torch.full((1, 5, 40), 0.25))

    feats = features_for(a.config, out())
    uncond = unconditional_features(a.config, feats, encode_pixels)
    assert len(seen) == 1 and torch.equal(seen[0], torch.zeros(1, 3, 224, 224))
    assert uncond.shape == feats.shape and torch.all(uncond == 0.25)
    with pytest.raises(ValueError, match="needs the image encoder"):
        unconditional_features(a.config, feats)


def test_encoder_width_mismatch_names_both_models_and_the_fix():
    sd15 = IPAdapter(make_config("base", LAYERS, 32, 1024))
    bigg = EncoderOutput(image_embeds=torch.randn(1, 1280), penultimate_hidden_states=torch.randn(1, 257, 1664))
    with pytest.raises(AdapterMismatchError, match=r"needs ViT-H/14 image_embeds \(width 1024\).*width 1280 from the image encoder \(ViT-bigG/14\).*CLIP-ViT-H-14-laion2B-s32B-b79K"):
        features_for(sd15.config, bigg)


def test_combine_modes():
    f = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    assert torch.equal(combine_features(f, "concat"), f)
    torch.testing.assert_close(combine_features(f, "average"), torch.tensor([[1.5, 2.5]]))
    # norm average (the widely used pack's): each element over its norm across references, then the mean:
    # column norms (3, sqrt(17)) -> mean of (1, 4/sqrt(17)) and (0, 1/sqrt(17)) = (0.5, 2.5/sqrt(17))
    torch.testing.assert_close(combine_features(f, "norm average"), torch.tensor([[0.5, 2.5 / 17 ** 0.5]]))
    torch.testing.assert_close(combine_features(f, "add"), torch.tensor([[3.0, 5.0]]))
    torch.testing.assert_close(combine_features(f, "subtract"), torch.tensor([[3.0, 3.0]]))
    torch.testing.assert_close(combine_features(f, "max"), torch.tensor([[3.0, 4.0]]))
    torch.testing.assert_close(combine_features(f, "min"), torch.tensor([[0.0, 1.0]]))
    one = f[:1]
    for mode in ("average", "norm average", "subtract", "add"):  # one reference is kept as it is (as the pack's apply)
        assert torch.equal(combine_features(one, mode), one)
    with pytest.raises(ValueError, match="unknown combine mode"):
        combine_features(f, "sum")


def test_concat_puts_references_side_by_side_and_uncond_matches():
    a = adapter("base", 24)
    feats = features_for(a.config, out(b=3))
    e = build_image_prompt(a, feats, unconditional_features(a.config, feats), "concat")
    assert e.cond.shape == e.uncond.shape == (1, 12, 32)
    torch.testing.assert_close(e.cond[0, 4:8], a.project(feats[1:2])[0])
    avg = build_image_prompt(a, feats, unconditional_features(a.config, feats), "average")
    assert avg.cond.shape == (1, 4, 32)


def test_negative_image_counts_must_fit():
    a = adapter("base", 24)
    feats = torch.randn(3, 24)
    e = build_image_prompt(a, feats, torch.randn(1, 24), "batch")  # one negative for all references
    assert torch.equal(e.uncond[0], e.uncond[2])
    with pytest.raises(IPAdapterError, match="2 negative images for 3 reference images"):
        build_image_prompt(a, feats, torch.randn(2, 24), "batch")


def test_empty_and_nan_batches_are_refused():
    a = adapter("base", 24)
    with pytest.raises(IPAdapterError, match="empty batch"):
        build_image_prompt(a, torch.zeros(0, 24), torch.zeros(0, 24))
    with pytest.raises(IPAdapterError, match="NaN"):
        build_image_prompt(a, torch.full((1, 24), float("nan")), torch.zeros(1, 24))


def test_embeds_made_for_another_adapter_are_refused():
    base, plus = adapter("base", 24), adapter("plus", 40)
    e = build_image_prompt(base, torch.randn(1, 24), torch.zeros(1, 24))
    check_embeds_fit(base, e)
    with pytest.raises(AdapterMismatchError, match="made for another adapter"):
        check_embeds_fit(plus.config, e)
    torch.manual_seed(5)
    same_layout = IPAdapter(base.config).eval()
    with pytest.raises(AdapterMismatchError, match=r"another adapter \(same layout, other weights\)"):
        check_embeds_fit(same_layout, e)
    check_embeds_fit(base.half().float(), e)  # moving the adapter between dtypes keeps its identity
