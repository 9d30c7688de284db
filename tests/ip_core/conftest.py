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
