"""Fixtures for the node tests: the ComfyUI stand-in (comfy_standin.py) and tiny/full-layout adapters."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # importlib mode: make comfy_standin importable

import comfy_standin  # noqa: E402
from ip_core.adapter import IPAdapter, save_adapter  # noqa: E402
from ip_core.config import make_config  # noqa: E402
from ip_core.layers import layer_specs  # noqa: E402


def random_adapter(variant="base", base="sd15", encoder_width=None, seed=0):
    """A released-layout adapter with random weights (SD1.5: full size, 22M parameters for base)."""
    ctx = 768 if base == "sd15" else 2048
    width = encoder_width or (1024 if variant == "base" else 1280)
    torch.manual_seed(seed)
    return IPAdapter.from_config(make_config(variant, layer_specs(base), ctx, width)).eval()


def sdxl_adapter(seed=0, config=None, proj_scale=0.02, kv_scale=0.02):
    """An SDXL adapter (base unless `config` says otherwise) whose 140 K'/V' matrices are stride-0 views of one
    column each: the real layout and layer table (70 layers) without allocating 1.3 GB of random weights."""
    cfg = config or make_config("base", layer_specs("sdxl"), 2048, 1280)
    with torch.device("meta"):
        a = IPAdapter.from_config(cfg)
    g = torch.Generator().manual_seed(seed)
    a.image_proj.to_empty(device="cpu")
    for p in a.image_proj.parameters():
        p.data = torch.randn(p.shape, generator=g) * proj_scale
    for layer in a.ip_layers.values():
        for lin in (layer.to_k_ip, layer.to_v_ip):
            col = torch.randn(lin.out_features, 1, generator=g) * kv_scale
            lin.weight = torch.nn.Parameter(col.expand(lin.out_features, lin.in_features), requires_grad=False)
    return a.eval()


# The adapters and the ViT-H-wide stand-in encoder the node tests share (read-only, made once).
@pytest.fixture(scope="session")
def base():
    from nodes.common import LoadedAdapter

    return LoadedAdapter(random_adapter("base", seed=1), "base.safetensors")


@pytest.fixture(scope="session")
def plus():
    from nodes.common import LoadedAdapter

    return LoadedAdapter(random_adapter("plus", seed=2), "plus.safetensors")


@pytest.fixture(scope="session")
def vit_h():
    return comfy_standin.ClipVisionModel(1280, 1024)


@pytest.fixture(scope="session")
def adapter_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("adapters")
    files = {
        "base": save_adapter(random_adapter("base", seed=1), d / "my renamed adapter.safetensors"),
        "plus": save_adapter(random_adapter("plus", seed=2), d / "plus.bin", format="bin"),
    }
    return files


@pytest.fixture
def host(monkeypatch, tmp_path):
    models = tmp_path / "models"
    (models / "ipadapter").mkdir(parents=True)
    return comfy_standin.install(monkeypatch, str(models))



@pytest.fixture
def reference_pack(host, monkeypatch):
    """The widely used pack's IPAdapterPlus module (ComfyUI_IPAdapter_plus, from its archive in the shared hosts
    folder, as the integration tests extract it), imported into the stand-in host: what its nodes return is the
    reference ours must equal. Only its host-free nodes can run here; the stand-in gives the few host names its
    module imports (never called by those nodes)."""
    import importlib.util
    import types

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
    try:
        from comfy_host import reference_pack_dir
    finally:
        sys.path.pop(0)
    folder = reference_pack_dir()

    def unused(*args, **kwargs):
        raise AssertionError("the reference pack called a host function this stand-in does not provide")

    for name, attrs in (("node_helpers", ("conditioning_set_values",)),
                        ("comfy.clip_vision", ("load", "clip_preprocess", "Output")), ("comfy.sd", ("load_lora_for_models",))):
        module = types.ModuleType(name)
        for attr in attrs:
            setattr(module, attr, unused)
        monkeypatch.setitem(sys.modules, name, module)
    package = types.ModuleType("ipa_reference_pack")
    package.__path__ = [str(folder)]
    monkeypatch.setitem(sys.modules, package.__name__, package)
    spec = importlib.util.spec_from_file_location("ipa_reference_pack.IPAdapterPlus", folder / "IPAdapterPlus.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    try:
        spec.loader.exec_module(module)
        yield module
    finally:  # its submodules too (they hold the stand-in's host modules)
        for name in [m for m in sys.modules if m.startswith("ipa_reference_pack.")]:
            del sys.modules[name]
