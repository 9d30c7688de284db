"""Shared test factories (importable as `ipa_factories`: tests/ is on pythonpath). State dicts in the released layouts, built in the tests (full shapes on the meta device: no memory)."""
import torch

from ip_core.config import make_config
from ip_core.layers import layer_specs
from ip_core.adapter import IPAdapter


def randomize(module, seed: int = 0, scale: float = 0.2):
    """Every parameter of `module` drawn anew, seeded (for modules whose init is zeros or copies)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return module


def released_sd(variant, base, context_dim, encoder_width, device="meta", dtype=torch.float16):
    """A state dict with exactly the keys and shapes of a released file (random values off meta)."""
    torch.manual_seed(0)
    with torch.device(device):
        adapter = IPAdapter(make_config(variant, layer_specs(base), context_dim, encoder_width))
    return {part: {k: v.to(dtype) for k, v in d.items()} for part, d in adapter.released_state_dict().items()} if device != "meta" else {
        "image_proj": dict(adapter.image_proj.state_dict()), "ip_adapter": dict(adapter.ip_layers.state_dict())}


