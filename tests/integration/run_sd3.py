"""The SD3.5 IP-Adapter (InstantX) inside a real ComfyUI (COMFYUI_PATH):

    python tests/integration/run_sd3.py exact|detect|workflow OUT_DIR

exact: the host's own MMDiT at reduced width (2 joint blocks of 128, RMSNorm on Q/K), weights converted from a
random diffusers SD3Transformer2DModel by the host's converter and detected by the host as SD3. Calls go through
the model's apply_model (where our wrapper reads the timestep), as the sampler makes them. With the adapter applied
by our Apply node, one call equals diffusers' SD3 transformer with the same adapter loaded by diffusers' own loader
(IPAdapterTimeImageProjection + SD3IPAdapterJointAttnProcessor2_0), per item and with a CFG batch; weight 0,
outside start/end and an all-zero mask are bit-identical to the unpatched model; stacking and the once-per-call
resampler are counted; another pack's block patch is wrapped; other families refused.
detect: SD3.5 Large's real widths (2432, 38 heads; 1 joint block, bf16) detected by the host and patched by a
real-width adapter file through Load IPAdapter, with SigLIP so400m-wide 729-token features.
workflow: example_workflows/ipadapter_sd35.json validated and executed, loaders swapped for small random models.
Prints `RESULT <json>`.
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
ENC, TOKENS = 48, 8  # a small encoder width (no released encoder has it: no token-count check) and token count


def _adapter(seed, blocks=2, encoder_width=ENC):
    sd3 = comfy_host.pack_module("ip_core.families.sd3")
    a = sd3.SD3IPAdapter(sd3.make_sd3_config(blocks, 128, encoder_width, TOKENS, resampler_dim=128, depth=4, heads=2, timestep_in_dim=32))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in a.named_parameters():  # norm weights near 1, as trained ones are
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if name.endswith(("norm_q.weight", "norm_k.weight", "norm_ip_k.weight")) else 0.0))
    return a.eval()


def _apply_model(patcher, x, sigma, context, y, cond_or_uncond=(0,)):
    """One model call as the sampler makes it (samplers.py _calc_cond_batch: transformer_options with the
    patcher's patches and wrappers, cond_or_uncond, sigmas) through BaseModel.apply_model; returns the diffusion
    model's output (apply_model returns the denoised latent x - sigma * output for SD3's flow sampling)."""
    options = dict(patcher.model_options.get("transformer_options", {}))
    options.update(cond_or_uncond=list(cond_or_uncond),
                   sigmas=sigma, wrappers=patcher.wrappers)
    with torch.no_grad():
        denoised = patcher.model.apply_model(x, sigma, c_crossattn=context, y=y, transformer_options=options)
    return (x - denoised) / sigma.reshape(-1, 1, 1, 1)


def _sd3_blocks(patched):
    return patched.model_options["transformer_options"]["patches_replace"]["dit"]


def _branches(patched):
    return {id(b): b for p in _sd3_blocks(patched).values() for b in p.branches}


def exact(out_dir):
    host_nodes = comfy_host.boot(COMFY)
    nodes = comfy_host.load_pack(host_nodes, os.path.join(out_dir, "ipadapter"))
    embeds_mod = comfy_host.pack_module("ip_core.embeds")
    loaded_cls = comfy_host.pack_module("nodes.common").LoadedAdapter
    ref, plain = comfy_host.small_sd3(seed=1)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 16, 8, 6, generator=g)
    context, y = torch.randn(2, 7, 32, generator=g), torch.randn(2, 24, generator=g)
    sigma = torch.tensor([0.6, 0.6])

    def reference(features=None):
        kw = {} if features is None else {"joint_attention_kwargs": {"ip_adapter_image_embeds": features}}
        with torch.no_grad():
            return ref(hidden_states=x, encoder_hidden_states=context, pooled_projections=y, timestep=sigma * 1000, **kw).sample

    def rel(a, b):
        return float((a - b).norm() / b.norm())

    result = {}
    base = _apply_model(plain, x, sigma, context, y)
    result["unpatched_rel_err"] = rel(base, reference())

    a = _adapter(3)
    loaded = loaded_cls(a, "ip-adapter.bin")
    ref._load_ip_adapter_weights({"image_proj": dict(a.image_proj.state_dict()), "ip_adapter": dict(a.ip_layers.state_dict())},
                                 low_cpu_mem_usage=False)
    for proc in ref.attn_processors.values():
        proc.scale = 0.7
    apply = nodes["IPAApplyAdapter"]()
    # one reference per item (combine batch), weight 0.7
    features = torch.randn(2, 20, ENC, generator=g)
    per_item = embeds_mod.build_image_prompt(a, features, torch.zeros_like(features), combine="batch")
    patched = apply.apply(plain, loaded, per_item, 0.7, 0.0, 1.0)[0]
    counted = []
    hook = a.image_proj.register_forward_hook(lambda *args: counted.append(1))
    out = _apply_model(patched, x, sigma, context, y)
    result["resampler_runs_per_call"] = len(counted)
    result["per_item_rel_err"] = rel(out, reference(features))
    result["changes_output"] = float((out - base).abs().max())
    result["patched_keys"] = sorted(map(list, _sd3_blocks(patched)))
    result["calls_per_call"] = sum(b.calls for b in _branches(patched).values())
    # the adapter's weights are a host model: the patches name it (model_patches_models), load_models_gpu loads it
    # with the diffusion model (as a ControlNet's), and the output is the same whoever placed the weights
    import comfy.model_management as mm

    managed = list({id(m): m for m in patched.model_patches_models()}.values())  # every patched block names it
    mm.load_models_gpu([patched])
    in_memory = [m.model for m in mm.current_loaded_models]
    result["managed_models"] = [type(m).__name__ for m in managed]
    result["managed_is_the_adapter"] = len(managed) == 1 and managed[0].model is a  # fp32 model: no copy
    result["managed_loaded_with_model"] = any(m is managed[0] for m in in_memory) and any(m is patched for m in in_memory)
    result["after_load_identical"] = bool(torch.equal(_apply_model(patched, x, sigma, context, y), out))
    # a CFG batch (cond chunk, uncond chunk): the uncond chunk reads zero features (diffusers' SD3 pipeline)
    one = embeds_mod.build_image_prompt(a, features[:1], embeds_mod.unconditional_features(a.config, features[:1]))
    cfg = _apply_model(apply.apply(plain, loaded, one, 0.7, 0.0, 1.0)[0], x, sigma, context, y, cond_or_uncond=(0, 1))
    result["cfg_rel_err"] = rel(cfg, reference(torch.cat([features[:1], torch.zeros_like(features[:1])])))
    # weight 0, outside the window, an all-zero mask: the unpatched model bit for bit; all ones = no mask
    result["weight0_identical"] = bool(torch.equal(_apply_model(apply.apply(plain, loaded, one, 0.0, 0.0, 1.0)[0], x, sigma, context, y), base))
    result["outside_window_identical"] = bool(torch.equal(_apply_model(apply.apply(plain, loaded, one, 0.7, 0.9, 1.0)[0], x, sigma, context, y), base))
    free = _apply_model(apply.apply(plain, loaded, one, 0.7, 0.0, 1.0)[0], x, sigma, context, y)
    ones = _apply_model(apply.apply(plain, loaded, one, 0.7, 0.0, 1.0, attn_mask=torch.ones(1, 64, 48))[0], x, sigma, context, y)
    zeros = _apply_model(apply.apply(plain, loaded, one, 0.7, 0.0, 1.0, attn_mask=torch.zeros(1, 64, 48))[0], x, sigma, context, y)
    result["mask_ones_identical"] = bool(torch.equal(ones, free))
    result["mask_zeros_identical_to_unpatched"] = bool(torch.equal(zeros, base))
    # a half mask: the left half of the image moves, the right half stays as unpatched (up to the attention's mixing)
    half = torch.zeros(1, 64, 48)
    half[:, :, :24] = 1
    masked = _apply_model(apply.apply(plain, loaded, one, 0.7, 0.0, 1.0, attn_mask=half)[0], x, sigma, context, y)
    result["half_mask_between"] = float((masked - base).abs().max()) > 0 and not torch.equal(masked, free)
    # stacked: a second adapter on the patched model; each adapter's resampler once per call, 2 x 2 terms
    b2 = _adapter(4)
    e2 = embeds_mod.build_image_prompt(b2, torch.randn(1, 20, ENC, generator=g), torch.zeros(1, 20, ENC))
    stacked = apply.apply(patched, loaded_cls(b2, "second.bin"), e2, 0.5, 0.0, 1.0)[0]
    before = {i: b.calls for i, b in _branches(stacked).items()}
    counted.clear()
    hook2 = b2.image_proj.register_forward_hook(lambda *args: counted.append(2))
    stacked_out = _apply_model(stacked, x, sigma, context, y)
    result["stacked_calls_per_call"] = sum(b.calls - before[i] for i, b in _branches(stacked).items())
    result["stacked_resampler_runs"] = sorted(counted)
    result["stacked_changes_output"] = float((stacked_out - out).abs().max())
    hook.remove()
    hook2.remove()
    # another pack's block replacement at the same key is wrapped (it runs, ours runs inside it)
    foreign, seen = comfy_host.foreign_block_patch()
    other = plain.clone()
    other.set_model_patch_replace(foreign, "dit", "double_block", 0)
    wrapped = _apply_model(apply.apply(other, loaded, per_item, 0.7, 0.0, 1.0)[0], x, sigma, context, y)
    result["foreign_patch_calls"] = len(seen)
    result["foreign_wrapped_identical"] = bool(torch.equal(wrapped, out))
    # other families refused, naming both
    sd15 = comfy_host.pack_module("ip_core.adapter").IPAdapter(comfy_host.pack_module("ip_core.config").make_config(
        "base", comfy_host.pack_module("ip_core.layers").layer_specs("sd15"), 768, 1024))
    sd_embeds = embeds_mod.build_image_prompt(sd15, torch.randn(1, 1024), torch.zeros(1, 1024))
    for name, model, adapter, e in (("sd_on_sd3", plain, loaded_cls(sd15, "sd15.bin"), sd_embeds),
                                    ("sd3_on_flux", comfy_host.host_flux(comfy_host.small_flux_diffusers(seed=1).state_dict()), loaded, one)):
        try:
            apply.apply(model, adapter, e, 1.0, 0.0, 1.0)
            result[name] = "accepted"
        except Exception as err:  # noqa: BLE001 (the message is the result)
            result[name] = f"{type(err).__name__}: {err}"
    for name, kw in (("kv_scaling", {"embeds_scaling": "K+V"}), ("style_transfer", {"weight_type": "style transfer"}),
                     ("legacy", {"legacy": True})):
        try:
            apply.apply(plain, loaded, one, 1.0, 0.0, 1.0, **kw)
            result[name] = "accepted"
        except Exception as err:  # noqa: BLE001
            result[name] = f"{type(err).__name__}: {err}"
    # a block whose Q norm has a zero weight: the raw Q cannot be recovered from the host's normed one
    ln_q = plain.get_model_object("diffusion_model").joint_blocks[1].x_block.attn.ln_q
    kept = ln_q.weight.detach().clone()
    with torch.no_grad():
        ln_q.weight[3] = 0.0
    try:
        apply.apply(plain, loaded, one, 1.0, 0.0, 1.0)
        result["zero_norm_weight"] = "accepted"
    except Exception as err:  # noqa: BLE001
        result["zero_norm_weight"] = f"{type(err).__name__}: {err}"
    with torch.no_grad():
        ln_q.weight.copy_(kept)
    # a real-width (SD3.5 Large) adapter on this 128-wide model
    sd3 = comfy_host.pack_module("ip_core.families.sd3")
    with torch.device("meta"):
        large = sd3.SD3IPAdapter(sd3.make_sd3_config(38))
    try:
        apply.apply(plain, loaded_cls(large, "ip-adapter-large.bin"), embeds_mod.ImagePromptEmbeds(
            torch.zeros(1, 729, 1152), torch.zeros(1, 729, 1152), large.config.signature, large.config.description), 1.0, 0.0, 1.0)
        result["large_on_small"] = "accepted"
    except Exception as err:  # noqa: BLE001
        result["large_on_small"] = f"{type(err).__name__}: {err}"
    print("RESULT " + json.dumps(result))


def _real_width_sd3(num_blocks=1, seed=0):
    """The host's SD3 class (supported_models.SD3 -> model_base.SD3 -> mmdit.py) at SD3.5 Large's widths (depth 38:
    2432 wide, 38 heads of 64, RMSNorm on Q/K, context 4096, pooled 2048) with `num_blocks` joint blocks (the host
    detects 38 from a real file's keys; one keeps this test's memory at ~0.5 GB), random bf16 weights."""
    import comfy.model_patcher
    import comfy.supported_models

    unet_config = {"in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 38, "num_blocks": num_blocks,
                   "input_size": None, "adm_in_channels": 2048, "pos_embed_max_size": 16, "num_patches": 256,
                   "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 2432}},
                   "qk_norm": "rms", "pos_embed_scaling_factor": None, "x_block_self_attn_layers": []}
    config = comfy.supported_models.SD3(unet_config)
    config.set_inference_dtype(torch.bfloat16, None)
    model = config.get_model({})
    g = torch.Generator().manual_seed(seed)
    # the host's layers skip weight init (comfy.ops.disable_weight_init): every tensor is filled here
    sd = {k: (torch.randn(v.shape, generator=g) * (0.02 if v.ndim > 1 else 0.1) + (1.0 if ".ln_" in k else 0.0)).to(v.dtype)
          for k, v in model.diffusion_model.state_dict().items()}
    model.diffusion_model.load_state_dict(sd)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def detect(out_dir):
    """Real widths: a SD3.5-Large-shaped adapter file (1 joint block) read by Load IPAdapter; SigLIP so400m's
    penultimate hidden states from the host's SigLIP (384 px, 729 tokens; 2 layers) through Encode Image Prompt
    equal transformers' hidden_states[-2] on SiglipImageProcessor's pixels; Apply on the host's SD3 class at SD3.5
    Large's widths: the block patched, finite, weight 0 bit-identical; a ViT-H encoder refused."""
    from PIL import Image
    try:  # transformers 5: the PIL processor; transformers 4: SiglipImageProcessor is the PIL one
        from transformers import SiglipImageProcessorPil as SiglipImageProcessor
    except ImportError:
        from transformers import SiglipImageProcessor

    host_nodes = comfy_host.boot(COMFY)
    adapters = os.path.join(out_dir, "ipadapter")
    os.makedirs(adapters, exist_ok=True)
    nodes = comfy_host.load_pack(host_nodes, adapters)
    sd3 = comfy_host.pack_module("ip_core.families.sd3")
    a = sd3.SD3IPAdapter(sd3.make_sd3_config(1))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in a.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02 + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    comfy_host.pack_module("ip_core.adapter").save_adapter(a.to(torch.bfloat16), os.path.join(adapters, "ip-adapter.bin"))
    del a
    loaded = nodes["IPALoadAdapter"]().load("ip-adapter.bin")
    result = {"loaded_text": loaded["ui"]["text"][0]}
    adapter = loaded["result"][0]
    hf, _, siglip, _ = comfy_host.small_siglip(out_dir, image_size=384)
    pixels = (torch.rand(1, 300, 420, 3, generator=g) * 255).round() / 255
    (embeds,) = nodes["IPAEncodeImagePrompt"]().encode(adapter, siglip, pixels, crop="squash")
    image = Image.fromarray((pixels[0] * 255).round().byte().numpy())
    with torch.no_grad():
        want = hf(pixel_values=SiglipImageProcessor(size={"height": 384, "width": 384})(images=image, return_tensors="pt").pixel_values,
                  output_hidden_states=True).hidden_states[-2]
    result["features_shape"] = list(embeds.cond_features.shape)
    result["features_rel_err"] = float((embeds.cond_features - want).norm() / want.norm())
    result["uncond_zero"] = bool(torch.equal(embeds.uncond, torch.zeros_like(embeds.uncond)))
    # enhance tiles on SigLIP's hidden states (patches only, no class token): the whole image and the merged grid
    (enhanced,) = nodes["IPAEncodeImagePrompt"]().encode(adapter, siglip, pixels, crop="squash", tiles="enhance", enhance_tiles=2)
    result["enhanced_shape"] = list(enhanced.cond.shape)
    try:
        nodes["IPAEncodeImagePrompt"]().encode(adapter, comfy_host.small_clip_vision(out_dir), pixels)
        result["vit_h"] = "accepted"
    except Exception as e:  # noqa: BLE001 (the message is the result)
        result["vit_h"] = f"{type(e).__name__}: {e}"
    model = _real_width_sd3()
    result["model_class"] = type(model.model).__name__
    apply = nodes["IPAApplyAdapter"]()
    x = torch.randn(1, 16, 8, 8, generator=g)
    context, y = torch.randn(1, 6, 4096, generator=g), torch.randn(1, 2048, generator=g)
    sigma = torch.tensor([0.8])
    base = _apply_model(model, x, sigma, context, y)
    patched = apply.apply(model, adapter, embeds, 1.0, 0.0, 1.0)[0]
    out = _apply_model(patched, x, sigma, context, y)
    result["patched_keys"] = sorted(map(list, _sd3_blocks(patched)))
    result["calls"] = sum(b.calls for b in _branches(patched).values())
    result["changes_output"] = float((out.float() - base.float()).abs().max())
    result["finite"] = bool(torch.isfinite(out).all())
    result["weight0_identical"] = bool(torch.equal(_apply_model(apply.apply(model, adapter, embeds, 0.0, 0.0, 1.0)[0], x, sigma, context, y), base))
    print("RESULT " + json.dumps(result))


def workflow(out_dir):
    """example_workflows/ipadapter_sd35.json through ComfyUI's validator and executor, its loaders swapped for the
    small SD3 model (host code), a small adapter file of its widths, the host's SigLIP at 384 px (2 layers) and a
    random TAESD-shaped 16-channel VAE; 128 px, 2 steps, cfg 4.5 (cond and uncond in one batch)."""
    import asyncio

    import numpy as np
    from PIL import Image

    host_nodes = comfy_host.boot(COMFY)
    adapters = os.path.join(out_dir, "ipadapter")
    os.makedirs(adapters, exist_ok=True)
    comfy_host.load_pack(host_nodes, adapters)
    # EmptySD3LatentImage lives in comfy_extras/nodes_sd3.py, loaded the way init_builtin_extra_nodes loads it
    assert asyncio.run(host_nodes.load_custom_node(os.path.join(COMFY, "comfy_extras", "nodes_sd3.py"), module_parent="comfy_extras"))

    comfy_host.pack_module("ip_core.adapter").save_adapter(_adapter(3, encoder_width=1152), os.path.join(adapters, "sd3.5-large-ip-adapter.bin"))
    _, model = comfy_host.small_sd3(seed=1)
    siglip = comfy_host.small_siglip(out_dir, image_size=384)[2]
    comfy_host.register_random_flux_loaders(host_nodes, model, comfy_host.small_flux_vae(), siglip)
    in_dir, out_images = comfy_host.use_io_folders(out_dir)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 260, 3), dtype=np.uint8)).save(os.path.join(in_dir, "example.png"))
    swap = {"CheckpointLoaderSimple": "TestRandomCheckpoint", "TripleCLIPLoader": "TestRandomTripleClip",
            "CLIPTextEncode": "TestRandomFluxText", "CLIPVisionLoader": "TestRandomClipVision"}
    patch_mmdit = comfy_host.pack_module("nodes.patch_mmdit")
    result = comfy_host.execute_example_workflow(host_nodes, "ipadapter_sd35.json", swap, "EmptySD3LatentImage", out_images,
                                                 patch_mmdit.SD3BlockPatch, lambda p: sum(b.calls for b in p.branches))
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    {"exact": exact, "detect": detect, "workflow": workflow}[sys.argv[1]](sys.argv[2])
