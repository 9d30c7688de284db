"""Flux IP-Adapters inside a real ComfyUI (COMFYUI_PATH):

    python tests/integration/run_flux.py exact|detect OUT_DIR

exact: the host's own Flux model code at reduced widths (hidden 64, 4 heads, context 32; 2 double + 2 single
blocks), weights converted from a random diffusers FluxTransformer2DModel by the host's converter. One denoising
call with the XLabs adapter applied by our Apply node equals diffusers' FluxIPAdapterAttnProcessor; weight 0 is
bit-identical to the unpatched model; every patched block is counted (XLabs: double blocks; InstantX: all).
detect: a real-width Flux (hidden 3072, context 4096; 1 double block, bf16 storage) that the host
detects from its keys, with a real-width XLabs adapter file loaded by Load IPAdapter: patched blocks counted,
weight 0 bit-identical, a SD adapter / model refused. Prints `RESULT <json>`.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_host  # noqa: E402

COMFY = os.environ["COMFYUI_PATH"]
SMALL = comfy_host.SMALL_FLUX


def _randomize(module, seed, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return module


def _call(patcher, x, sigma, context, y, cond_or_uncond=(0,)):
    """One call of the host's diffusion model with the patcher's transformer_options, as the sampler makes it
    (samplers.py _calc_cond_batch: one chunk per entry of cond_or_uncond, 0 = cond, 1 = uncond)."""
    options = dict(patcher.model_options.get("transformer_options", {}))
    options.update(cond_or_uncond=list(cond_or_uncond), sigmas=sigma, wrappers=patcher.wrappers)  # sampler_helpers.py merges wrappers
    with torch.no_grad():
        return patcher.model.diffusion_model(x, sigma, context, y=y, transformer_options=options)


class InstantXReference:
    """The InstantX processor (IPAFluxAttnProcessor2_0) as read, around diffusers' own Flux processor: queries
    after norm_q, before RoPE; K' RMS-normed per head (eps 1e-5); scale * SDPA added to the image part of the
    attention output before to_out (double blocks; to_out is linear, so its weight is applied to the term),
    to the whole joint sequence in single blocks."""

    def __init__(self, base, to_k_ip, to_v_ip, tokens, scale):
        self.base, self.wk, self.wv, self.tokens, self.scale = base, to_k_ip, to_v_ip, tokens, scale

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        import torch.nn.functional as F

        out = self.base(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        b, length, _ = hidden_states.shape
        heads, d = attn.heads, attn.head_dim
        q = attn.norm_q(attn.to_q(hidden_states).unflatten(-1, (-1, d))).transpose(1, 2)
        tokens = self.tokens.expand(b, -1, -1)
        k = F.linear(tokens, self.wk).view(b, -1, heads, d).transpose(1, 2)
        v = F.linear(tokens, self.wv).view(b, -1, heads, d).transpose(1, 2)
        k = (k * torch.rsqrt(k.float().pow(2).mean(-1, keepdim=True) + 1e-5)).to(k.dtype)
        ip = self.scale * F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, length, heads * d)
        if encoder_hidden_states is not None:
            return out[0] + F.linear(ip, attn.to_out[0].weight), out[1]
        return out + ip


def _pack(x):
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def exact(out_dir):
    host_nodes = comfy_host.boot(COMFY)
    nodes = comfy_host.load_pack(host_nodes, os.path.join(out_dir, "ipadapter"))
    flux = comfy_host.pack_module("ip_core.families.flux")
    embeds_mod = comfy_host.pack_module("ip_core.embeds")
    torch.manual_seed(0)
    ref = comfy_host.small_flux_diffusers(seed=1)
    plain = comfy_host.host_flux(ref.state_dict(), SMALL)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 16, 8, 6, generator=g)
    context, y = torch.randn(2, 7, 32, generator=g), torch.randn(2, 24, generator=g)
    sigma = torch.tensor([0.6, 0.6])
    h, w = 4, 3
    img_ids = torch.zeros(h, w, 3)
    img_ids[..., 1] = torch.arange(h)[:, None]
    img_ids[..., 2] = torch.arange(w)[None, :]
    img_ids, txt_ids = img_ids.reshape(-1, 3), torch.zeros(7, 3)

    def reference(**kw):
        with torch.no_grad():
            return ref(hidden_states=_pack(x), encoder_hidden_states=context, pooled_projections=y, timestep=sigma,
                       img_ids=img_ids, txt_ids=txt_ids, **kw).sample

    result = {}
    base = _call(plain, x, sigma, context, y)
    r0 = reference()
    result["unpatched_rel_err"] = float((_pack(base) - r0).norm() / r0.norm())

    # XLabs, 2 double blocks, 4 tokens; per-item references (batch 2), weight 0.7
    xl = _randomize(flux.FluxIPAdapter(flux.make_flux_config("flux-xlabs", 2, 0, 64, 32, 768, 4)), 3, 0.2).eval()
    loaded = comfy_host.pack_module("nodes.common").LoadedAdapter(xl, "xlabs-small.safetensors")
    features = torch.randn(2, 768, generator=g)
    embeds = embeds_mod.build_image_prompt(xl, features, torch.zeros_like(features), combine="batch", encoder_name="ViT-L/14")
    apply = nodes["IPAApplyAdapter"]()
    patched = apply.apply(plain, loaded, embeds, 0.7, 0.0, 1.0)[0]
    out = _call(patched, x, sigma, context, y)
    ref._load_ip_adapter_weights([{"image_proj": {k: v for k, v in xl.image_proj.state_dict().items()},
                                   "ip_adapter": dict(xl.ip_layers.state_dict())}])
    for proc in ref.attn_processors.values():
        if hasattr(proc, "scale"):
            proc.scale = [0.7]
    r1 = reference(joint_attention_kwargs={"ip_hidden_states": [embeds.cond]})
    result["xlabs_rel_err"] = float((_pack(out) - r1).norm() / r1.norm())
    result["xlabs_changes_output"] = float((out - base).abs().max())
    branches = {id(b): b for p in patched.model_options["transformer_options"]["patches_replace"]["dit"].values() for b, _ in p.branches}
    result["xlabs_patched_keys"] = sorted(map(list, patched.model_options["transformer_options"]["patches_replace"]["dit"]))
    result["xlabs_calls_per_call"] = sum(b.calls for b in branches.values())
    zero = apply.apply(plain, loaded, embeds, 0.0, 0.0, 1.0)[0]
    result["xlabs_weight0_identical"] = bool(torch.equal(_call(zero, x, sigma, context, y), base))
    window = apply.apply(plain, loaded, embeds, 0.7, 0.9, 1.0)[0]  # sigma 0.6 is before the last 10%
    result["xlabs_outside_window_identical"] = bool(torch.equal(_call(window, x, sigma, context, y), base))
    # per-item: the second item alone gives the same numbers as in the batch of two
    single = embeds_mod.build_image_prompt(xl, features[1:], torch.zeros_like(features[1:]), encoder_name="ViT-L/14")
    one = _call(apply.apply(plain, loaded, single, 0.7, 0.0, 1.0)[0], x[1:], sigma[1:], context[1:], y[1:])
    result["per_item_rel_err"] = float((one - out[1:]).norm() / one.norm())

    # a CFG batch (cond chunk, uncond chunk): the uncond chunk attends to the uncond tokens (the XLabs pack's
    # complaint: negatives never used), equal to a cond call with those tokens
    neg = embeds_mod.build_image_prompt(xl, features[:1], torch.randn(1, 768, generator=g), encoder_name="ViT-L/14")
    both = _call(apply.apply(plain, loaded, neg, 0.7, 0.0, 1.0)[0], x, sigma, context, y, cond_or_uncond=(0, 1))
    as_cond = embeds_mod.build_image_prompt(xl, neg.uncond_features, neg.uncond_features, encoder_name="ViT-L/14")
    alone_u = _call(apply.apply(plain, loaded, as_cond, 0.7, 0.0, 1.0)[0], x[1:], sigma[1:], context[1:], y[1:])
    alone_c = _call(apply.apply(plain, loaded, neg, 0.7, 0.0, 1.0)[0], x[:1], sigma[:1], context[:1], y[:1])
    result["cfg_uncond_rel_err"] = float((both[1:] - alone_u).norm() / alone_u.norm())
    result["cfg_cond_rel_err"] = float((both[:1] - alone_c).norm() / alone_c.norm())
    # another pack's block replacement at the same key is wrapped (it runs, ours runs inside it)
    foreign, seen = comfy_host.foreign_block_patch()
    other = plain.clone()
    other.set_model_patch_replace(foreign, "dit", "double_block", 0)
    wrapped = _call(apply.apply(other, loaded, embeds, 0.7, 0.0, 1.0)[0], x, sigma, context, y)
    result["foreign_patch_calls"] = len(seen)
    result["foreign_wrapped_identical"] = bool(torch.equal(wrapped, out))

    # InstantX, 2 double + 2 single blocks (heads of 16 at this width); stacked on the XLabs model
    ix = _randomize(flux.FluxIPAdapter(flux.make_flux_config("flux-instantx", 2, 2, 64, 32, 1152, 8, head_dim=16)), 4, 0.2).eval()
    li = comfy_host.pack_module("nodes.common").LoadedAdapter(ix, "instantx-small.bin")
    f2 = torch.randn(1, 1152, generator=g)
    e2 = embeds_mod.build_image_prompt(ix, f2, torch.zeros_like(f2), encoder_name="SigLIP so400m-patch14-384")
    stacked = apply.apply(patched, li, e2, 0.5, 0.0, 1.0)[0]
    dit = stacked.model_options["transformer_options"]["patches_replace"]["dit"]
    before = {id(b): b.calls for p in dit.values() for b, _ in p.branches}
    out2 = _call(stacked, x, sigma, context, y)
    after = {id(b): b for p in dit.values() for b, _ in p.branches}
    result["stacked_keys"] = sorted(map(list, dit))
    result["stacked_calls_per_call"] = sum(b.calls - before[i] for i, b in after.items())
    result["instantx_changes_output"] = float((out2 - out).abs().max())
    result["instantx_weight0_identical"] = bool(torch.equal(_call(apply.apply(plain, li, e2, 0.0, 0.0, 1.0)[0], x, sigma, context, y), base))
    # InstantX alone against the reference processor on diffusers' model
    from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

    procs = {}
    for name in ref.attn_processors:
        i = int(name.split(".")[1]) + (0 if name.startswith("transformer_blocks") else 2)
        kv = ix.ip_layers[str(i)]
        procs[name] = InstantXReference(FluxAttnProcessor(), kv.to_k_ip.weight, kv.to_v_ip.weight, e2.cond, 0.5)
    ref.set_attn_processor(procs)
    alone = _call(apply.apply(plain, li, e2, 0.5, 0.0, 1.0)[0], x, sigma, context, y)
    r2 = reference()
    result["instantx_rel_err"] = float((_pack(alone) - r2).norm() / r2.norm())
    result["instantx_alone_changes_output"] = float((alone - base).abs().max())
    # attn_mask: ones = no mask, zeros = no image prompt (both bit for bit); half a mask changes less
    for name, a, e in (("xlabs", loaded, embeds), ("instantx", li, e2)):
        free = _call(apply.apply(plain, a, e, 0.7, 0.0, 1.0)[0], x, sigma, context, y)
        ones = _call(apply.apply(plain, a, e, 0.7, 0.0, 1.0, attn_mask=torch.ones(1, 64, 48))[0], x, sigma, context, y)
        zeros = _call(apply.apply(plain, a, e, 0.7, 0.0, 1.0, attn_mask=torch.zeros(1, 64, 48))[0], x, sigma, context, y)
        result[f"{name}_mask_ones_identical"] = bool(torch.equal(ones, free))
        result[f"{name}_mask_zeros_identical_to_unpatched"] = bool(torch.equal(zeros, base)) if name == "xlabs" else \
            float((zeros - base).abs().max())  # InstantX: text rows of single blocks have no place under a mask
    # an SD adapter on Flux is refused, naming both
    sd15 = comfy_host.pack_module("ip_core.adapter").IPAdapter(comfy_host.pack_module("ip_core.config").make_config(
        "base", comfy_host.pack_module("ip_core.layers").layer_specs("sd15"), 768, 1024))
    sd_embeds = embeds_mod.build_image_prompt(sd15, torch.randn(1, 1024), torch.zeros(1, 1024))
    try:
        apply.apply(plain, comfy_host.pack_module("nodes.common").LoadedAdapter(sd15, "sd15.bin"), sd_embeds, 1.0, 0.0, 1.0)
        result["sd_on_flux"] = "accepted"
    except Exception as e:  # noqa: BLE001 (the message is the result)
        result["sd_on_flux"] = f"{type(e).__name__}: {e}"
    print("RESULT " + json.dumps(result))


def _real_width_flux_sd(seed=0):
    """A FLUX.1-dev-shaped state dict (the host's key names) with 1 double block and no single block (XLabs
    patches double blocks only; 1.1 GB less than a single block more), random bf16."""
    import comfy.ldm.flux.model
    import comfy.ops

    config = comfy_host.flux_config(SMALL, context_in_dim=4096, hidden_size=3072, num_heads=24, vec_in_dim=768, depth=1,
                  depth_single_blocks=0, axes_dim=[16, 56, 56], guidance_embed=True)
    config.pop("image_model")
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in comfy.ldm.flux.model.Flux(operations=comfy.ops.disable_weight_init, **config).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(s, generator=g) * (0.02 if len(s) > 1 else 0.1) + (1.0 if k.endswith(".scale") else 0.0)).to(torch.bfloat16)
            for k, s in shapes.items()}


def detect(out_dir):
    """Real widths: the host detects the model as Flux; Load IPAdapter reads a real-width XLabs file (1 block)."""
    from safetensors.torch import save_file

    host_nodes = comfy_host.boot(COMFY)
    import comfy.sd

    adapters = os.path.join(out_dir, "ipadapter")
    os.makedirs(adapters, exist_ok=True)
    nodes = comfy_host.load_pack(host_nodes, adapters)
    flux = comfy_host.pack_module("ip_core.families.flux")
    model = comfy.sd.load_diffusion_model_state_dict(_real_width_flux_sd(), model_options={"dtype": torch.bfloat16})
    result = {"unet_config": {k: model.model.model_config.unet_config.get(k) for k in
                              ("image_model", "hidden_size", "context_in_dim", "depth", "depth_single_blocks")}}
    xl = flux.FluxIPAdapter(flux.make_flux_config("flux-xlabs", 1, 0, num_tokens=16))
    g = torch.Generator().manual_seed(5)
    flat = {}
    with torch.no_grad():
        for k, v in xl.image_proj.state_dict().items():
            flat[f"ip_adapter_proj_model.{k}"] = (torch.randn(v.shape, generator=g) * 0.02 + (1.0 if k == "norm.weight" else 0.0)).to(torch.bfloat16)
        for k, v in xl.ip_layers.state_dict().items():
            i, name, part = k.split(".")
            flat[f"double_blocks.{i}.processor.ip_adapter_double_stream_{name[3]}_proj.{part}"] = (torch.randn(v.shape, generator=g) * 0.02).to(torch.bfloat16)
    del xl
    save_file(flat, os.path.join(adapters, "flux-ip-adapter-v2.safetensors"))
    loaded = nodes["IPALoadAdapter"]().load("flux-ip-adapter-v2.safetensors")
    result["loaded_text"] = loaded["ui"]["text"][0]
    adapter = loaded["result"][0]
    vit_l = comfy_host.small_clip_vision(out_dir, hidden=1024, projection=768)
    image = torch.rand(1, 96, 80, 3, generator=g)
    (embeds,) = nodes["IPAEncodeImagePrompt"]().encode(adapter, vit_l, image)
    vit_h = comfy_host.small_clip_vision(out_dir, hidden=1280, projection=1024)
    try:
        nodes["IPAEncodeImagePrompt"]().encode(adapter, vit_h, image)
        result["vit_h"] = "accepted"
    except Exception as e:  # noqa: BLE001 (the message is the result)
        result["vit_h"] = f"{type(e).__name__}: {e}"
    apply = nodes["IPAApplyAdapter"]()
    x = torch.randn(1, 16, 8, 8, generator=g)
    context, y = torch.randn(1, 6, 4096, generator=g), torch.randn(1, 768, generator=g)
    sigma = torch.tensor([0.8])
    base = _call(model, x, sigma, context, y)
    patched = apply.apply(model, adapter, embeds, 1.0, 0.0, 1.0)[0]
    dit = patched.model_options["transformer_options"]["patches_replace"]["dit"]
    out = _call(patched, x, sigma, context, y)
    result["patched_keys"] = sorted(map(list, dit))
    result["calls"] = sum(b.calls for p in dit.values() for b, _ in p.branches)
    result["changes_output"] = float((out.float() - base.float()).abs().max())
    result["finite"] = bool(torch.isfinite(out).all())
    result["weight0_identical"] = bool(torch.equal(_call(apply.apply(model, adapter, embeds, 0.0, 0.0, 1.0)[0], x, sigma, context, y), base))
    print("RESULT " + json.dumps(result))


def siglip(out_dir):
    """InstantX's encoder in the host: Load SigLIP Vision (the host's SigLIP model + the file's pooling head) ->
    Encode Image Prompt (squash) gives transformers' SiglipVisionModel pooler_output on SiglipImageProcessor's
    pixels; Apply on the small Flux runs in every block. ComfyUI's plain SigLIP is refused with the remedy."""
    from PIL import Image
    from safetensors.torch import save_file
    from transformers import SiglipVisionConfig, SiglipVisionModel
    try:  # transformers 5: the PIL processor (what InstantX's code ran: resize on the 8-bit PIL image)
        from transformers import SiglipImageProcessorPil as SiglipImageProcessor
    except ImportError:  # transformers 4: the PIL one is SiglipImageProcessor itself
        from transformers import SiglipImageProcessor

    host_nodes = comfy_host.boot(COMFY)
    adapters = os.path.join(out_dir, "ipadapter")
    os.makedirs(adapters, exist_ok=True)
    nodes = comfy_host.load_pack(host_nodes, adapters)
    import comfy.clip_vision
    import folder_paths

    # width 1152 (SigLIP so400m's, so the head's 16 heads are known), 2 layers, 56 px
    hf, sd, _, cfg = comfy_host.small_siglip(out_dir, image_size=56)
    cv_dir = os.path.join(out_dir, "clip_vision")
    os.makedirs(cv_dir, exist_ok=True)
    folder_paths.add_model_folder_path("clip_vision", cv_dir)
    save_file(sd, os.path.join(cv_dir, "siglip-so400m-small.safetensors"))
    json_path = os.path.join(out_dir, "siglip_small_56.json")

    def host_siglip(path=None):  # the host picks its json by layer count: a 2-layer model is built from ours
        cv = comfy.clip_vision.ClipVisionModel(json_path)
        cv.load_sd(dict(sd))
        return cv

    comfy_host.pack_module("nodes.host").load_clip_vision = host_siglip
    loader = host_nodes.NODE_CLASS_MAPPINGS["IPALoadSigLIPVision"]()
    (cv,) = loader.load("siglip-so400m-small.safetensors")
    save_file({k: v for k, v in sd.items() if ".head." not in k}, os.path.join(cv_dir, "sigclip_vision_patch14_384.safetensors"))
    try:
        loader.load("sigclip_vision_patch14_384.safetensors")
        no_head = "accepted"
    except Exception as e:  # noqa: BLE001 (the message is the result)
        no_head = f"{type(e).__name__}: {e}"
    flux = comfy_host.pack_module("ip_core.families.flux")
    ix = _randomize(flux.FluxIPAdapter(flux.make_flux_config("flux-instantx", 2, 2, 64, 32, 1152, 8, head_dim=16)), 4, 0.2).eval()
    li = comfy_host.pack_module("nodes.common").LoadedAdapter(ix, "ip-adapter.bin")
    g = torch.Generator().manual_seed(3)
    pixels = (torch.rand(1, 70, 90, 3, generator=g) * 255).round() / 255  # landscape: Pillow 12 and 13 agree (README)
    (embeds,) = nodes["IPAEncodeImagePrompt"]().encode(li, cv, pixels, crop="squash")
    image = Image.fromarray((pixels[0] * 255).round().byte().numpy())
    processor = SiglipImageProcessor(size={"height": 56, "width": 56})
    with torch.no_grad():
        ref = hf(pixel_values=processor(images=image, return_tensors="pt").pixel_values).pooler_output
    result = {"pooled_rel_err": float((embeds.cond_features - ref).norm() / ref.norm()), "no_head": no_head}
    with torch.no_grad():
        result["tokens_rel_err"] = float((embeds.cond - ix.project(ref)).norm() / embeds.cond.norm())
    try:
        nodes["IPAEncodeImagePrompt"]().encode(li, host_siglip(), pixels, crop="squash")
        result["plain_siglip"] = "accepted"
    except Exception as e:  # noqa: BLE001 (the message is the result)
        result["plain_siglip"] = f"{type(e).__name__}: {e}"
    model = comfy_host.host_flux(comfy_host.small_flux_diffusers(seed=1).state_dict())
    patched = nodes["IPAApplyAdapter"]().apply(model, li, embeds, 1.0, 0.0, 1.0)[0]
    x = torch.randn(1, 16, 8, 8, generator=g)
    out = _call(patched, x, torch.tensor([0.7]), torch.randn(1, 5, 32, generator=g), torch.randn(1, 24, generator=g))
    dit = patched.model_options["transformer_options"]["patches_replace"]["dit"]
    result["calls"] = sum({id(b): b.calls for p in dit.values() for b, _ in p.branches}.values())
    result["finite"] = bool(torch.isfinite(out).all())
    # where a difference comes from: the pixels, and the host's SigLIP tower vs transformers' on equal pixels
    preprocess = comfy_host.pack_module("ip_core.preprocess")
    ours = preprocess.renormalize(preprocess.preprocess_images(pixels, mode="squash", size=56), [0.5] * 3, [0.5] * 3)
    theirs = processor(images=image, return_tensors="pt").pixel_values
    result["pixels_max_diff"] = float((ours - theirs).abs().max())
    with torch.no_grad():
        host_pooled = getattr(cv, "ipadapter_pooling_head")(cv.model(pixel_values=theirs, intermediate_output=-2)[2])
        result["tower_rel_err"] = float((host_pooled - ref).norm() / ref.norm())
        # part of the tower's difference: the host stores its CLIP vision weights in its text-encoder dtype, and its
        # SigLIP layers use LayerNorm's default eps 1e-5 (comfy/clip_model.py; SigLIP's is 1e-6); transformers'
        # tower made alike (weights rounded, computed in fp32 as the host's manual cast does, eps 1e-5), reported
        result["host_weight_dtype"] = str(cv.dtype).replace("torch.", "")
        rounded = SiglipVisionModel(SiglipVisionConfig(**{**cfg.to_dict(), "layer_norm_eps": 1e-5})).eval()
        rounded.head.layernorm.eps = 1e-6  # the head is ours, with SigLIP's own eps
        rounded.load_state_dict({k: v.to(cv.dtype).float() for k, v in hf.state_dict().items()})
        ref_rounded = rounded(pixel_values=theirs).pooler_output
        result["tower_rel_err_as_host"] = float((host_pooled - ref_rounded).norm() / ref_rounded.norm())
    print("RESULT " + json.dumps(result))


def workflow(out_dir):
    """example_workflows/ipadapter_flux_xlabs.json through ComfyUI's validator and executor, its loaders swapped
    for the small Flux (host code), a small XLabs file of the same widths, a small ViT-L CLIP vision model and a
    random TAESD-shaped Flux VAE; 128 px, 2 steps. The image branch must run in both double blocks every step."""
    import asyncio

    import numpy as np
    from PIL import Image

    host_nodes = comfy_host.boot(COMFY)
    adapters = os.path.join(out_dir, "ipadapter")
    os.makedirs(adapters, exist_ok=True)
    comfy_host.load_pack(host_nodes, adapters)
    # FluxGuidance lives in comfy_extras/nodes_flux.py, loaded the way init_builtin_extra_nodes loads it
    assert asyncio.run(host_nodes.load_custom_node(os.path.join(COMFY, "comfy_extras", "nodes_flux.py"), module_parent="comfy_extras"))

    flux = comfy_host.pack_module("ip_core.families.flux")
    xl = _randomize(flux.FluxIPAdapter(flux.make_flux_config("flux-xlabs", 2, 0, 64, 32, 768, 16)), 3, 0.2)
    comfy_host.pack_module("ip_core.adapter").save_adapter(xl, os.path.join(adapters, "flux-ip-adapter-v2.safetensors"))
    model = comfy_host.host_flux(comfy_host.small_flux_diffusers(seed=1).state_dict())
    comfy_host.register_random_flux_loaders(host_nodes, model, comfy_host.small_flux_vae(),
                                            comfy_host.small_clip_vision(out_dir, hidden=1024, projection=768))
    in_dir, out_images = comfy_host.use_io_folders(out_dir)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 260, 3), dtype=np.uint8)).save(os.path.join(in_dir, "example.png"))
    swap = {"UNETLoader": "TestRandomUNet", "DualCLIPLoader": "TestRandomFluxClip", "CLIPTextEncode": "TestRandomFluxText",
            "VAELoader": "TestRandomVAE", "CLIPVisionLoader": "TestRandomClipVision"}
    patch_dit = comfy_host.pack_module("nodes.patch_dit")
    result = comfy_host.execute_example_workflow(host_nodes, "ipadapter_flux_xlabs.json", swap, "EmptyLatentImage", out_images,
                                                 patch_dit.FluxBlockPatch, lambda p: sum(b.calls for b, _ in p.branches))
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    {"exact": exact, "detect": detect, "workflow": workflow, "siglip": siglip}[sys.argv[1]](sys.argv[2])
