import pytest
import torch

from ip_core.adapter import IPAdapter
from ip_core.config import make_config


@pytest.fixture
def tiny_adapter():
    """A small adapter for a custom 3-layer UNet (context 32, encoder width 24)."""
    from ip_core.layers import custom_layer_specs

    torch.manual_seed(0)
    layers = custom_layer_specs([1, 3, 5], [16, 32, 16])
    return IPAdapter(make_config("base", layers, 32, 24))


@pytest.fixture
def kolors_resampler():
    """The released Kolors ip_adapter_plus_general.bin's Resampler: dim 2048, 4 layers, 12 heads of 64, 16 queries
    over 1024-wide CLIP ViT-L/14-336 hidden states, 2048-wide tokens."""
    from ip_core.config import ResamplerConfig

    return ResamplerConfig(dim=2048, depth=4, dim_head=64, heads=12, num_queries=16, embedding_dim=1024, output_dim=2048)


@pytest.fixture
def kolors_plus_sd(kolors_resampler):
    """The released Kolors IP-Adapter-Plus layout (SDXL's 70 K'/V' pairs) as meta tensors: shapes only."""
    from ip_core.layers import layer_specs

    config = make_config("plus", layer_specs("sdxl"), 2048, 1024, resampler=kolors_resampler)
    with torch.device("meta"):
        return IPAdapter.from_config(config).released_state_dict()
