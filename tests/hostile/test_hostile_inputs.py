"""Hostile images, masks and node failures: a result or one clear error, bounded memory, one error boundary per node."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from hostile_support import HOSTILE, ROOT, assert_clear, outcome
from ip_core.adapter import IPAdapter
from ip_core.config import make_config
from ip_core.errors import IPAdapterError
from ip_core.layers import layer_specs
from ip_core.preprocess import CLIP_MEAN, CLIP_STD, MAX_IMAGE_SIDE, preprocess_images

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "nodes"))
import comfy_standin  # noqa: E402
from nodes import registry  # noqa: E402
from nodes.common import LoadedAdapter, error_boundary  # noqa: E402
from nodes.nodes_apply import IPAApplyAdapter, _check_mask  # noqa: E402
from nodes.nodes_encode import IPAEncodeImagePrompt  # noqa: E402


@pytest.fixture
def host(monkeypatch, tmp_path):
    (tmp_path / "models" / "ipadapter").mkdir(parents=True)
    return comfy_standin.install(monkeypatch, str(tmp_path / "models"))


@pytest.fixture(scope="module")
def sd15_base():
    torch.manual_seed(0)
    return LoadedAdapter(IPAdapter.from_config(make_config("base", layer_specs("sd15"), 768, 1024)).eval(), "base.safetensors")


# ------------------------------------------------------------------ images


def _pil_center(img_u8: np.ndarray, size=224) -> torch.Tensor:
    """CLIPImageProcessor's recipe with PIL itself: shortest side to size (bicubic), centre crop, normalise."""
    h, w = img_u8.shape[:2]
    th, tw = (int(size * h / w), size) if w <= h else (size, int(size * w / h))
    resized = np.asarray(Image.fromarray(img_u8).resize((tw, th), Image.BICUBIC), dtype=np.float64)
    top, left = (th - size) // 2, (tw - size) // 2
    x = torch.from_numpy(resized[top:top + size, left:left + size]).permute(2, 0, 1)[None]
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x * (1.0 / 255.0)).to(torch.float32) - mean) / std


@HOSTILE
@given(h=st.integers(1, 90), w=st.integers(1, 90), seed=st.integers(0, 2**16))
def test_center_is_bit_identical_to_pil_for_any_small_size(h, w, seed):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ours = preprocess_images(torch.from_numpy(img)[None], "center")
    assert torch.equal(ours, _pil_center(img))


@pytest.mark.parametrize("h, w", [(1, 300), (300, 1), (12, 400), (400, 12), (3, 700)])
def test_thin_references_match_pil_too(h, w):
    img = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert torch.equal(preprocess_images(torch.from_numpy(img)[None], "center"), _pil_center(img))


_dtypes = st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8, torch.int32,
                           torch.bool, torch.complex64])


@HOSTILE
@given(
    shape=st.lists(st.integers(0, 40), min_size=1, max_size=5),
    dtype=_dtypes,
    fill=st.sampled_from([0.5, 0.0, 1.0, -3.0, 300.0, float("nan"), float("inf")]),
    mode=st.sampled_from(["center", "pad", "squash", "tiles", ""]),
    size=st.sampled_from([224, 1, 0, -5, 4096, 2.5, True]),
)
def test_generated_images(shape, dtype, fill, mode, size):
    img = torch.full(shape, fill) if (dtype.is_floating_point or dtype.is_complex) else torch.full(shape, 1)
    r = outcome(preprocess_images, img.to(dtype), mode, size)
    if isinstance(r, torch.Tensor):
        assert r.shape[-2:] == (size, size) and r.dtype == torch.float32 and torch.isfinite(r).all()


def test_over_the_maximum_side_is_refused_with_the_limit():
    img = torch.zeros(1, 1, MAX_IMAGE_SIDE + 1, 3).expand(1, 2, MAX_IMAGE_SIDE + 1, 3)
    with pytest.raises(IPAdapterError, match=f"largest side accepted is {MAX_IMAGE_SIDE} pixels.*Downscale"):
        preprocess_images(img)


_IMAGE_MEMORY = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
import torch
from ip_core.preprocess import preprocess_images
cases = json.loads(sys.argv[2])
images = [torch.rand(1, h, w, 3) for h, w, _ in cases]  # the inputs themselves are not counted
preprocess_images(torch.rand(1, 8, 8, 3))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for img, (_, _, mode) in zip(images, cases):
    assert preprocess_images(img, mode).shape == (1, 3, 224, 224)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
"""


def test_thin_and_long_references_use_bounded_memory():
    """Before: 1x2000 asked for ~7 GB of resize coefficients (a 448000-row intermediate); now a few MB."""
    cases = [(1, 2000, "center"), (2000, 1, "center"), (12, 4000, "center"), (4000, 12, "pad"), (1, 16384, "squash"),
             (16384, 2, "center"), (3, 16384, "pad")]
    res = subprocess.run([sys.executable, "-c", _IMAGE_MEMORY, str(ROOT), json.dumps(cases)], capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-2000:]
    extra = int(res.stdout.split()[-1])
    assert extra < 96 * 1024**2, f"{extra / 1024**2:.0f} MB"


@pytest.mark.parametrize("h, w", [(1, 2000), (12, 4000)])
def test_encode_node_takes_thin_references(host, sd15_base, h, w):
    (embeds,) = IPAEncodeImagePrompt().encode(sd15_base, comfy_standin.ClipVisionModel(1280, 1024), torch.rand(1, h, w, 3))
    assert torch.isfinite(embeds.cond).all()


# ------------------------------------------------------------------ masks


@pytest.mark.parametrize("mask", [
    torch.full((8, 8), 255, dtype=torch.uint8), torch.full((1, 8, 8), 1000.0), torch.full((8, 8), -50.0),
    torch.tensor([[0.0, 1.5]]), torch.full((2, 4, 4), 1, dtype=torch.complex64),
])
def test_out_of_range_masks_are_refused_with_the_valid_range(host, sd15_base, mask):
    from ip_core.embeds import build_image_prompt

    embeds = build_image_prompt(sd15_base.adapter, torch.randn(1, 1024), torch.zeros(1, 1024))
    with pytest.raises(IPAdapterError, match="between 0 and 1|a MASK holds float values from 0 to 1") as e:
        IPAApplyAdapter().apply(comfy_standin.make_model("sd15"), sd15_base, embeds, 1.0, 0.0, 1.0, attn_mask=mask)
    assert_clear(e.value)
    if mask.dtype == torch.uint8:
        assert "divide it by 255" in str(e.value)


@HOSTILE
@given(
    shape=st.lists(st.integers(0, 6), min_size=0, max_size=4),
    dtype=_dtypes,
    values=st.lists(st.sampled_from([0.0, 1.0, 0.5, 1.0005, -0.0005, 1.01, -0.01, 255.0, float("nan"), float("inf")]),
                    min_size=1, max_size=3),
)
def test_generated_masks(shape, dtype, values):
    numel = int(np.prod(shape)) if shape else 1
    mask = torch.tensor((values * numel)[:numel]).reshape(shape)
    mask = mask.to(dtype) if not (dtype == torch.uint8 or dtype == torch.int32) else mask.nan_to_num(0, 0, 0).clamp(0, 300).to(dtype)
    r = outcome(_check_mask, mask)
    if isinstance(r, torch.Tensor):
        assert r.dtype == torch.float32 and r.ndim == 3 and r.min() >= 0 and r.max() <= 1
        assert float(mask.float().max()) <= 1.001 and float(mask.float().min()) >= -0.001  # clipped, only within the tolerance


# ------------------------------------------------------------------ one error boundary per node


def test_every_node_function_has_the_error_boundary():
    for node_id, cls in registry.NODE_CLASS_MAPPINGS.items():
        fn = getattr(cls, cls.FUNCTION)
        assert getattr(fn, "__wrapped__", None) is not None and fn.__code__ is error_boundary(lambda self: 0).__code__, node_id


def test_boundary_passes_expected_errors_and_wraps_bugs(host, tmp_path, monkeypatch):
    monkeypatch.setenv("IPADAPTER_LOG_DIR", str(tmp_path))

    class Node:
        @error_boundary
        def run(self, what):
            raise what

    expected = IPAdapterError("weight is nan; give a finite number")
    with pytest.raises(IPAdapterError) as e:
        Node().run(expected)
    assert e.value is expected  # unchanged: ComfyUI shows it as it is
    with pytest.raises(comfy_standin.InterruptProcessingException):  # Cancel reaches the host
        Node().run(comfy_standin.InterruptProcessingException())
    with pytest.raises(IPAdapterError, match=r"node Node: unexpected internal error \(KeyError: 'x'\).*ipadapter-errors.log") as e:
        Node().run(KeyError("x"))
    assert isinstance(e.value.__cause__, KeyError)
    assert "KeyError" in (tmp_path / "ipadapter-errors.log").read_text()


def test_a_bug_inside_a_real_node_names_the_node(host, sd15_base, tmp_path, monkeypatch):
    monkeypatch.setenv("IPADAPTER_LOG_DIR", str(tmp_path))
    import nodes.nodes_encode as enc

    monkeypatch.setattr(enc, "build_image_prompt", lambda *a, **k: {}["boom"])
    with pytest.raises(IPAdapterError, match="node IPAEncodeImagePrompt: unexpected internal error") as e:
        IPAEncodeImagePrompt().encode(sd15_base, comfy_standin.ClipVisionModel(1280, 1024), torch.rand(1, 32, 32, 3))
    assert str(tmp_path) in str(e.value)
