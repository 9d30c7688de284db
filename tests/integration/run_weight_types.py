"""Weight types and embeds scaling inside a real ComfyUI, against the widely used pack loaded beside ours:

    python tests/integration/run_weight_types.py sd15|sdxl OUT_DIR

1. The host's transformer_index per attn2 key is recorded from a real UNet forward (the family's block layout,
   narrow channels so it runs in seconds on a CPU) and compared with ip_core's translation table.
2. For every weight type x embeds scaling (plus style & composition from two images, and the precise
   nodes' boosts) both packs' Apply nodes patch the same model with the same random adapter and image; then
   each layer's registered attn2 patch is called with the same q, k, v and extra_options (the recorded
   transformer_index, real hidden sizes) and the outputs are compared. The pack's middle block is
   registered under a key the host never calls, so there only ours runs: compared are all other layers.

Prints one line `RESULT <json>`.
"""
from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_host  # noqa: E402

COMFY = os.environ["COMFYUI_PATH"]
WEIGHT = 0.8

# The host's UNet configs for the two families (comfy/model_detection.py), with narrow channels: the block
# layout (which blocks hold how many transformers) is what the transformer_index walk depends on.
_UNET = {
    "sd15": dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
                 adm_in_channels=None, in_channels=4, model_channels=32, num_res_blocks=[2, 2, 2, 2],
                 transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], channel_mult=[1, 2, 4, 4], transformer_depth_middle=1,
                 use_linear_in_transformer=False, context_dim=768, num_heads=8,
                 transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], use_temporal_attention=False,
                 use_temporal_resblock=False),
    "sdxl": dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
                 num_classes="sequential", adm_in_channels=2816, in_channels=4, model_channels=64,
                 num_res_blocks=[2, 2, 2], transformer_depth=[0, 0, 2, 2, 10, 10], channel_mult=[1, 2, 4],
                 transformer_depth_middle=10, use_linear_in_transformer=True, context_dim=2048, num_head_channels=64,
                 transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], use_temporal_attention=False,
                 use_temporal_resblock=False),
}


def _model(family):
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models as sm

    config = (sm.SD15 if family == "sd15" else sm.SDXL)(_UNET[family])
    if family == "sd15":
        config.unet_config.update(num_heads=8, num_head_channels=-1)
    torch.manual_seed(0)
    base = config.get_model({}, "")
    dev = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(base, load_device=dev, offload_device=dev)


def _recorded_transformer_index(patcher, family, keys):
    """Run the host's UNet once with a recording attn2 patch at every key: key -> transformer_index."""
    from comfy.ldm.modules.attention import optimized_attention

    seen = {}

    def recorder(key):
        def patch(q, k, v, extra_options):
            seen[key] = (extra_options["transformer_index"], tuple(extra_options["block"]), extra_options["block_index"])
            return optimized_attention(q, k, v, extra_options["n_heads"])
        return patch

    to = {"patches_replace": {"attn2": {key: recorder(key) for key in keys}}}
    x = torch.randn(1, 4, 16, 16)
    ctx = torch.randn(1, 8, _UNET[family]["context_dim"])
    y = torch.randn(1, 2816) if family == "sdxl" else None
    with torch.no_grad():
        patcher.model.diffusion_model(x, timesteps=torch.tensor([10.0]), context=ctx, y=y, transformer_options=to)
    return seen


def main(family, out_dir):
    host_nodes = comfy_host.boot(COMFY)
    ours = comfy_host.load_pack(host_nodes)
    theirs, their_module = comfy_host.load_reference_pack(host_nodes)

    from comfy.ldm.modules.attention import optimized_attention
    sys.path.append(str(comfy_host.REPO))  # after the host's own paths: its `nodes` module stays the host's
    from ip_core.adapter import IPAdapter
    from ip_core.config import make_config
    from ip_core.layers import layer_specs
    from ip_core.weight_types import EMBEDS_SCALINGS, WEIGHT_TYPES, host_transformer_index

    nodes_common = comfy_host.pack_module("common")
    specs = layer_specs(family)
    ctx_dim = _UNET[family]["context_dim"]
    torch.manual_seed(1)
    adapter = IPAdapter.from_config(make_config("base", specs, ctx_dim, 1024))
    for p in adapter.parameters():  # released-like scale, so the image term is not negligible
        p.data.normal_(0, 0.05)
    loaded = nodes_common.LoadedAdapter(adapter, f"random_{family}.safetensors")
    # the released layout, sharing our tensors (the pack copies them into its own modules)
    their_adapter = {"image_proj": adapter.image_proj.state_dict(), "ip_adapter": adapter.ip_layers.state_dict()}
    cv = comfy_host.small_clip_vision(out_dir)
    g = torch.Generator().manual_seed(2)
    # 224x224 images on the 8-bit grid: both packs' preprocessing (ours: the official PIL path; theirs: the
    # host's clip_preprocess) then give the same pixels, so the encoders see the same input
    style_img = torch.randint(0, 256, (1, 224, 224, 3), generator=g).float() / 255
    comp_img = torch.randint(0, 256, (1, 224, 224, 3), generator=g).float() / 255
    (style_emb,) = ours["IPAEncodeImagePrompt"]().encode(loaded, cv, style_img)
    (comp_emb,) = ours["IPAEncodeImagePrompt"]().encode(loaded, cv, comp_img)

    patcher = _model(family)
    recorded = _recorded_transformer_index(patcher, family, [s.comfy_key for s in specs])
    table_ok = all(recorded[s.comfy_key][0] == host_transformer_index(family, s) for s in specs)
    result = {"recorded_layers": len(recorded), "table_matches_host": table_ok,
              "host_blocks": len({v[1] for v in recorded.values()}), "cases": {}}

    heads_of = {s.hidden_size: (8 if family == "sd15" else s.hidden_size // 64) for s in specs}
    qkv = {}
    for s in specs:
        q = torch.randn(2, 16, s.hidden_size, generator=g)
        k = torch.randn(2, 8, s.hidden_size, generator=g)
        v = torch.randn(2, 8, s.hidden_size, generator=g)
        qkv[s.comfy_key] = (q, k, v)

    def layer_outputs(model, pick):
        patches = model.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})
        outs = {}
        for s in specs:
            key = s.comfy_key
            q, k, v = qkv[key]
            t, block, block_index = recorded[key]
            eo = {"n_heads": heads_of[s.hidden_size], "dim_head": s.hidden_size // heads_of[s.hidden_size],
                  "block": block, "block_index": block_index, "transformer_index": t, "cond_or_uncond": [1, 0],
                  "sigmas": torch.tensor([5.0]), "original_shape": [2, 4, 4, 4], "attn_precision": None}
            patch = pick(patches, key)
            with torch.no_grad():
                outs[key] = patch(q, k, v, dict(eo)) if patch is not None else optimized_attention(q, k, v, eo["n_heads"])
        return outs

    ours_pick = lambda patches, key: patches.get(key, patches.get(key[:2]))  # noqa: E731  (the host's lookup)
    theirs_pick = ours_pick

    cases = []
    # SD1.5: every weight type x every scaling. SDXL (a 360M-parameter adapter, rebuilt by the pack per call):
    # every weight type, each with one scaling in turn, so every type and every scaling is covered.
    for i, wt in enumerate(WEIGHT_TYPES):
        for scaling in (EMBEDS_SCALINGS if family == "sd15" else EMBEDS_SCALINGS[i % 4:i % 4 + 1]):
            ours_kw = dict(weight_type=wt, embeds_scaling=scaling)
            if wt == "style transfer precise":
                ours_kw["style_boost"] = WEIGHT  # the pack's Advanced node: no boost = the weight
            if wt == "composition precise":
                ours_kw["composition_boost"] = WEIGHT
            cases.append((f"{wt} / {scaling}", ours_kw, dict(weight_type=wt, embeds_scaling=scaling)))
    for scaling in (EMBEDS_SCALINGS if family == "sd15" else ("V only", "K+mean(V) w/ C penalty")):  # precise nodes
        cases.append((f"precise style node, boost 1.5 / {scaling}",
                      dict(weight_type="style transfer precise", style_boost=1.5, embeds_scaling=scaling),
                      dict(style_boost=1.5, embeds_scaling=scaling)))
        cases.append((f"precise composition node, boost 0.3 / {scaling}",
                      dict(weight_type="composition precise", composition_boost=0.3, embeds_scaling=scaling),
                      dict(composition_boost=0.3, embeds_scaling=scaling)))
    if family == "sdxl":  # the pack's Style & Composition node (SDXL only there)
        for expand in (False, True):
            for scaling in (("V only", "K+V w/ C penalty") if expand else ("K+V", "K+mean(V) w/ C penalty")):
                cases.append((f"style & composition, two images, expand {expand} / {scaling}",
                              dict(weight_type="style and composition", composition_embeds=comp_emb, weight_composition=0.6,
                                   expand_style=expand, embeds_scaling=scaling),
                              dict(image_style=style_img, image_composition=comp_img, weight_style=WEIGHT,
                                   weight_composition=0.6, expand_style=expand, embeds_scaling=scaling)))

    plain = layer_outputs(patcher, lambda patches, key: None)
    apply_ours = ours["IPAApplyAdapter"]()
    advanced = theirs["IPAdapterAdvanced"]()
    # the pack's own encoding of the style image, once (its Advanced node would redo it per call)
    their_features = their_module.encode_image_masked(cv, style_img).image_embeds
    worst = 0.0
    for name, ours_kw, their_kw in cases:
        (ours_model,) = apply_ours.apply(patcher, loaded, style_emb, WEIGHT, 0.0, 1.0, **ours_kw)
        if "image_style" in their_kw:  # the Style & Composition node's path (two images)
            their_args = dict(weight=WEIGHT, clip_vision=cv, start_at=0.0, end_at=1.0, **their_kw)
            their_model = advanced.apply_ipadapter(patcher, their_adapter, **their_args)[0]
        else:  # what the Advanced and precise nodes call, with the features encoded above
            their_model = their_module.ipadapter_execute(patcher.clone(), their_adapter, cv, pos_embed=their_features,
                                                         weight=WEIGHT, **their_kw)[0]
        a, b = layer_outputs(ours_model, ours_pick), layer_outputs(their_model, theirs_pick)
        errs, active, middle_ours = [], 0, 0
        for s in specs:
            key = s.comfy_key
            if key[0] == "middle":
                middle_ours += int(not torch.equal(a[key], plain[key]))
                continue
            term = (b[key] - plain[key]).abs().max()
            active += int(term > 0)
            errs.append(float((a[key] - b[key]).abs().max() / b[key].abs().max()))
        result["cases"][name] = {"max_rel_err": max(errs), "layers_compared": len(errs), "layers_with_image_term": active,
                                 "middle_layers_changed_by_ours": middle_ours}
        worst = max(worst, max(errs))
        print(name, result["cases"][name], file=sys.stderr, flush=True)
        del ours_model, their_model, a, b  # the pack rebuilds its adapter per call: free it before the next
        gc.collect()
    result["worst_rel_err"] = worst
    result["n_cases"] = len(cases)
    return result


if __name__ == "__main__":
    fam, out = sys.argv[1], sys.argv[2]
    print("RESULT " + json.dumps(main(fam, out)))
