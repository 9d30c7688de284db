"""A stand-in for InsightFace (tests and the example workflow in hosts without InsightFace). Deterministic: the
embedding is a fixed random projection of the image's 8x8 thumbnail, so different photos give different
identities; an all-black image has no face.

Two ways in: StandinFaceAnalyzer behind nodes.face_analysis's FaceAnalyzer interface (put in place of
load_face_analyzer), or install_insightface(): an `insightface` package (app.FaceAnalysis, utils.face_align) and an
`onnxruntime` module in sys.modules, so that both this project's InsightFaceAnalyzer and ComfyUI_IPAdapter_plus run
their own InsightFace code paths on it (BGR images in, the pack's detection-size loop, norm_crop at the size asked).
"""
import os
import sys
import types
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

CROP_SIZE = 224  # nodes.face_analysis.CROP_SIZE (not imported: inside ComfyUI `nodes` is the host's module)


@dataclass
class Face:  # the fields of nodes.face_analysis.Face
    embedding: np.ndarray
    crop: np.ndarray
    faces_found: int
    detection_size: int


def crop_of(image: np.ndarray, size: int) -> np.ndarray:
    """The 'aligned' face crop: the whole uint8 image resized to size x size, channel by channel (so the same
    crop whatever the channel order, like a warp)."""
    x = torch.from_numpy(np.ascontiguousarray(image)).float().permute(2, 0, 1)[None] / 255.0
    crop = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[0]
    return (crop.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


class StandinFaceAnalyzer:
    def __init__(self, faces_per_image: int = 1, seed: int = 0):
        self.name = "stand-in face analyzer"
        self.faces_per_image = faces_per_image
        g = torch.Generator().manual_seed(seed)
        self.projection = torch.randn(8 * 8 * 3, 512, generator=g)
        self.calls = 0

    def embed(self, image: np.ndarray, crop_size: int = CROP_SIZE):
        self.calls += 1
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        if image.max() == 0:
            return None
        x = torch.from_numpy(np.ascontiguousarray(image)).float().permute(2, 0, 1)[None] / 255.0
        thumb = F.interpolate(x, size=(8, 8), mode="area").reshape(1, -1)
        embedding = (thumb - 0.5) @ self.projection  # raw: norm around 20 like ArcFace's
        return Face(embedding[0].numpy().astype(np.float32), crop_of(image, crop_size), self.faces_per_image, 640)


class StandinInsightFace:
    """The state behind the installed `insightface` stand-in: the analyzer, what was asked of it."""

    def __init__(self, analyzer=None, fixed_rgb=None):
        self.analyzer = analyzer or StandinFaceAnalyzer()
        self.fixed_rgb = fixed_rgb  # analyse this RGB image whatever image is passed (a caller's exact pixels)
        self.crop_sizes, self.detection_sizes, self.apps = [], [], []

    def app(self):
        """A FaceAnalysis-like object: det_model.input_size, get(BGR image) -> faces (largest first)."""
        owner = self

        class App:
            det_model = types.SimpleNamespace(input_size=(640, 640))

            def prepare(self, ctx_id=0, det_size=(640, 640), **_):
                self.det_model.input_size = tuple(det_size)

            def get(self, bgr, max_num=0):
                owner.detection_sizes.append(tuple(self.det_model.input_size))
                rgb = owner.fixed_rgb if owner.fixed_rgb is not None else np.ascontiguousarray(bgr[..., ::-1])
                face = owner.analyzer.embed(rgb)
                if face is None:
                    return []
                e = face.embedding.astype(np.float32)
                h, w = rgb.shape[:2]
                return [types.SimpleNamespace(embedding=e, normed_embedding=e / np.linalg.norm(e),
                                              bbox=np.array([0.0, 0.0, w, h]), kps=np.zeros((5, 2)))
                        for _ in range(face.faces_found)]

        app = App()
        app.det_model = types.SimpleNamespace(input_size=(640, 640))  # per instance, as InsightFace's
        self.apps.append(app)
        return app

    def norm_crop(self, img, landmark=None, image_size=112, mode="arcface"):
        self.crop_sizes.append(image_size)
        if self.fixed_rgb is not None:  # the caller's pixels, in the BGR order the pack converts back from
            return np.ascontiguousarray(crop_of(self.fixed_rgb, image_size)[..., ::-1])
        return crop_of(img, image_size)


MODULES = ("insightface", "insightface.app", "insightface.utils", "insightface.utils.face_align", "onnxruntime")


def install_insightface(analyzer=None, fixed_rgb=None) -> StandinInsightFace:
    """Put the stand-in `insightface` and `onnxruntime` modules in sys.modules (uninstall_insightface() removes them).
    FaceAnalysis(name, root) needs root/models/<name> to exist, as InsightFace would otherwise download it."""
    state = StandinInsightFace(analyzer, fixed_rgb)

    def face_analysis(name="buffalo_l", root="~/.insightface", providers=None, allowed_modules=None, **_):
        folder = os.path.join(os.path.expanduser(root), "models", name)
        if not os.path.isdir(folder):
            raise RuntimeError(f"stand-in InsightFace: no model folder {folder} (the real one would download it)")
        return state.app()

    pkg, app, utils, align = (types.ModuleType(n) for n in MODULES[:4])
    app.FaceAnalysis = face_analysis
    align.norm_crop = state.norm_crop
    pkg.app, pkg.utils, utils.face_align = app, utils, align
    onnxruntime = types.ModuleType("onnxruntime")
    sys.modules.update(dict(zip(MODULES, (pkg, app, utils, align, onnxruntime))))
    return state


def uninstall_insightface() -> None:
    for name in MODULES:
        sys.modules.pop(name, None)
