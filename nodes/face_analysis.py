"""Face analysis behind one small interface: image -> (512-d face embedding, aligned face crop).

InsightFace and onnxruntime are optional dependencies, imported only when a FaceID face is encoded. The models
live in ComfyUI's models/insightface/models/<name>/ (buffalo_l or antelopev2, the layout InsightFace's
FaceAnalysis and ComfyUI_IPAdapter_plus use). Nothing is ever downloaded: a missing or incomplete folder is an
error that says what to put where.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np

from ..ip_core.errors import IPAdapterError, check_choice
from . import host

PROVIDERS = ("CPU", "CUDA", "ROCM", "DirectML", "OpenVINO", "CoreML")
# The detection and recognition models each pack needs (the other .onnx files, landmarks / gender-age, are unused).
MODEL_FILES = {
    "buffalo_l": ("det_10g.onnx", "w600k_r50.onnx"),
    "antelopev2": ("scrfd_10g_bnkps.onnx", "glintr100.onnx"),
}
# The official FaceID code detects at 640; smaller sizes find faces that fill most of the image.
DETECTION_SIZES = tuple(range(640, 256, -64))  # 640, 576, ..., 320
CROP_SIZE = 224  # official FaceID-Plus: face_align.norm_crop(image, landmark=face.kps, image_size=224); Kolors: 336
PIP_PACKAGES = "pip install insightface onnxruntime   (onnxruntime-gpu for CUDA)"


class FaceAnalysisError(IPAdapterError):
    """InsightFace missing, its model folder incomplete, or no face in an image."""


@dataclass
class Face:
    embedding: np.ndarray  # [512] float32, raw (not normalised: ip_core normalises for the adapters that want it)
    crop: np.ndarray  # [S, S, 3] uint8 RGB (S = crop_size, 224 unless asked), aligned on the 5 landmarks (ArcFace template)
    faces_found: int  # how many faces the image had (the largest one is used)
    detection_size: int  # the detector input size that found it


class FaceAnalyzer(Protocol):
    name: str

    def embed(self, image: np.ndarray, crop_size: int = CROP_SIZE) -> Optional[Face]:
        """image: [H, W, 3] uint8 RGB. The largest face, or None when no size in DETECTION_SIZES finds one."""


def _largest(faces):
    return max(faces, key=lambda f: float((f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1])))


class InsightFaceAnalyzer:
    """InsightFace's FaceAnalysis (detection + ArcFace recognition) with the official FaceID alignment."""

    def __init__(self, root: str, provider: str = "CPU", model_name: str = "buffalo_l"):
        self.name = f"InsightFace {model_name} ({provider})"
        try:
            import onnxruntime  # noqa: F401  (InsightFace runs its models with it)
            from insightface.app import FaceAnalysis
            from insightface.utils import face_align
        except ImportError as e:
            raise FaceAnalysisError(
                f"FaceID needs InsightFace and onnxruntime, which are not installed ({e}). Install them into the "
                f"Python that runs ComfyUI: {PIP_PACKAGES}; the face models go in {models_dir(root, model_name)}."
            ) from None
        check_model_folder(root, model_name)
        self._align = face_align
        self._app = FaceAnalysis(name=model_name, root=root, providers=[f"{provider}ExecutionProvider"],
                                 allowed_modules=["detection", "recognition"])
        self._app.prepare(ctx_id=0, det_size=(DETECTION_SIZES[0],) * 2)

    def embed(self, image: np.ndarray, crop_size: int = CROP_SIZE) -> Optional[Face]:
        bgr = np.ascontiguousarray(image[:, :, ::-1])  # InsightFace's models read OpenCV (BGR) images
        for size in DETECTION_SIZES:
            self._app.det_model.input_size = (size, size)
            faces = self._app.get(bgr)
            if faces:
                face = _largest(faces)
                # Alignment is a warp, the same for any channel order: crop the RGB image for CLIP.
                crop = self._align.norm_crop(image, landmark=face.kps, image_size=crop_size)
                return Face(np.asarray(face.embedding, dtype=np.float32), crop, len(faces), size)
        return None


def models_dir(root: str, model_name: str) -> str:
    return os.path.join(root, "models", model_name)


def check_model_folder(root: str, model_name: str) -> None:
    """Refuse before InsightFace would try to download, naming the missing files and where they go."""
    check_choice(model_name, "InsightFace model", MODEL_FILES, FaceAnalysisError)
    folder = models_dir(root, model_name)
    need = MODEL_FILES[model_name]
    have = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    missing = [f for f in need if f not in have]
    if not missing:
        return
    nested = os.path.join(folder, model_name)
    hint = (f" The files are in {nested}: move them up one folder (the {model_name} zip nests its folder)."
            if os.path.isdir(nested) else "")
    raise FaceAnalysisError(
        f"the InsightFace model folder {folder} is {'incomplete' if have else 'missing'}: it needs "
        f"{', '.join(need)} (missing: {', '.join(missing)}).{hint} Download the {model_name} pack from InsightFace's "
        f"releases and unzip it so that {os.path.join(folder, need[0])} exists."
    )


@functools.lru_cache(maxsize=2)
def _cached(root: str, provider: str, model_name: str) -> InsightFaceAnalyzer:
    return InsightFaceAnalyzer(root, provider, model_name)


def load_face_analyzer(provider: str, model_name: str) -> FaceAnalyzer:
    """The analyzer the Encode Face node uses (tests and demos swap this function for a stand-in)."""
    check_choice(provider, "execution provider", PROVIDERS, FaceAnalysisError)
    return _cached(host.insightface_root(), provider, model_name)
