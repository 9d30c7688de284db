"""Cost of Apply IPAdapter on one UNet call: plain model vs our patch vs a naive per-call K'/V' patch.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench_apply.py [--latent 64] [--batch 2] [--repeats 3]

With COMFYUI_PATH: a random full-shape SD1.5 UNet (diffusers UNet2DConditionModel) loaded by ComfyUI
(comfy.sd.load_diffusion_model_state_dict), patched by this pack as ComfyUI loads it, called the way the
sampler calls it (cond/uncond chunks in one batch). Without it: the test stand-in (tests/nodes), whose
"UNet" is only the cross-attention layers, so the ratios overstate the adapter's share.
The naive variant recomputes K'/V' = to_k_ip/to_v_ip(tokens) in every layer call (what the widely used
pack does); ours looks them up. The drop-in variant is the same model patched through the other pack's id
IPAdapter Embeds (nodes/dropin): no per-call work over our own nodes. Prints milliseconds (median of repeats, interleaved) and ratios.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _naive_branch_class(base_cls):
    class NaiveBranch(base_cls):
        """Same maths, but K'/V' projected from the tokens in every layer call, for cond and uncond."""

        def __init__(self, adapter, embeds, *args, **kwargs):
            super().__init__(adapter, embeds, *args, **kwargs)
            self.adapter, self.embeds = adapter, embeds

        def kv(self, key, cond_or_uncond, batch, device, dtype, extra_options=None):
            layer = self.layer_of_key[key]
            chunks = tuple(cond_or_uncond) if cond_or_uncond else (0,)
            per_chunk = batch // len(chunks)
            with torch.no_grad():
                kc, vc = self.adapter.layer_kv(layer, self.embeds.cond.to(device, dtype))
                ku, vu = self.adapter.layer_kv(layer, self.embeds.uncond.to(device, dtype))
            ks = [(kc if c == 0 else ku).expand(per_chunk, -1, -1) for c in chunks]
            vs = [(vc if c == 0 else vu).expand(per_chunk, -1, -1) for c in chunks]
            return torch.cat(ks), torch.cat(vs)

    return NaiveBranch


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # GPU work is asynchronous: time what ran, not what was queued


def _time(fn, repeats):
    times = []
    for _ in range(repeats):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latent", type=int, default=64, help="latent side (64 = 512 px)")
    ap.add_argument("--batch", type=int, default=2, help="UNet batch (2 = one cond + one uncond chunk)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    ap.add_argument("--gpu", action="store_true", help="let ComfyUI use its GPU (default: --cpu, as in the tests)")
    ap.add_argument("--layers-only", action="store_true",
                    help="time only the 16 cross-attention layer calls at their SD1.5 shapes (text attention vs our "
                         "patch vs naive): less noisy than whole UNet calls on a busy CPU")
    ap.add_argument("--frames", type=int, default=0,
                    help="memory of per-frame references in AnimateDiff context windows: frames of the animation "
                         "(e.g. 64 with --references 16); runs the 16 layer calls per window and reports the bytes held")
    ap.add_argument("--references", type=int, default=16, help="--frames: distinct references, each over frames/references frames")
    ap.add_argument("--window", type=int, default=16, help="--frames: context window length")
    ap.add_argument("--overlap", type=int, default=4, help="--frames: context window overlap")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    comfy_path = os.environ.get("COMFYUI_PATH")
    sys.path.insert(0, str(REPO / "tests" / "integration"))

    if comfy_path:
        import comfy_host

        host_nodes = comfy_host.boot(comfy_path, cpu=not args.gpu)
        classes = comfy_host.load_pack(host_nodes)
        patch_mod = comfy_host.pack_module("nodes.patch")
        dropin_mod = comfy_host.pack_module("nodes.dropin.compute")
        embeds_mod = comfy_host.pack_module("ip_core.embeds")
        config_mod, layers_mod = comfy_host.pack_module("ip_core.config"), comfy_host.pack_module("ip_core.layers")
        adapter_mod = comfy_host.pack_module("ip_core.adapter")
        model = None if args.layers_only else comfy_host.comfy_model_from_unet(comfy_host.sd15_unet())
        where = f"ComfyUI ({comfy_path}), random SD1.5 UNet"
        device = model.load_device if model is not None else torch.device("cuda" if args.gpu and torch.cuda.is_available() else "cpu")
    else:
        sys.path.insert(0, str(REPO))
        sys.path.insert(0, str(REPO / "tests" / "nodes"))
        sys.path.insert(0, str(REPO / "tests"))
        import comfy_standin
        import ipa_pytest_plugin  # noqa: F401  (imports nodes/ as a package, as ComfyUI does)
        import pytest

        import ip_core.adapter as adapter_mod
        import ip_core.config as config_mod
        import ip_core.embeds as embeds_mod
        import ip_core.layers as layers_mod

        comfy_standin.install(pytest.MonkeyPatch(), "/nonexistent")
        from nodes import patch as patch_mod
        from nodes import registry
        from nodes.dropin import compute as dropin_mod

        classes = registry.NODE_CLASS_MAPPINGS
        model = comfy_standin.make_model("sd15")
        where = "test stand-in (cross-attention layers only)"
        device = torch.device("cpu")

    torch.manual_seed(0)
    adapter = adapter_mod.IPAdapter.from_config(config_mod.make_config("base", layers_mod.layer_specs("sd15"), 768, 1024)).eval()
    feats = torch.randn(1, 1024)
    embeds = embeds_mod.build_image_prompt(adapter, feats, torch.zeros_like(feats))
    loaded = sys.modules[classes["IPAApplyAdapter"].__module__].LoadedAdapter(adapter, "bench")
    if args.layers_only:
        return layers_only(patch_mod, adapter, embeds, args, device, where)
    if args.frames:
        return frames_memory(patch_mod, embeds_mod, adapter, args, device, where)
    (patched,) = classes["IPAApplyAdapter"]().apply(model, loaded, embeds, 1.0, 0.0, 1.0)
    # the same through the other pack's id IPAdapter Embeds (nodes/dropin); corrected mode: the same layers as ours
    # (its default leaves the middle block out, as that pack does, which would time fewer layers)
    os.environ["IPADAPTER_DROPIN"] = "corrected"
    (dropped,) = dropin_mod.run("IPAdapterEmbeds", dict(
        model=model, ipadapter=dropin_mod.Pipeline(loaded), pos_embed=dropin_mod.PackEmbeds(embeds, loaded), weight=1.0,
        weight_type="linear", start_at=0.0, end_at=1.0, embeds_scaling="V only"))

    # the naive variant: identical patches, but with the per-call K'/V' branch
    naive = model.clone()
    naive_branch = _naive_branch_class(patch_mod.AdapterBranch)(
        adapter, embeds, [1.0] * 16, patch_mod.SigmaWindow(0, 0, True), None, label="naive")
    naive, _ = patch_mod.patch_model(model, naive_branch, adapter.layers)

    g = torch.Generator().manual_seed(0)
    b, s = args.batch, args.latent
    x = torch.randn(b, 4, s, s, generator=g).to(device)
    ctx = torch.randn(b, 77, 768, generator=g).to(device)
    t = torch.full((b,), 500.0, device=device)
    chunks = [0, 1] if b % 2 == 0 else [0]

    def call(m):
        to = copy.copy(m.model_options["transformer_options"])
        to["cond_or_uncond"] = chunks
        to["sigmas"] = torch.full((b // len(chunks),), 4.0, device=device)
        with torch.no_grad():
            if comfy_path:
                return m.model.diffusion_model(x, timesteps=t, context=ctx, transformer_options=to)
            return m.model.diffusion_model(x, t, ctx, to)

    for m in (model, patched, dropped, naive):  # warm-up (allocations, first K'/V' device conversion)
        call(m)
    results = {"plain": [], "ours": [], "dropin": [], "naive": []}
    for _ in range(args.repeats):  # interleaved: machine load drifts, every variant sees the same drift
        for name, m in (("plain", model), ("ours", patched), ("dropin", dropped), ("naive", naive)):
            results[name] += _time(lambda: call(m), 1)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"{where}; device {device}; latent {s}x{s}, batch {b}, torch threads {torch.get_num_threads()}, repeats {args.repeats}")
    for name in ("plain", "ours", "dropin", "naive"):
        print(f"  {name:6s} {med[name]:10.1f} ms   (runs: {', '.join(f'{v:.0f}' for v in results[name])})")
    print(f"  adapter overhead (ours / plain):       {med['ours'] / med['plain']:.4f}x  ({100 * (med['ours'] / med['plain'] - 1):+.2f}%)")
    print(f"  naive overhead   (naive / plain):      {med['naive'] / med['plain']:.4f}x  ({100 * (med['naive'] / med['plain'] - 1):+.2f}%)")
    print(f"  naive / ours:                          {med['naive'] / med['ours']:.4f}x")
    print(f"  drop-in id IPAdapterEmbeds / ours:     {med['dropin'] / med['ours']:.4f}x")


def _layer_calls(adapter, b, s, chunks, device, g):
    """(key, q, k, v, extra_options) of the 16 SD1.5 attn2 calls for a batch of b at latent side s."""
    calls = []
    for spec in adapter.layers:
        side = max(1, s // 8 if spec.comfy_block[0] == "middle" else s // {320: 1, 640: 2, 1280: 4}[spec.hidden_size])
        h = spec.hidden_size
        q = torch.randn(b, side * side, h, generator=g).to(device)
        k, v = (torch.randn(b, 77, h, generator=g).to(device) for _ in range(2))
        opts = {"n_heads": 8, "dim_head": h // 8, "attn_precision": None, "cond_or_uncond": chunks,
                "original_shape": [b, 4, side * (s // side), side * (s // side)], "sigmas": torch.full((b // len(chunks),), 4.0)}
        calls.append((spec.comfy_key, q, k, v, opts))
    return calls


def frames_memory(patch_mod, embeds_mod, adapter, args, device, where):
    """Per-frame references over an animation, run as AnimateDiff runs it (context windows with overlap):
    what our branch holds (K'/V' once per distinct reference + the current window's arrangement) against a
    table with K'/V' for every frame. On CUDA also the allocator's peak over the run."""
    frames, refs = args.frames, args.references
    per = -(-frames // refs)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(refs, 1024, generator=g)[[min(i // per, refs - 1) for i in range(frames)]]
    embeds = embeds_mod.build_image_prompt(adapter, feats, torch.zeros_like(feats), combine="batch")
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_alloc = torch.cuda.memory_allocated()
    branch = patch_mod.AdapterBranch(adapter, embeds, [1.0] * 16, patch_mod.SigmaWindow(0, 0, True), None)
    step = args.window - args.overlap
    starts = list(range(0, max(frames - args.window, 0) + 1, step))
    if starts[-1] + args.window < frames:
        starts.append(frames - args.window)
    windows = [list(range(st, min(st + args.window, frames))) for st in starts]
    peak_held, t0 = 0, time.perf_counter()
    for sub in windows:
        calls = _layer_calls(adapter, 2 * len(sub), args.latent, [0, 1], device, g)
        with torch.no_grad():
            for key, q, k, v, opts in calls:
                opts["ad_params"] = {"full_length": frames, "sub_idxs": sub}
                patch_mod.IPAttentionPatch(key, (branch,))(q, k, v, opts)
        peak_held = max(peak_held, branch.device_bytes())
        del calls
    _sync()
    seconds = time.perf_counter() - t0
    per_frame_table = sum(2 * 2 * frames * spec_kv.numel() * spec_kv.element_size()
                          for spec_kv in (branch._kv[l][0][0] for l in branch._kv))
    distinct = len(set(branch._row))
    mib = 1 / 2 ** 20
    print(f"{where}; device {device}; {frames} frames, {refs} references ({distinct} distinct rows), windows of "
          f"{args.window} overlapping by {args.overlap} ({len(windows)} windows), latent {args.latent}x{args.latent}")
    print(f"  K'/V' held by the branch, peak over the run: {peak_held * mib:8.2f} MiB "
          f"(distinct references' tables + one window's arrangement)")
    print(f"  K'/V' for every frame at once (a per-frame table): {per_frame_table * mib:8.2f} MiB")
    print(f"  ratio held / per-frame table: {peak_held / per_frame_table:.3f}; time for all windows: {seconds:.1f} s")
    if cuda:
        print(f"  CUDA peak allocated during the run (q/k/v inputs included): {(torch.cuda.max_memory_allocated() - base_alloc) * mib:.1f} MiB")


def layers_only(patch_mod, adapter, embeds, args, device, where):
    """The 16 attn2 calls of one UNet call at SD1.5 shapes: latent side s gives s*s query tokens at 320
    wide, (s/2)^2 at 640, (s/4)^2 at 1280 and (s/8)^2 in the middle block; 77 text tokens; 8 heads."""
    from importlib import import_module

    host = import_module(patch_mod.__name__.rsplit(".", 1)[0] + ".host")
    ours = patch_mod.AdapterBranch(adapter, embeds, [1.0] * 16, patch_mod.SigmaWindow(0, 0, True), None)
    naive = _naive_branch_class(patch_mod.AdapterBranch)(adapter, embeds, [1.0] * 16, patch_mod.SigmaWindow(0, 0, True), None)
    # a precise weight type with the costliest scaling, every layer active (composition precise, boost 1:
    # all 16 layers weighted, 14 with the cond/uncond swap): per layer it must cost what linear costs
    wt = import_module(patch_mod.attention.__name__.rsplit(".", 1)[0] + ".weight_types")  # the ip_core nodes/ uses
    plan = wt.layer_plan("sd15", adapter.layers, "composition precise", 1.0, composition_boost=1.0)
    styled = patch_mod.AdapterBranch(adapter, embeds, [p.weight for p in plan], patch_mod.SigmaWindow(0, 0, True), None,
                                     swap_layers=[i for i, p in enumerate(plan) if p.swap],
                                     embeds_scaling="K+mean(V) w/ C penalty")
    assert all(p.weight for p in plan)
    b, s = args.batch, args.latent
    chunks = [0, 1] if b % 2 == 0 else [0]
    g = torch.Generator().manual_seed(0)
    calls = []
    for spec in adapter.layers:
        side = s // 8 if spec.comfy_block[0] == "middle" else s // {320: 1, 640: 2, 1280: 4}[spec.hidden_size]
        h = spec.hidden_size
        q = torch.randn(b, side * side, h, generator=g).to(device)
        k, v = (torch.randn(b, 77, h, generator=g).to(device) for _ in range(2))
        opts = {"n_heads": 8, "dim_head": h // 8, "attn_precision": None, "cond_or_uncond": chunks,
                "original_shape": [b, 4, s, s], "sigmas": torch.full((b // len(chunks),), 4.0)}
        calls.append((spec.comfy_key, q, k, v, opts))

    def run(kind):
        with torch.no_grad():
            for key, q, k, v, opts in calls:
                if kind == "text":
                    host.attention_for(opts)(q, k, v, 8)
                else:
                    branch = {"ours": ours, "styled": styled, "naive": naive}[kind]
                    patch_mod.IPAttentionPatch(key, (branch,))(q, k, v, opts)

    for kind in ("text", "ours", "styled", "naive"):
        run(kind)
    results = {"text": [], "ours": [], "styled": [], "naive": []}
    for _ in range(max(args.repeats, 5)):
        for kind in results:
            results[kind] += _time(lambda: run(kind), 1)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"{where}; 16 cross-attention layer calls only; latent {s}x{s}, batch {b}, torch threads {torch.get_num_threads()}")
    for kind in results:
        print(f"  {kind:6s} {med[kind]:10.1f} ms   (runs: {', '.join(f'{v:.0f}' for v in results[kind])})")
    print(f"  image branch adds (ours - text):   {med['ours'] - med['text']:.1f} ms per UNet call")
    print(f"  naive adds        (naive - text):  {med['naive'] - med['text']:.1f} ms per UNet call")
    print(f"  styled / ours (composition precise + K+mean(V) w/ C penalty vs linear, V only): "
          f"{med['styled'] / med['ours']:.4f}x")


if __name__ == "__main__":
    main()
