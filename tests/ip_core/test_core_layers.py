"""The layer tables equal what diffusers builds for full SD1.5 and SDXL UNets (on the meta device)."""
import pytest
import torch

from ip_core.layers import layer_specs, layer_specs_from_unet

diffusers = pytest.importorskip("diffusers")

SD15 = dict(block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8)
SDXL = dict(
    block_out_channels=(320, 640, 1280), cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)


@pytest.mark.parametrize("base,kwargs,count", [("sd15", SD15, 16), ("sdxl", SDXL, 70)])
def test_tables_match_diffusers_attn_processors(base, kwargs, count):
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**kwargs)
    derived = layer_specs_from_unet(unet)
    assert derived is layer_specs(base)  # recognised as the released family, with its ComfyUI keys
    all_names = list(unet.attn_processors)
    for spec in layer_specs(base):
        assert all_names[spec.key_number] == spec.diffusers_name
    assert len(derived) == count


def test_comfy_keys_follow_the_host_block_order():
    sd15 = layer_specs("sd15")
    assert [s.comfy_key for s in sd15[:6]] == [("input", n, 0) for n in (1, 2, 4, 5, 7, 8)]
    assert [s.comfy_key for s in sd15[6:15]] == [("output", n, 0) for n in range(3, 12)]
    assert sd15[15].comfy_key == ("middle", 0, 0) and sd15[15].key_number == 31
    sdxl = layer_specs("sdxl")
    assert sdxl[0].comfy_key == ("input", 4, 0) and sdxl[-1].comfy_key == ("middle", 0, 9)
    assert sum(s.comfy_block == ("output", 1) for s in sdxl) == 10
    assert [s.key_number for s in sdxl] == list(range(1, 140, 2))
