"""Flux nodes: the model's double / single blocks through patches_replace["dit"] (nodes/patch_dit.py), the
SigLIP encoder check, and "no image" as a black image through the encoder (diffusers' Flux pipeline)."""
from __future__ import annotations

from ..patch_dit import check_flux_encoder, check_flux_model, patch_flux_model
from .base import NodeFamily


class FluxFamily(NodeFamily):
    NAME = "flux"

    def check_model(self, a, model) -> None:
        check_flux_model(a, model)

    def check_encoder(self, config, encoded) -> None:
        check_flux_encoder(config, encoded)

    def no_image_features(self, config, cond, no_image):
        return no_image.black_image().expand(cond.shape[0], -1).clone()

    def patch(self, model, a, tokens, weights, window, mask, label, frame_weights, plan, composition_embeds,
              embeds_scaling):
        branch = self.branch(a, tokens, weights, window, mask, label, frame_weights, plan, composition_embeds,
                             embeds_scaling)
        patched, _ = patch_flux_model(model, branch, a.adapter.layers, a.config.placement)
        return patched


FAMILY = FluxFamily()
