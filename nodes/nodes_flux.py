"""Load SigLIP Vision (IPAdapter): ComfyUI's SigLIP vision model plus its attention-pooling head, for InstantX's
Flux IP-Adapter, which projects SigLIP's pooled embedding (ComfyUI's own model stops before the head)."""
from __future__ import annotations

from . import host
from ..ip_core.errors import AdapterFileError, IPAdapterError
from ..ip_core.siglip import read_pooling_head
from .common import CATEGORY, error_boundary


class IPALoadSigLIPVision:
    DESCRIPTION = (
        "Loads a SigLIP vision model from models/clip_vision (e.g. google/siglip-so400m-patch14-384's "
        "model.safetensors) with ComfyUI's CLIP vision loader, and adds SigLIP's attention-pooling head from the same "
        "file, so Encode Image Prompt gets the pooled embedding InstantX's Flux IP-Adapter was trained on."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("CLIP_VISION",)
    RETURN_NAMES = ("clip_vision",)
    OUTPUT_TOOLTIPS = ("ComfyUI's CLIP vision model whose image_embeds are SigLIP's pooled output.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        try:
            files = host.model_files(host.CLIP_VISION_FOLDER)[0]
        except Exception:  # listing must never break the node menu
            files = []
        return {"required": {"clip_name": (files, {"tooltip": "A SigLIP weights file that includes the pooling head (vision_model.head.*)."})}}

    @error_boundary
    def load(self, clip_name):
        path = host.model_path(host.CLIP_VISION_FOLDER, clip_name)
        if path is None:
            raise AdapterFileError(f"'{clip_name}' was not found in models/clip_vision; put the SigLIP file there and refresh (press R).")
        head = read_pooling_head(path)
        if head is None:
            raise AdapterFileError(
                f"{clip_name} has no SigLIP attention-pooling head (vision_model.head.* weights): ComfyUI's repackaged "
                "SigLIP files leave it out. Use google/siglip-so400m-patch14-384's model.safetensors.")
        clip_vision = host.load_clip_vision(path)
        if clip_vision is None:
            raise IPAdapterError(f"ComfyUI does not recognise {clip_name} as a CLIP vision model; use the SigLIP so400m-patch14-384 file.")
        setattr(clip_vision, host.POOLING_HEAD, head)
        return (clip_vision,)
