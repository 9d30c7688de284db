"""The attn2 patch object and per-layer weights, called directly the way BasicTransformerBlock calls them."""
import sys
import threading

import pytest
import torch

from conftest import random_adapter
from ip_core.attention import multihead_attention
from ip_core.embeds import build_image_prompt
from ip_core.errors import IPAdapterError
from ip_core.layers import layer_specs
from nodes.layer_weights import layer_weights
from nodes.patch import AdapterBranch, IPAttentionPatch, SigmaWindow, downsampled_hw


@pytest.fixture(scope="module")
def adapter():
    return random_adapter("base", seed=4)


def _branch(adapter, weight=1.0, mask=None, seed=0):
    feats = torch.randn(1, 1024, generator=torch.Generator().manual_seed(seed)) * 3
    emb = build_image_prompt(adapter, feats, torch.zeros_like(feats))
    return AdapterBranch(adapter, emb, [weight] * 16, SigmaWindow(0, 0, True), mask), emb


def _qkv(batch=2, tokens=64 * 48, hidden=320, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, tokens, hidden, generator=g), torch.randn(batch, 5, hidden, generator=g),
            torch.randn(batch, 5, hidden, generator=g))


def _opts(cond_or_uncond=(0,), shape=(1, 4, 64, 48)):
    return {"n_heads": 8, "dim_head": 40, "attn_precision": None, "cond_or_uncond": list(cond_or_uncond),
            "original_shape": list(shape), "block": ("input", 1), "block_index": 0}


def test_patch_is_the_decoupled_formula(host, adapter):
    branch, emb = _branch(adapter, weight=0.7)
    q, k, v = _qkv(batch=2)
    out = IPAttentionPatch(("input", 1, 0), (branch,))(q, k, v, _opts((1, 0)))
    kc, vc = adapter.layer_kv(0, emb.cond)
    ku, vu = adapter.layer_kv(0, emb.uncond)
    text = multihead_attention(q, k, v, 8)
    expect_uncond = text[:1] + 0.7 * multihead_attention(q[:1], ku, vu, 8)
    expect_cond = text[1:] + 0.7 * multihead_attention(q[1:], kc, vc, 8)
    assert torch.allclose(out, torch.cat([expect_uncond, expect_cond]), atol=1e-5)


def test_mask_limits_the_image_branch_to_its_region(host, adapter):
    mask = torch.zeros(1, 100, 100)
    mask[:, :, :50] = 1.0  # left half (any size: stretched to the latent)
    branch, _ = _branch(adapter, mask=mask)
    q, k, v = _qkv(batch=1, tokens=64 * 48)
    out = IPAttentionPatch(("input", 1, 0), (branch,))(q, k, v, _opts())
    text = multihead_attention(q, k, v, 8)
    diff = (out - text).abs().sum(-1).reshape(64, 48)
    assert torch.equal(out.reshape(64, 48, -1)[:, 25:], text.reshape(64, 48, -1)[:, 25:])  # right side: text only
    assert (diff[:, :23] > 0).all()


@pytest.mark.parametrize("hw,tokens,expect", [((64, 64), 4096, (64, 64)), ((64, 64), 64, (8, 8)),
                                              ((63, 65), 32 * 33, (32, 33)), ((63, 65), 8 * 9, (8, 9)),
                                              ((128, 96), 16 * 12, (16, 12))])
def test_layer_size_from_original_shape(hw, tokens, expect):
    assert downsampled_hw((2, 4) + hw, tokens) == expect


def test_stacked_branches_and_wrapped_patch_add_up(host, adapter):
    a, _ = _branch(adapter, weight=0.5, seed=1)
    b, _ = _branch(random_adapter("base", seed=9), weight=1.5, seed=2)
    q, k, v = _qkv(batch=1)
    key = ("input", 1, 0)
    text = IPAttentionPatch(key)(q, k, v, _opts())
    only_a = IPAttentionPatch(key, (a,))(q, k, v, _opts()) - text
    only_b = IPAttentionPatch(key, (b,))(q, k, v, _opts()) - text
    both = IPAttentionPatch(key, (a,)).with_branch(b)(q, k, v, _opts())
    assert torch.allclose(both, text + only_a + only_b, atol=1e-5)
    foreign = lambda q, k, v, o: torch.full_like(q, 2.0)  # noqa: E731
    wrapped = IPAttentionPatch(key, (a,), wrapped=foreign)(q, k, v, _opts())
    assert torch.allclose(wrapped, 2.0 + only_a, atol=1e-5)


def test_sigma_window_is_read_once_per_sigmas_tensor(host, adapter):
    w = SigmaWindow(sigma_start=10.0, sigma_end=1.0, whole_schedule=False)
    s = torch.tensor([5.0])
    assert all(w.active({"sigmas": s}) for _ in range(16)) and w.syncs == 1
    assert not w.active({"sigmas": torch.tensor([20.0])}) and w.syncs == 2
    assert not w.active({"sigmas": torch.tensor([0.5])})
    assert w.active({})  # outside a sampler: full window


def _in_two_threads(step_a, step_b, switches: int = 20, cap: int = 200_000):
    """step_a and step_b called over and over in two threads until the threads have taken turns `switches`
    times (the host's multi-GPU sampling: one model clone per device, each in its thread, sharing our patch
    objects); the interpreter is told to switch threads as often as it can."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    barrier, failures, turns, last = threading.Barrier(2), [], [0], [None]

    def run(name, step):
        barrier.wait()
        try:
            for _ in range(cap):
                if turns[0] >= switches:
                    return
                step()
                if last[0] != name:
                    last[0], turns[0] = name, turns[0] + 1
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            failures.append(repr(e))

    threads = [threading.Thread(target=run, args=(n, s)) for n, s in (("a", step_a), ("b", step_b))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == [] and turns[0] >= switches, (failures, turns)


def test_sigma_window_keeps_its_answer_per_thread(host, adapter):
    w = SigmaWindow(sigma_start=10.0, sigma_end=1.0, whole_schedule=False)
    inside, outside = torch.tensor([5.0]), torch.tensor([20.0])  # each device's sigmas tensor of one step
    answers = {True: set(), False: set()}

    def sample(sigmas, expect):
        return lambda: answers[expect].add(w.active({"sigmas": sigmas}))

    _in_two_threads(sample(inside, True), sample(outside, False))
    assert answers == {True: {True}, False: {False}}
    assert w.syncs == 2  # one read per thread's tensor: the other thread's calls do not discard it


def test_per_frame_branch_serves_two_threads_with_different_windows(host, adapter):
    feats = torch.randn(4, 1024, generator=torch.Generator().manual_seed(3)) * 3
    emb = build_image_prompt(adapter, feats, torch.zeros_like(feats))
    mask = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(4))
    branch = AdapterBranch(adapter, emb, [1.0] * 16, SigmaWindow(0, 0, True), mask, frame_weights=[0.5, 1, 1.5, 2])
    patch = IPAttentionPatch(("input", 1, 0), (branch,))
    q, k, v = _qkv(batch=4, tokens=8 * 8)
    windows = ([0, 1], [2, 3])
    opts = [dict(_opts((0, 1), (4, 4, 8, 8)), ad_params={"full_length": 4, "sub_idxs": w}) for w in windows]
    alone = [patch(q, k, v, o) for o in opts]  # one thread, one window after the other
    wrong = {0: 0, 1: 0}

    def sample(i):
        def step():
            wrong[i] += not torch.equal(patch(q, k, v, opts[i]), alone[i])
        return step

    _in_two_threads(sample(0), sample(1))
    assert wrong == {0: 0, 1: 0}


def test_layer_weight_strings_and_presets():
    sd15, sdxl = layer_specs("sd15"), layer_specs("sdxl")
    assert layer_weights(sd15) == [1.0] * 16
    assert layer_weights(sd15, custom=", ".join(["0.5"] * 16)) == [0.5] * 16
    w = layer_weights(sd15, custom="input=1; middle.0=2, output.11=0.25")
    assert w[:6] == [1.0] * 6 and w[15] == 2.0 and w[14] == 0.25 and w[6:14] == [0.0] * 8
    assert layer_weights(sd15, custom="*=1, 3=0")[3] == 0.0
    assert layer_weights(sd15, custom="down_blocks.1=1") == [0, 0, 1, 1] + [0] * 12
    style = layer_weights(sdxl, "style only")
    assert sum(style) == 10 and all(s.comfy_block == ("output", 1) for s, w in zip(sdxl, style) if w)
    comp = layer_weights(sdxl, "composition only")
    assert all(s.diffusers_name.startswith("down_blocks.2.attentions.1.") for s, w in zip(sdxl, comp) if w)
    assert layer_weights(sdxl, custom="output.1.3=1").count(1.0) == 1
    for bad, msg in (("1, 2", "16 layers"), ("input=x", "not a number"), ("nowhere=1", "no layer"), ("input=nan", "not a number")):
        with pytest.raises(IPAdapterError, match=msg):
            layer_weights(sd15, custom=bad)
    with pytest.raises(IPAdapterError, match="unknown layer weight preset"):
        layer_weights(sd15, "everything")


def test_host_device_moves_reach_a_wrapped_patch(host, adapter):
    class Foreign:
        def __init__(self, device="cpu"):
            self.device = device

        def to(self, device):
            return Foreign(device)

    branch, _ = _branch(adapter)
    p = IPAttentionPatch(("input", 1, 0), (branch,), wrapped=Foreign())
    moved = p.to("meta")
    assert moved.wrapped.device == "meta" and moved.branches == p.branches and p.wrapped.device == "cpu"
    assert IPAttentionPatch(("input", 1, 0), (branch,)).to("meta").branches == (branch,)
