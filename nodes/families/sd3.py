"""SD3.5 nodes: the MMDiT's joint blocks through patches_replace["dit"], tokens made per step from the
timestep (nodes/patch_mmdit.py)."""
from __future__ import annotations

from .. import host
from ..patch_mmdit import SD3Branch, check_sd3_model, managed_adapter, patch_sd3_model
from .base import NodeFamily


class SD3Family(NodeFamily):
    NAME = "sd3"

    def check_model(self, a, model) -> None:
        check_sd3_model(a, model)

    def patch(self, model, a, tokens, weights, window, mask, label, frame_weights, plan, composition_embeds,
              embeds_scaling):
        # the adapter's weights go where the host puts its models (loaded with the model, offloaded under pressure)
        managed = managed_adapter(a.adapter, host.compute_dtype(model))
        branch = SD3Branch(a.adapter, tokens, weights, window, mask, label=label, frame_weights=frame_weights,
                           managed=managed)
        patched, _ = patch_sd3_model(model, branch, a.adapter.layers)
        return patched


FAMILY = SD3Family()
