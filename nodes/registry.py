"""The node registry: every node id this pack offers, with its display name. One table.

Node ids are public API (saved workflows name them): add, never rename.
"""
from __future__ import annotations

from . import dropin, host
from .nodes_animation import IPACombineFrameWeights, IPAFrameWeights, IPAFrameWeightsFromStrategy, IPAPromptSchedule
from .nodes_apply import IPAApplyAdapter
from .nodes_encode import IPAEncodeImagePrompt
from .nodes_faceid import IPAEncodeFace
from .nodes_flux import IPALoadSigLIPVision
from .nodes_load import IPAInspectAdapter, IPALoadAdapter
from .nodes_toolkit import (IPAApplyRegions, IPACombineEmbeds, IPALoadEmbeds, IPANoise, IPARegion, IPASaveEmbeds,
                            IPAUnifiedLoader)

_NODES = (
    ("IPALoadAdapter", IPALoadAdapter, "Load IPAdapter"),
    ("IPAEncodeImagePrompt", IPAEncodeImagePrompt, "Encode Image Prompt (IPAdapter)"),
    ("IPAApplyAdapter", IPAApplyAdapter, "Apply IPAdapter"),
    ("IPAInspectAdapter", IPAInspectAdapter, "Inspect IPAdapter"),
    ("IPAUnifiedLoader", IPAUnifiedLoader, "Load IPAdapter (preset)"),
    ("IPACombineEmbeds", IPACombineEmbeds, "Combine Image Prompts (IPAdapter)"),
    ("IPASaveEmbeds", IPASaveEmbeds, "Save Image Prompt Embeds (IPAdapter)"),
    ("IPALoadEmbeds", IPALoadEmbeds, "Load Image Prompt Embeds (IPAdapter)"),
    ("IPANoise", IPANoise, "Image Prompt Noise (IPAdapter)"),
    ("IPARegion", IPARegion, "Image Prompt Region (IPAdapter)"),
    ("IPAApplyRegions", IPAApplyRegions, "Apply IPAdapter (regions)"),
    ("IPAEncodeFace", IPAEncodeFace, "Encode Face (IPAdapter FaceID, InsightFace)"),
    ("IPAFrameWeights", IPAFrameWeights, "IPAdapter Frame Weights"),
    ("IPAFrameWeightsFromStrategy", IPAFrameWeightsFromStrategy, "IPAdapter Frame Weights From Strategy"),
    ("IPACombineFrameWeights", IPACombineFrameWeights, "IPAdapter Combine Frame Weights"),
    ("IPAPromptSchedule", IPAPromptSchedule, "IPAdapter Prompt Schedule"),
    ("IPALoadSigLIPVision", IPALoadSigLIPVision, "Load SigLIP Vision, pooled (IPAdapter, InstantX Flux)"),
)
OWN_IDS = tuple(node_id for node_id, _, _ in _NODES)  # this pack's own ids (the drop-in ids are the other pack's)
NODE_CLASS_MAPPINGS = {node_id: cls for node_id, cls, _ in _NODES}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: name for node_id, _, name in _NODES}

# The widely used pack's ids (nodes/dropin/): only where that pack is not installed, and not when opted out.
_DROPIN_CLASSES, _DROPIN_NAMES = dropin.registrations()
NODE_CLASS_MAPPINGS.update(_DROPIN_CLASSES)
NODE_DISPLAY_NAME_MAPPINGS.update(_DROPIN_NAMES)

try:  # inside ComfyUI: make models/ipadapter a model folder as soon as the pack loads, and give the examples their images
    host.register_model_folder()
    host.provide_example_inputs()
except ImportError:  # no host (tests, tools): registration happens on first use
    pass
