"""A stand-in for InsightFace behind nodes.face_analysis's FaceAnalyzer interface (tests and the example
workflow in hosts without InsightFace). Deterministic: the embedding is a fixed random projection of the
image's 8x8 thumbnail, so different photos give different identities; an all-black image has no face."""
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
        x = torch.from_numpy(image).float().permute(2, 0, 1)[None] / 255.0
        thumb = F.interpolate(x, size=(8, 8), mode="area").reshape(1, -1)
        embedding = (thumb - 0.5) @ self.projection  # raw: norm around 20 like ArcFace's
        crop = F.interpolate(x, size=(crop_size, crop_size), mode="bilinear", align_corners=False)[0]
        crop = (crop.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        return Face(embedding[0].numpy().astype(np.float32), crop, self.faces_per_image, 640)
