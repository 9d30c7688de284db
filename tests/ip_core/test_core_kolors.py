"""Kwai Kolors IP-Adapter-Plus: recognised from its shapes (an SDXL-shaped file whose Resampler is 2048 wide
over 1024-wide CLIP hidden states), named as Kolors, and tied to CLIP ViT-L/14-336 (577 tokens): a 224 px
ViT-L/14 has the same widths and is refused by its token count."""
import pytest
import torch

from ip_core.adapter import IPAdapter
from ip_core.config import KOLORS_ENCODER, make_config
from ip_core.families import detect_config
from ip_core.embeds import features_for
from ip_core.encoder_table import EncoderOutput, encoder_file_for
from ip_core.errors import AdapterMismatchError
from ip_core.layers import layer_specs



def test_kolors_plus_is_detected_and_described_from_its_shapes(kolors_plus_sd):
    config = detect_config(kolors_plus_sd)
    assert config.kolors and config.variant == "plus" and config.base_model == "sdxl" and config.num_layers == 70
    assert config.encoder_name == KOLORS_ENCODER == "ViT-L/14-336" and config.num_tokens == 16
    assert config.resampler.heads == 12 and config.resampler.dim == 2048
    assert config.description.startswith("Kolors plus (Resampler), 16 tokens, 70 layers, needs ViT-L/14-336")
    assert encoder_file_for(config.encoder_name) == "clip-vit-large-patch14-336"


def test_sdxl_plus_adapters_are_not_kolors():
    vit_h = make_config("plus", layer_specs("sdxl"), 2048, 1280)  # ip-adapter-plus_sdxl_vit-h: Resampler dim 1280
    with torch.device("meta"):
        sd = IPAdapter.from_config(vit_h).released_state_dict()
    config = detect_config(sd)
    assert not config.kolors and config.base_model_name == "SDXL" and config.encoder_name == "ViT-H/14"
    # the same widths over ViT-L hidden states but SDXL's 1280-wide Resampler: not Kolors either
    vit_l = make_config("plus", layer_specs("sdxl"), 2048, 1024)
    with torch.device("meta"):
        assert not detect_config(IPAdapter.from_config(vit_l).released_state_dict()).kolors


def test_kolors_embeds_do_not_mix_with_sdxl_vit_l_embeds(kolors_plus_sd, kolors_resampler):
    kolors = detect_config(kolors_plus_sd)
    same_widths = make_config("plus", layer_specs("sdxl"), 2048, 1024, resampler=kolors_resampler)
    assert kolors.signature != same_widths.signature  # make_config never claims Kolors: only a file's shapes do


@pytest.mark.parametrize("tokens, accepted", [(577, True), (257, False)])
def test_the_encoder_must_be_the_336_px_vit_l(tokens, accepted, kolors_plus_sd):
    config = detect_config(kolors_plus_sd)
    out = EncoderOutput(torch.zeros(1, 768), torch.zeros(1, tokens, 1024))
    if accepted:
        assert features_for(config, out).shape == (1, 577, 1024)
        return
    with pytest.raises(AdapterMismatchError) as e:
        features_for(config, out, "the connected CLIP vision model")
    msg = str(e.value)
    assert "needs ViT-L/14-336 hidden states (577 tokens, 336 px images)" in msg
    assert "gives 257 tokens (a 224 px encoder, e.g. ViT-L/14 at 224 px)" in msg
    assert "load clip-vit-large-patch14-336 as the CLIP vision model" in msg


def test_a_vit_h_encoder_on_kolors_is_refused_by_width(kolors_plus_sd):
    config = detect_config(kolors_plus_sd)
    with pytest.raises(AdapterMismatchError, match="width 1280 .*ViT-H/14.*clip-vit-large-patch14-336"):
        features_for(config, EncoderOutput(torch.zeros(1, 1024), torch.zeros(1, 257, 1280)))
