"""FaceID: Encode Face (InsightFace) -> IPA_EMBEDS. What Apply IPAdapter does for FaceID adapters (the PlusV2
shortcut scale, the file's own LoRA on the UNet's weights) is nodes/families/faceid.py's."""
from __future__ import annotations

import numpy as np
import torch

from . import face_analysis, host
from ..ip_core.config import KOLORS_ENCODER
from ..ip_core.embeds import COMBINE_MODES
from ..ip_core.encoder_table import encoder_file_for
from ..ip_core.errors import AdapterMismatchError, IPAdapterError, check_choice
from ..ip_core.families.faceid import build_face_prompt
from ..ip_core.families.kolors import check_face_clip_tokens, face_crop_size
from ..ip_core.preprocess import preprocess_images
from .common import CATEGORY, LoadedAdapter, check_images, error_boundary, require

PLUS_VERSIONS = ("v2 (shortcut)", "v1")


def _to_uint8(image: torch.Tensor, legacy: bool = False) -> np.ndarray:
    """The 8-bit picture InsightFace sees: rounded; legacy: truncated, as the widely used pack converts it."""
    if legacy:
        return image.detach().float().cpu().mul(255).clamp(0, 255).to(torch.uint8).numpy()
    return (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()


class IPAEncodeFace:
    DESCRIPTION = (
        "Turns face photos into image prompt tokens for a FaceID adapter: InsightFace finds the largest face in each "
        "image (retrying smaller detection sizes), takes its 512-d identity embedding and, for FaceID Plus, an "
        "aligned 224 px crop (Kolors: 336 px) for the CLIP vision model. Unconditional tokens follow the official code (zero face "
        "embedding, zero image for CLIP; Kolors: a black image, as the widely used pack). Needs `pip install insightface onnxruntime` and the models in "
        "models/insightface/models/buffalo_l (or antelopev2)."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IPA_EMBEDS", "IMAGE")
    RETURN_NAMES = ("embeds", "faces")
    OUTPUT_TOOLTIPS = ("Face prompt tokens (cond and uncond) for the FaceID adapter they were made with.",
                       "The aligned face crops (224 px; Kolors FaceID: 336 px), one per image.")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ipadapter": ("IPA_ADAPTER", {"tooltip": "A FaceID adapter from Load IPAdapter."}),
                "image": ("IMAGE", {"tooltip": "One or more photos, each with a face (the largest face is used)."}),
                "provider": (list(face_analysis.PROVIDERS), {"default": "CPU", "tooltip": "onnxruntime execution provider for InsightFace."}),
            },
            "optional": {
                "clip_vision": ("CLIP_VISION", {"tooltip": "FaceID Plus / PlusV2 only: the CLIP vision model (ViT-H/14; Kolors FaceID: ViT-L/14-336)."}),
                "insightface_model": (list(face_analysis.MODEL_FILES), {"default": "buffalo_l", "tooltip": "Face model pack in models/insightface/models/."}),
                "combine": (list(COMBINE_MODES), {"default": "concat", "tooltip": "Several faces: concat = all faces' tokens side by side (official portrait); average / norm average = one blended face; batch = face i for batch item i."}),
                "plus_version": (list(PLUS_VERSIONS), {"default": PLUS_VERSIONS[0], "tooltip": "FaceID Plus files only: PlusV2 files use the shortcut (x + weight_faceidv2 * r), Plus v1 files do not. The two share one file layout, so say which you loaded. Kolors FaceID-Plus always uses the shortcut (its only recipe)."}),
                "legacy": ("BOOLEAN", {"default": False, "tooltip": "Reproduce ComfyUI_IPAdapter_plus: the image truncated to 8 bits for InsightFace, SDXL faces cropped at 256 px, the host's clip_preprocess for the crops and a black image (instead of the official zero normalised image) as FaceID Plus's unconditional input. Set by the workflow converter (python -m nodes.migrate --legacy)."}),
            },
        }

    @error_boundary
    def encode(self, ipadapter, image, provider, clip_vision=None, insightface_model="buffalo_l", combine="concat",
               plus_version=PLUS_VERSIONS[0], legacy=False):
        a = require(ipadapter, "IPA_ADAPTER", "ipadapter", LoadedAdapter)
        config = a.config
        if not config.is_faceid:
            raise AdapterMismatchError(
                f"Encode Face needs a FaceID adapter, but {a.name} is a {config.description}. Use Encode Image Prompt "
                "with this adapter, or load a FaceID file (ip-adapter-faceid*)."
            )
        check_images(image, "image")
        check_choice(combine, "combine mode", COMBINE_MODES)
        check_choice(plus_version, "plus_version", PLUS_VERSIONS)
        if config.clip_width and clip_vision is None:
            raise AdapterMismatchError(
                f"{a.name} is a {config.description}: connect a Load CLIP Vision node ({_clip_file(config)}) to clip_vision."
            )
        analyzer = face_analysis.load_face_analyzer(provider, insightface_model)
        progress = host.progress_bar(image.shape[0])
        embeddings, crops, notes = [], [], []
        crop_size = face_crop_size(config, legacy=bool(legacy))
        for i in range(image.shape[0]):
            host.check_interrupt()
            face = analyzer.embed(_to_uint8(image[i, :, :, :3], legacy=bool(legacy)), crop_size=crop_size)
            if face is None:
                raise face_analysis.FaceAnalysisError(
                    f"no face found in image {i} (of {image.shape[0]}) by {analyzer.name}, at detection sizes "
                    f"{face_analysis.DETECTION_SIZES[0]} down to {face_analysis.DETECTION_SIZES[-1]}. Use a photo "
                    "where the face is clearly visible, or crop it closer."
                )
            if face.faces_found > 1:
                notes.append(f"image {i}: {face.faces_found} faces, used the largest")
            embeddings.append(torch.from_numpy(np.asarray(face.embedding, dtype=np.float32)))
            crops.append(torch.from_numpy(np.asarray(face.crop)).float() / 255.0)
            progress.update(1)
        embeddings, crops = torch.stack(embeddings), torch.stack(crops)
        clip_hidden = uncond_hidden = None
        if config.clip_width:
            clip_hidden, uncond_hidden = _clip_hidden_states(a, clip_vision, crops, legacy=bool(legacy))
        embeds = build_face_prompt(a.adapter, embeddings, clip_hidden, uncond_hidden, combine=combine,
                                   shortcut=plus_version == PLUS_VERSIONS[0] or config.kolors, encoder_name=analyzer.name)
        text = f"{image.shape[0]} face(s) encoded for {a.name} with {analyzer.name}" + (f"; {'; '.join(notes)}" if notes else "")
        return {"ui": {"text": [text]}, "result": (embeds, crops)}


def _clip_file(config) -> str:
    """The CLIP vision model a FaceID-Plus adapter's CLIP part needs: name, file."""
    name = KOLORS_ENCODER if config.kolors else "ViT-H/14"
    return f"{name}, {encoder_file_for(name)}"


def _clip_hidden_states(a: LoadedAdapter, clip_vision, crops, legacy: bool = False):
    """CLIP penultimate hidden states of the aligned crops and of "no face": an all-zero normalised image (official
    SD FaceID uncond); for Kolors, and for all in legacy mode, a black image, as the widely used pack (the official
    Kolors pipeline zeroes the CLIP states instead). Legacy: the host's clip_preprocess, as the pack encodes."""
    if not host.can_encode_pixels(clip_vision):
        raise IPAdapterError(f"clip_vision is a {type(clip_vision).__name__}, not ComfyUI's CLIP vision model; connect a Load CLIP Vision node.")
    size = int(getattr(clip_vision, "image_size", 224))

    def pixels(images):
        return host.clip_preprocess(images, size) if legacy else preprocess_images(images, mode="center", size=size)

    cond = host.encode_pixels(clip_vision, pixels(crops)).penultimate_hidden_states
    width = cond.shape[-1]
    if width != a.config.clip_width:
        raise AdapterMismatchError(
            f"adapter/encoder mismatch: {a.name} ({a.config.description}) gets CLIP hidden states of width {width} from "
            f"the connected CLIP vision model; load {_clip_file(a.config)} as the CLIP vision model."
        )
    check_face_clip_tokens(a.config, cond, "the connected CLIP vision model")
    if a.config.kolors or legacy:
        no_face = pixels(torch.zeros(1, size, size, 3))
    else:
        no_face = torch.zeros(1, 3, size, size)
    uncond = host.encode_pixels(clip_vision, no_face).penultimate_hidden_states
    return cond, uncond
