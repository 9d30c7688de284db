"""The SD3.5 adapter on the nodes (stand-in host): loading a file in InstantX's layout, encoding (the features are
kept for the per-step projection; "no image" is zero features), the family checks, and the adapter's copies on
the sampling device living for one sampling. The patching itself runs in the real host (tests/integration
test_integration_sd3.py): the stand-in has no MMDiT."""
from types import SimpleNamespace

import pytest
import torch

import comfy_standin
from comfy_standin import make_model
from ip_core.adapter import save_adapter
from ip_core.embeds import build_image_prompt
from ip_core.errors import AdapterMismatchError
from ip_core.preprocess import preprocess_images
from ip_core.families.sd3 import SD3IPAdapter, make_sd3_config
from ipa_factories import randomize
from nodes import patch_mmdit
from nodes.common import LoadedAdapter
from nodes.nodes_apply import IPAApplyAdapter
from nodes.nodes_encode import IPAEncodeImagePrompt
from nodes.nodes_load import IPALoadAdapter


@pytest.fixture(scope="module")
def sd35():
    a = randomize(SD3IPAdapter(make_sd3_config(2, 128, 1280, 8, resampler_dim=128, depth=1, heads=2, timestep_in_dim=32)))
    return LoadedAdapter(a.eval(), "ip-adapter.bin")


def test_load_node_reads_the_file_under_any_name(host, sd35):
    save_adapter(sd35.adapter, host.models_dir + "/ipadapter/sd35 large ipa.bin")
    out = IPALoadAdapter().load("sd35 large ipa.bin")
    assert out["ui"]["text"] == ["sd35 large ipa.bin: SD3.5 InstantX IP-Adapter (timestep-conditioned Resampler), 8 tokens, "
                                 "2 joint blocks, needs ViT-H/14 penultimate_hidden_states (width 1280)"]
    assert out["result"][0].adapter.fingerprint() == sd35.adapter.fingerprint()


def test_encode_keeps_the_features_and_no_image_is_zero_features(host, sd35):
    vit = comfy_standin.ClipVisionModel(1280, 1024)  # a width the small adapter reads (SD3.5's is SigLIP's 1152)
    img = torch.rand(2, 200, 260, 3, generator=torch.Generator().manual_seed(0))
    (emb,) = IPAEncodeImagePrompt().encode(sd35, vit, img, combine="batch")
    with torch.no_grad():
        hidden = vit.model(preprocess_images(img), intermediate_output=-2)[1]
    assert torch.allclose(emb.cond, hidden, atol=1e-6) and emb.cond.shape == (2, 257, 1280)
    assert torch.equal(emb.uncond, torch.zeros_like(emb.cond))  # diffusers' SD3 pipeline: zeros_like(features)
    (neg,) = IPAEncodeImagePrompt().encode(sd35, vit, img[:1], negative_image=img[1:])
    assert torch.allclose(neg.uncond, hidden[1:], atol=1e-6)


def test_sd35_adapter_on_sd_models_is_refused(host, sd35):
    feats = torch.randn(1, 257, 1280)
    embeds = build_image_prompt(sd35.adapter, feats, torch.zeros_like(feats))
    for kind, name in (("sd15", "SD1.5"), ("sdxl", "SDXL")):
        with pytest.raises(AdapterMismatchError, match=rf"an adapter for SD3\.5 but the model is {name}"):
            IPAApplyAdapter().apply(make_model(kind), sd35, embeds, 1.0, 0.0, 1.0)


def test_device_copies_live_for_one_sampling(sd35):
    """The per-step work runs in the model's device and dtype; the adapter's copy there is made once and released
    when the sampler returns (the real adapter is 1.6 GB in fp16)."""
    a = sd35.adapter
    assert patch_mmdit._adapter_on(a, torch.device("cpu"), torch.float32) is a  # already there: no copy
    copy = patch_mmdit._adapter_on(a, torch.device("cpu"), torch.float64)
    assert copy is not a and next(copy.parameters()).dtype == torch.float64
    assert patch_mmdit._adapter_on(a, torch.device("cpu"), torch.float64) is copy  # once per device and dtype
    assert patch_mmdit._release_after_sampling(lambda *args, **kw: ("sampled", args, kw), 1, seed=2) == ("sampled", (1,), {"seed": 2})
    assert a not in patch_mmdit._DEVICE_COPIES
    patch_mmdit._adapter_on(a, torch.device("cpu"), torch.float64)

    def interrupted():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):  # released when sampling fails too
        patch_mmdit._release_after_sampling(interrupted)
    assert a not in patch_mmdit._DEVICE_COPIES


def test_the_adapter_is_a_host_model_the_block_patches_name(monkeypatch, sd35):
    """The adapter's weights reach the GPU through the host's memory management (loaded with the model, offloaded
    under pressure): one host model per adapter and compute dtype, named by every block patch holding it."""
    made = []
    monkeypatch.setattr(patch_mmdit.host, "managed_model", lambda module: made.append(module) or SimpleNamespace(model=module))
    a = sd35.adapter
    same = patch_mmdit.managed_adapter(a, torch.float32)
    assert same.model is a  # already in the model's dtype: no copy
    half = patch_mmdit.managed_adapter(a, torch.float16)
    assert half.model is not a and next(half.model.parameters()).dtype == torch.float16
    assert patch_mmdit.managed_adapter(a, torch.float16) is half and len(made) == 2  # shared by every Apply node
    branches = [SimpleNamespace(managed=half), SimpleNamespace(managed=half), SimpleNamespace(managed=same)]
    foreign = SimpleNamespace(models=lambda: ["foreign"])
    patch = patch_mmdit.SD3BlockPatch(("double_block", 0), branches, wrapped=foreign)
    assert patch.models() == [half, same, "foreign"]
    # where the host left the managed copy, the per-step work uses it as it is
    assert patch_mmdit._adapter_on(half.model, torch.device("cpu"), torch.float16) is half.model
