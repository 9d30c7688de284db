"""The widely used pack (ComfyUI_IPAdapter_plus, from ../shared/hosts) loaded into the stand-in host, to compare our
results with its own nodes in a unit test. Its code is only loaded, never copied (as tests/integration loads it
into the real host: comfy_host.reference_pack_dir finds and extracts it).

Besides what comfy_standin stands in for, the pack imports a few more host names at load time; they are stood in
here: comfy.clip_vision (clip_preprocess, which the pack and our legacy mode both call, and its Output record),
model_management's device and dtype questions, and the loaders it only calls from nodes not compared here (they
raise if called).
"""
from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch

from integration.comfy_host import reference_pack_dir

PACKAGE = "ipa_reference_pack"  # its module name here: never the name of anything in this repo


class Output:
    """comfy/clip_vision.py Output: an encoder result whose fields are set and read by name or by key."""

    def __getitem__(self, key):
        return getattr(self, key)

    def __setitem__(self, key, item):
        setattr(self, key, item)


def _not_stood_in(what):
    def call(*args, **kwargs):
        raise NotImplementedError(f"{what} is not stood in (pack_standin.py)")

    return call


def load(monkeypatch, host, clip_preprocess):
    """The pack's NODE_CLASS_MAPPINGS, loaded into the stand-in `host` (comfy_standin.install) for one test;
    clip_preprocess(images, size, crop=True) is the host preprocessing both packs see."""
    clip_vision = types.ModuleType("comfy.clip_vision")
    clip_vision.clip_preprocess, clip_vision.Output = clip_preprocess, Output
    clip_vision.load = _not_stood_in("comfy.clip_vision.load")
    sd = types.ModuleType("comfy.sd")
    sd.load_lora_for_models = _not_stood_in("comfy.sd.load_lora_for_models")
    helpers = types.ModuleType("node_helpers")
    helpers.conditioning_set_values = _not_stood_in("node_helpers.conditioning_set_values")
    model_base = types.ModuleType("comfy.model_base")  # the pack's SDXL test: the stand-in models are SD1.5
    for name in ("SDXL", "SDXLRefiner", "SDXL_instructpix2pix"):
        setattr(model_base, name, type(name, (), {}))
    for name, module in (("comfy.clip_vision", clip_vision), ("comfy.sd", sd), ("node_helpers", helpers),
                         ("comfy.model_base", model_base)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(sys.modules["comfy"], "model_base", model_base, raising=False)
    mm = host.model_management
    for name, value in (("get_torch_device", lambda: torch.device("cpu")), ("unet_dtype", lambda: torch.float32),
                        ("should_use_fp16", lambda: False), ("load_model_gpu", lambda patcher: None)):
        monkeypatch.setattr(mm, name, value, raising=False)

    try:
        path = reference_pack_dir()
    except RuntimeError as e:  # the hosts folder is outside the repo (.ci/run sets IPA_HOSTS_DIR)
        pytest.skip(f"the widely used pack's source is needed: {e}")
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        monkeypatch.delitem(sys.modules, name)
    spec = importlib.util.spec_from_file_location(PACKAGE, path / "__init__.py", submodule_search_locations=[str(path)])
    package = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, PACKAGE, package)
    for sub in ("utils", "image_proj_models", "CrossAttentionPatch", "IPAdapterPlus"):  # dropped again after the test
        monkeypatch.setitem(sys.modules, f"{PACKAGE}.{sub}", None)
        monkeypatch.delitem(sys.modules, f"{PACKAGE}.{sub}")
    spec.loader.exec_module(package)
    return package.NODE_CLASS_MAPPINGS
