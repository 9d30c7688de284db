"""What the nodes take from the host, checked in the real host (COMFYUI_PATH):

    python tests/integration/run_host.py SCENARIO OUT_DIR      SCENARIO: symbols | attention | windows

Prints one line `RESULT <json>` that test_integration_host.py checks.
- symbols: every entry of nodes/host_symbols.HOST_SYMBOLS against this host (module, attribute, call keywords,
  leading parameters, the host code that makes the calls we rely on), and where clip_preprocess was found.
- attention: a host whose attention calls carry a per-layer choice (a keyword the override receives, here
  `preferred_attention`): our Flux image terms are computed with that choice too; weight 0 stays bit-identical.
- windows: the host's own core context windows (comfy/context_windows.py, where the host has them) evaluating our
  attn2 patch with one reference / weight / mask per frame: equal to one call on all frames.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_host  # noqa: E402

COMFY = os.environ["COMFYUI_PATH"]


def _resolve(entry):
    """(the object, the module it came from) or (None, why not)."""
    for module_name in entry.modules:
        try:
            obj = importlib.import_module(module_name)
        except ImportError as e:
            why = f"{module_name}: {e}"
            continue
        for part in [p for p in entry.name.split(".") if p]:
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return obj, module_name
        why = f"{module_name} has no {entry.name}"
    return None, why


def _check(entry) -> list:
    """The entry's problems on this host ([] = holds)."""
    obj, where = _resolve(entry)
    if obj is None:
        return [where]
    problems = []
    if entry.accepts or entry.leads:
        target = obj.__init__ if inspect.isclass(obj) else obj
        params = inspect.signature(target).parameters
        names = list(params)
        if inspect.isclass(obj) and names[:1] == ["self"]:
            names = names[1:]
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        problems += [f"does not take {k}=" for k in entry.accepts if k not in params and not takes_any]
        if tuple(names[:len(entry.leads)]) != tuple(entry.leads):
            problems.append(f"parameters start {names[:len(entry.leads)]}, the nodes rely on {list(entry.leads)}")
    if entry.code:
        source = inspect.getsource(inspect.unwrap(obj) if callable(obj) else obj)
        problems += [f"its code no longer matches {pattern!r}" for pattern in entry.code if not re.search(pattern, source)]
    return problems


def symbols(out_dir):
    comfy_host.boot(COMFY)
    # the table's file alone (it imports nothing of the host or the pack; the host owns the name `nodes`)
    spec = importlib.util.spec_from_file_location("ipa_host_symbols", comfy_host.REPO / "nodes" / "host_symbols.py")
    table = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = table  # dataclasses looks the module up
    spec.loader.exec_module(table)
    HOST_SYMBOLS = table.HOST_SYMBOLS

    result, absent = {}, []
    for n, entry in enumerate(HOST_SYMBOLS):
        key = f"{n}: {entry.modules[0]}.{entry.name}"
        problems = _check(entry)
        if problems and entry.where_present:
            absent.append(key)  # a feature of other hosts; the nodes do without it here
            continue
        result[key] = problems
    found = [m for m in ("comfy.clip_model", "comfy.clip_vision")
             if getattr(importlib.import_module(m), "clip_preprocess", None) is not None]
    return {"entries": len(HOST_SYMBOLS), "problems": {k: v for k, v in result.items() if v}, "checked": len(result),
            "absent_where_present": absent, "clip_preprocess_in": found}


def _loaded_pack(out_dir):
    host_nodes = comfy_host.boot(COMFY)
    adapters = os.path.join(out_dir, "ipadapter")
    os.makedirs(adapters, exist_ok=True)
    comfy_host.load_pack(host_nodes, adapters)
    return host_nodes, adapters


def attention(out_dir):
    """Flux (the host's own model code at small widths) with an XLabs adapter; the host's Flux attention call made
    to carry `preferred_attention` (as a host with per-layer attention choices passes it): every attention call,
    the host's and our image terms', must see it; weight 0 must equal the unpatched model bit for bit."""
    host_nodes, _ = _loaded_pack(out_dir)
    import comfy.ldm.flux.math as flux_attention_module
    import comfy.ldm.modules.attention as attention_module

    host = comfy_host.pack_module("nodes.host")
    flux = comfy_host.pack_module("ip_core.families.flux")
    embeds_mod = comfy_host.pack_module("ip_core.embeds")
    patch_dit = comfy_host.pack_module("nodes.patch_dit")
    apply_node = host_nodes.NODE_CLASS_MAPPINGS["IPAApplyAdapter"]()
    common = comfy_host.pack_module("nodes.common")

    model = comfy_host.host_flux(comfy_host.small_flux_diffusers(seed=1).state_dict())
    g = torch.Generator().manual_seed(3)
    adapter = flux.FluxIPAdapter(flux.make_flux_config("flux-xlabs", 2, 0, 64, 32, 768, 4)).eval()
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    loaded = common.LoadedAdapter(adapter, "xlabs-small.safetensors")
    feats = torch.randn(1, 768, generator=g)
    emb = embeds_mod.build_image_prompt(adapter, feats, torch.zeros_like(feats), encoder_name="ViT-L/14")

    raw = attention_module.optimized_attention.__wrapped__  # the host's attention function under wrap_attn
    seen = []

    def chosen(q, k, v, heads, preferred_attention=None, **kw):
        seen.append(preferred_attention)
        return raw(q, k, v, heads, **kw)

    with_choice = attention_module.wrap_attn(chosen)
    original_call = flux_attention_module.optimized_attention

    def host_call(q, k, v, heads, **kw):  # the block's attention call, carrying the layer's choice
        return with_choice(q, k, v, heads, preferred_attention="layer's choice", **kw)

    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 16, 8, 8, generator=g)
    context = torch.randn(1, 7, 32, generator=g)
    y = torch.randn(1, 24, generator=g)
    t = torch.tensor([0.5])

    def run(patcher):
        options = dict(patcher.model_options["transformer_options"])
        options["cond_or_uncond"] = [0]
        options["sigmas"] = t
        with torch.no_grad():
            return patcher.model.diffusion_model(x, t, context, y=y, transformer_options=options)

    def apply(weight):
        return apply_node.apply(model, loaded, emb, weight, 0.0, 1.0)[0]

    flux_attention_module.optimized_attention = host_call
    try:
        plain = run(model)
        host_calls = len(seen)
        seen.clear()
        patched = run(apply(1.0))
        patched_calls = list(seen)
        seen.clear()
        zero = run(apply(0.0))
    finally:
        flux_attention_module.optimized_attention = original_call
    return {"host_calls_per_run": host_calls, "patched_calls": len(patched_calls),
            "choices_seen": sorted(set(map(str, patched_calls))),
            "changes_output": float((patched - plain).abs().max()),
            "weight0_identical": bool(torch.equal(zero, plain)),
            "dropped_keywords": list(host.CALL_OWN_KEYWORDS), "override_module": patch_dit.__name__}


def windows(out_dir):
    """The host's IndexListContextHandler.execute (its windows, causal anchor frame, slicing and fusing) over 10
    frames, windows of 4 overlapping by 1, calling our attn2 patch (through the Apply node: 6 references, a mask
    and a weight per frame) as the model; against one call on all 10 frames."""
    host_nodes, adapters = _loaded_pack(out_dir)
    try:
        import comfy.context_windows as cw
    except ImportError:
        return {"host_has_core_windows": False}
    from types import SimpleNamespace

    from ip_core.adapter import IPAdapter, save_adapter
    from ip_core.config import make_config
    from ip_core.layers import layer_specs

    torch.manual_seed(0)
    save_adapter(IPAdapter.from_config(make_config("base", layer_specs("sd15"), 768, 1024)),
                 os.path.join(adapters, "base.safetensors"))
    adapter = host_nodes.NODE_CLASS_MAPPINGS["IPALoadAdapter"]().load("base.safetensors")["result"][0]
    embeds_mod = comfy_host.pack_module("ip_core.embeds")
    frames_n, refs = 10, 6
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(refs, 1024, generator=g) * 3
    emb = embeds_mod.build_image_prompt(adapter.adapter, feats, torch.zeros_like(feats), combine="batch")
    masks = torch.rand(frames_n, 24, 24, generator=g)
    weights = [0.1 * (i + 1) for i in range(frames_n)]
    tiny = comfy_host.tiny_patcher()
    patched = host_nodes.NODE_CLASS_MAPPINGS["IPAApplyAdapter"]().apply(
        tiny, adapter, emb, 1.0, 0.0, 1.0, attn_mask=masks, frame_weights=weights)[0]
    patch = patched.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 4, 0)]
    to_q = torch.randn(4, 640, generator=g) * 0.5  # a latent frame's 8 x 8 x 4 values -> 64 queries of width 640
    text_k = torch.randn(1, 77, 640, generator=g)
    text_v = torch.randn(1, 77, 640, generator=g)
    calls = []

    def model_call(model, conds, x, timestep, model_options):
        """calc_cond_batch's place: cond and uncond chunks in one batch, as the host's sampler makes them."""
        options = model_options["transformer_options"]
        window = options.get("context_window")
        calls.append(None if window is None else [getattr(window, "causal_anchor_index", None), list(window.index_list)])
        n = x.shape[0]
        q = torch.cat([x, x]).flatten(2).transpose(1, 2) @ to_q
        extra = {**options, "n_heads": 8, "dim_head": 80, "attn_precision": None, "cond_or_uncond": [0, 1],
                 "sigmas": timestep, "original_shape": [2 * n, 4, 8, 8], "block": ("input", 4), "block_index": 0}
        with torch.no_grad():
            out = patch(q, text_k.expand(2 * n, -1, -1), text_v.expand(2 * n, -1, -1), extra)
        out = (out @ to_q.T).transpose(1, 2).reshape(2 * n, 4, 8, 8)
        return [out[:n], out[n:]]

    x = torch.randn(frames_n, 4, 8, 8, generator=g)
    sigmas = torch.tensor([5.0, 2.0, 0.0])
    timestep = sigmas[:1]  # one sigma for the batch (0.3.64's handler compares it with sample_sigmas)
    options = {"transformer_options": {"sample_sigmas": sigmas}}
    full = model_call(None, None, x, timestep, options)
    handler = cw.IndexListContextHandler(cw.get_matching_context_schedule(cw.ContextSchedules.STATIC_STANDARD),
                                         cw.get_matching_fuse_method(cw.ContextFuseMethods.FLAT),
                                         context_length=4, context_overlap=1, dim=0)
    model = SimpleNamespace(latent_format=SimpleNamespace(temporal_downscale_ratio=1))
    calls.clear()
    windowed = handler.execute(model_call, model, [[{}], [{}]], x, timestep, {"transformer_options": dict(options["transformer_options"])})
    scale = float(torch.cat(full).abs().max())
    return {"host_has_core_windows": True, "windows": calls,
            "max_abs": max(float((a - b).abs().max()) for a, b in zip(windowed, full)), "scale": scale}


if __name__ == "__main__":
    scenario, out = sys.argv[1], sys.argv[2]
    sys.path.insert(0, str(comfy_host.REPO))
    result = {"symbols": symbols, "attention": attention, "windows": windows}[scenario](out)
    print("RESULT " + json.dumps(result, default=str), flush=True)
