"""Boot a real ComfyUI (COMFYUI_PATH) on the CPU and build random full-shape SD1.5 models for it.

Used by run_in_comfy.py (the integration scenarios, run in a subprocess so ComfyUI's top-level `nodes`
module never meets this repo's `nodes` package) and by benchmarks/bench_apply.py. No weights are
downloaded or committed: every model is random, built here from diffusers/transformers configs.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


# Example workflows that need other models than the SD1.5 run's: the scenario that executes each instead (by a
# word of the file name). run_in_comfy.py's `workflows` executes all the others.
EXECUTED_ELSEWHERE = {
    "faceid": "run_faceid_in_comfy.py (a face analyzer stand-in)",
    "flux": "run_flux.py (small Flux stand-ins)",
    "kolors": "run_kolors.py (Kolors text conditioning, ViT-L/14-336)",
    "sd35": "run_sd3.py (a small MMDiT, SigLIP at 384 px)",
}


def executed_elsewhere(stem: str) -> bool:
    return any(word in stem for word in EXECUTED_ELSEWHERE)


def boot(comfy_path: str, cpu: bool = True):
    """Import the host headless, on the CPU unless told otherwise (REFERENCE.md section 6).
    Returns ComfyUI's `nodes` module."""
    sys.path.insert(0, comfy_path)
    sys.argv = [sys.argv[0], "--cpu"] if cpu else [sys.argv[0]]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.cli_args  # noqa: F401  (parses --cpu)
    import nodes  # ComfyUI's nodes.py

    return nodes


def load_pack(host_nodes, extra_ipadapter_dir: str | None = None):
    """Load this repo as a custom node pack, as ComfyUI does at startup; returns the pack's node classes.

    extra_ipadapter_dir is registered first, the way extra_model_paths.yaml entries are (before custom nodes).
    """
    import folder_paths

    if extra_ipadapter_dir:
        folder_paths.add_model_folder_path("ipadapter", extra_ipadapter_dir)
    ok = asyncio.run(host_nodes.load_custom_node(str(REPO)))
    if not ok:
        raise RuntimeError(f"ComfyUI failed to load the pack at {REPO}")
    return {k: host_nodes.NODE_CLASS_MAPPINGS[k] for k in ("IPALoadAdapter", "IPAEncodeImagePrompt", "IPAApplyAdapter", "IPAInspectAdapter")}


def boot_with_both_packs(comfy_path: str, out_dir: str):
    """The host booted, this pack loaded with OUT_DIR/ipadapter as an adapter folder, the widely used pack beside
    it: (host nodes module, our node classes, the pack's node classes, the pack's IPAdapterPlus module)."""
    host_nodes = boot(comfy_path)
    adapters = os.path.join(out_dir, "ipadapter")
    os.makedirs(adapters, exist_ok=True)
    ours = load_pack(host_nodes, adapters)
    ref_classes, ref_module = load_reference_pack(host_nodes)
    return host_nodes, ours, ref_classes, ref_module


SHARED_HOSTS = Path(os.environ.get("IPA_HOSTS_DIR") or REPO.parent / "shared" / "hosts")  # .ci/run sets IPA_HOSTS_DIR


def reference_pack_dir() -> Path:
    """The widely used pack (ComfyUI_IPAdapter_plus), the reference its options are tested against.

    IPADAPTER_PLUS_PATH if set, else ../shared/hosts/ComfyUI_IPAdapter_plus-*.tar.gz extracted once into the
    temp folder. Never copied into this repo: its code is only loaded, by the host, beside ours.
    """
    import glob
    import tarfile
    import tempfile

    given = os.environ.get("IPADAPTER_PLUS_PATH")
    if given:
        return Path(given)
    archives = sorted(glob.glob(str(SHARED_HOSTS / "ComfyUI_IPAdapter_plus-*.tar.gz")))
    if not archives:
        raise RuntimeError(f"no ComfyUI_IPAdapter_plus archive in {SHARED_HOSTS}; set IPADAPTER_PLUS_PATH")
    target = Path(tempfile.gettempdir()) / ("ipa-reference-" + Path(archives[-1]).name[: -len(".tar.gz")]) / "ComfyUI_IPAdapter_plus"
    if not (target / "IPAdapterPlus.py").exists():
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archives[-1]) as tar:
            tar.extractall(target, filter="data")
    return target


def load_reference_pack(host_nodes):
    """Load the widely used pack into the booted host as a second custom node pack (after ours, as a user
    with both installed has it). Returns (its node classes by id, its IPAdapterPlus module)."""
    path = reference_pack_dir()
    before = dict(host_nodes.NODE_CLASS_MAPPINGS)
    ok = asyncio.run(host_nodes.load_custom_node(str(path)))
    if not ok:
        raise RuntimeError(f"ComfyUI failed to load the reference pack at {path}")
    # new ids, and ours that it took over (our drop-in ids, registered first, are overwritten by the host's loader)
    added = {k: v for k, v in host_nodes.NODE_CLASS_MAPPINGS.items() if before.get(k) is not v}
    module = sys.modules[added["IPAdapter"].__module__]
    return added, module


def register_random_loaders(host_nodes, model, clip, vae, clip_vision=None) -> None:
    """Test stand-ins for Load Checkpoint / Load CLIP Vision returning the given random host objects, registered
    as TestRandomCheckpoint / TestRandomClipVision: workflows under test have their loader nodes retyped to them
    (a random full-shape model cannot go through the host's file loaders without writing GBs)."""

    class TestRandomCheckpoint:
        RETURN_TYPES, FUNCTION, CATEGORY = ("MODEL", "CLIP", "VAE"), "load", "test"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"ckpt_name": ("STRING", {})}}

        def load(self, ckpt_name):
            return (model, clip, vae)

    class TestRandomClipVision:
        RETURN_TYPES, FUNCTION, CATEGORY = ("CLIP_VISION",), "load", "test"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"clip_name": ("STRING", {})}}

        def load(self, clip_name):
            return (clip_vision,)

    host_nodes.NODE_CLASS_MAPPINGS["TestRandomCheckpoint"] = TestRandomCheckpoint
    host_nodes.NODE_CLASS_MAPPINGS["TestRandomClipVision"] = TestRandomClipVision


def use_io_folders(out_dir: str) -> tuple:
    """The host's input / output folders inside out_dir (created): (input folder, output folder)."""
    import folder_paths

    in_dir, out_images = os.path.join(out_dir, "input"), os.path.join(out_dir, "output")
    os.makedirs(in_dir, exist_ok=True)
    os.makedirs(out_images, exist_ok=True)
    folder_paths.set_input_directory(in_dir)
    folder_paths.set_output_directory(out_images)
    return in_dir, out_images


def tiny_patcher():
    """A real ModelPatcher around a module that only has model_sampling: enough for the Apply nodes of both packs
    (they register attn2 patches and read sigmas), without building a UNet."""
    import comfy.model_patcher
    import comfy.model_sampling

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model_sampling = comfy.model_sampling.ModelSamplingDiscrete()

    return comfy.model_patcher.ModelPatcher(Tiny(), load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def pack_module(name: str):
    """A module of the pack as ComfyUI imported it (e.g. "nodes.patch")."""
    for mod_name, mod in sys.modules.items():
        if mod_name.endswith("." + name) and str(REPO) in str(getattr(mod, "__file__", "")):
            return mod
    raise KeyError(name)


def sd15_unet(seed: int = 0):
    """Random diffusers UNet with the SD1.5 shape (REFERENCE.md section 6)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8).eval()


SDXL_UNET = dict(
    block_out_channels=(320, 640, 1280), cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)


def sdxl_unet(seed: int = 0):
    """Random diffusers UNet with the full SDXL shape (2.6B parameters), stored in fp16 (5.1 GB; fp32 would be
    10 GB). Built in fp16 directly so the fp32 copy never exists. Run it with compute_in_fp32()."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        return UNet2DConditionModel(**SDXL_UNET).eval().requires_grad_(False)
    finally:
        torch.set_default_dtype(default)


def compute_in_fp32(module):
    """Weights stay stored as they are; each layer computes with an fp32 copy of its own weights for the
    duration of its call. ComfyUI does the same with fp16 weights on the CPU (comfy.ops manual_cast)."""
    def before(m, args):
        m._stored = [(p, p.data) for p in m.parameters(recurse=False)]
        for p, data in m._stored:
            p.data = data.float()

    def after(m, args, out):
        for p, data in m._stored:
            p.data = data
        del m._stored

    for m in module.modules():
        if next(m.parameters(recurse=False), None) is not None:
            m.register_forward_pre_hook(before)
            m.register_forward_hook(after)
    return module


def comfy_model_from_unet(unet, dtype=None, share_weights: bool = False):
    """The host's model for a diffusers UNet, through its own loader (format and family detection included).

    dtype: the host's storage dtype (model_options["dtype"]); fp16 on the CPU makes the host compute in fp32
    with per-layer casts. share_weights: afterwards the diffusers UNet's parameters point at the host's
    tensors (the same values), so a full SDXL UNet is held once, not twice.
    """
    import comfy.sd
    import comfy.utils

    model = comfy.sd.load_diffusion_model_state_dict(unet.state_dict(), model_options={} if dtype is None else {"dtype": dtype})
    if model is None:
        raise RuntimeError("ComfyUI did not recognise the diffusers UNet state dict")
    if share_weights:
        host_params = dict(model.model.diffusion_model.state_dict(keep_vars=True))
        names = comfy.utils.unet_to_diffusers(model.model.model_config.unet_config)
        own = dict(unet.named_parameters())
        for diffusers_name, host_name in names.items():
            if diffusers_name in own:
                host = host_params[host_name]
                if host.shape != own[diffusers_name].shape or not torch.equal(host, own[diffusers_name]):
                    raise RuntimeError(f"{diffusers_name} -> {host_name}: the host holds other values")
                own.pop(diffusers_name).data = host.data
        if own:
            raise RuntimeError(f"{len(own)} diffusers parameters have no host counterpart, e.g. {sorted(own)[:3]}")
    return model


def small_clip_vision(tmp_dir: str, hidden: int = 1280, projection: int = 1024, layers: int = 2, seed: int = 0,
                      image_size: int = 224):
    """ComfyUI's own ClipVisionModel class with a ViT-H-wide but 2-layer config and random weights.

    ComfyUI picks its config file from the layer count of a loaded file, so a small model cannot go
    through CLIPVisionLoader; the class, preprocessing and forward pass are the host's own.
    """
    import comfy.clip_vision
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = {
        "attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "gelu", "hidden_size": hidden, "image_size": image_size,
        "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": hidden * 4, "layer_norm_eps": 1e-5,
        "model_type": "clip_vision_model", "num_attention_heads": 16, "num_channels": 3, "num_hidden_layers": layers,
        "patch_size": 14, "projection_dim": projection, "torch_dtype": "float32",
    }
    path = os.path.join(tmp_dir, f"clip_vision_small_{hidden}_{image_size}.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    torch.manual_seed(seed)
    hf = CLIPVisionModelWithProjection(CLIPVisionConfig(**{k: v for k, v in cfg.items() if k != "torch_dtype"}))
    cv = comfy.clip_vision.ClipVisionModel(path)
    missing, unexpected = cv.load_sd(hf.state_dict())
    if [k for k in missing if "position_ids" not in k]:
        raise RuntimeError(f"clip vision weights missing: {missing[:5]}")
    return cv


def save_faceid_adapter(path: str | None, variant: str = "faceid", rank: int = 16, seed: int = 0):
    """A random SD1.5 FaceID adapter, saved as a file in the released format (.bin) unless path is None: "faceid" or
    "faceid-plus" (ViT-H CLIP part), with its own LoRA of the given rank (released: 128). Returns the adapter."""
    from ip_core.adapter import IPAdapter, save_adapter
    from ip_core.config import make_config
    from ip_core.layers import layer_specs

    torch.manual_seed(seed)
    kw = {"clip_width": 1280} if variant == "faceid-plus" else {}
    adapter = IPAdapter(make_config(variant, layer_specs("sd15"), 768, 512, lora_rank=rank, **kw))
    if path is not None:
        save_adapter(adapter, path, format="bin")
    return adapter


def save_faceid_lora_file(path: str, adapter):
    """A FaceID release's separate LoRA file (models/loras) in the kohya layout the host's LoRA loader reads
    (lora_unet_<diffusers name>.lora_down / lora_up / alpha = rank, i.e. scale 1), holding `adapter`'s own LoRA."""
    from safetensors.torch import save_file

    from ip_core.lora import lora_targets

    sd = {}
    for t in lora_targets(adapter):
        key = "lora_unet_" + t.diffusers_key[:-len(".weight")].replace(".", "_")
        down, up = t.lora.down.weight.detach(), t.lora.up.weight.detach()
        sd[key + ".lora_down.weight"], sd[key + ".lora_up.weight"] = down.contiguous(), up.contiguous()
        sd[key + ".alpha"] = torch.tensor(float(down.shape[0]))
    save_file(sd, path)
    return len(sd) // 3


def sd15_clip_and_vae(seed: int = 0):
    """Random CLIP-L text encoder (ComfyUI's SD1 tokenizer ships with the host) and SD VAE, as host objects."""
    import comfy.sd
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, max_position_embeddings=77, vocab_size=49408,
                                        projection_dim=768, hidden_act="quick_gelu"))
    sd = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in text.state_dict().items()}  # transformers 5 drops the prefix
    sd["text_projection.weight"] = torch.randn(768, 768) * 768 ** -0.5
    clip = comfy.sd.load_text_encoder_state_dicts([sd], clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION)
    vae_model = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), latent_channels=4, layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    vae = comfy.sd.VAE(sd=vae_model.state_dict())
    return clip, vae


# ---------------------------------------------------------------------------------------------------------
# Flux (run_flux.py): the host's own Flux model code at reduced widths, and loader stand-ins for workflows.

SMALL_FLUX = {"image_model": "flux", "in_channels": 16, "patch_size": 2, "out_channels": 16, "vec_in_dim": 24,
              "context_in_dim": 32, "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 4, "depth": 2,
              "depth_single_blocks": 2, "axes_dim": [4, 6, 6], "theta": 10000, "qkv_bias": True, "guidance_embed": False}


# FluxParams fields that newer hosts require (no default) and older ones do not know, with the value the host's
# own file detection gives FLUX.1 (comfy/model_detection.py): added only where the host's FluxParams has the field.
FLUX_FIELDS_BY_HOST = {"txt_ids_dims": []}  # text tokens get no position ids (FLUX.1's RoPE)


def flux_config(base: dict | None = None, **overrides) -> dict:
    """SMALL_FLUX (or `base`) with `overrides`, completed with the fields this host's FluxParams requires."""
    import dataclasses

    import comfy.ldm.flux.model

    config = dict(base or SMALL_FLUX, **overrides)
    known = {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}
    config.update({k: v for k, v in FLUX_FIELDS_BY_HOST.items() if k in known and k not in config})
    return config


def small_flux_diffusers(seed: int = 1, depth: int = 2, depth_single: int = 2):
    """A random diffusers FluxTransformer2DModel with SMALL_FLUX's shape (the reference for exactness)."""
    from diffusers import FluxTransformer2DModel

    model = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=depth, num_single_layers=depth_single,
                                   attention_head_dim=16, num_attention_heads=4, joint_attention_dim=32,
                                   pooled_projection_dim=24, guidance_embeds=False, axes_dims_rope=(4, 6, 6))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def host_flux(diffusers_sd: dict, unet_config: dict | None = None):
    """The host's Flux (comfy.supported_models.Flux -> model_base.Flux -> comfy/ldm/flux/model.py) with
    `unet_config` (default SMALL_FLUX: the host's file detection fixes Flux's widths, so reduced widths are
    configured here), weights converted from diffusers by the host's own converter. A ModelPatcher on the CPU."""
    import comfy.model_detection
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.Flux(flux_config(unet_config))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    # the converter writes some converted tensors into its input's storage: give it copies
    sd = comfy.model_detection.convert_diffusers_mmdit({k: v.clone() for k, v in diffusers_sd.items()}, "")
    missing, unexpected = model.diffusion_model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"Flux weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def small_siglip(out_dir: str, image_size: int = 56, layers: int = 2, seed: int = 0):
    """A random SigLIP so400m-wide vision tower (1152 wide, 16 heads, patch 14) with few layers: transformers'
    SiglipVisionModel and the host's ClipVisionModel (comfy/clip_vision.py, siglip_vision_model) from the same
    weights. The host picks its config file by layer count, so the host model is built from a json of ours.
    Returns (transformers model, state dict in the file's key names, host model, config dict)."""
    import comfy.clip_vision
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(seed)
    cfg = SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=layers, num_attention_heads=16,
                             image_size=image_size, patch_size=14, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")
    hf = SiglipVisionModel(cfg).eval()
    sd = {k if k.startswith("vision_model.") else "vision_model." + k: v.contiguous() for k, v in hf.state_dict().items()}
    json_path = os.path.join(out_dir, f"siglip_small_{image_size}.json")
    with open(json_path, "w") as f:
        json.dump({"num_channels": 3, "hidden_act": "gelu_pytorch_tanh", "hidden_size": 1152, "image_size": image_size,
                   "intermediate_size": 4304, "model_type": "siglip_vision_model", "num_attention_heads": 16,
                   "num_hidden_layers": layers, "patch_size": 14, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}, f)
    cv = comfy.clip_vision.ClipVisionModel(json_path)
    cv.load_sd(dict(sd))
    return hf, sd, cv, cfg


def small_sd3(seed: int = 1):
    """A random diffusers SD3Transformer2DModel at reduced width (2 joint blocks of 128 = 2 heads of 64, RMSNorm on
    Q/K as SD3.5 Large; context 32, pooled 24) and the host's model from the same weights: the host's converter
    and its file detection (an MMDiT's widths follow from its keys), so the host builds its SD3 class itself.
    Returns (diffusers model, ModelPatcher on the CPU)."""
    import comfy.model_detection
    import comfy.sd
    from diffusers import SD3Transformer2DModel

    model = SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=64,
                                  num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=128,
                                  pooled_projection_dim=24, out_channels=16, pos_embed_max_size=16, qk_norm="rms_norm")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    sd = comfy.model_detection.convert_diffusers_mmdit({k: v.clone() for k, v in model.state_dict().items()}, "")
    return model.eval(), comfy.sd.load_diffusion_model_state_dict(sd, model_options={"dtype": torch.float32})


def small_flux_vae(seed: int = 0):
    """A random TAESD-shaped Flux VAE (16 latent channels) as the host's VAE object (comfy/sd.py detects it)."""
    import comfy.sd
    import comfy.taesd.taesd

    # the host's layers skip weight init (comfy.ops.disable_weight_init): every tensor is filled here
    g = torch.Generator().manual_seed(seed)
    shapes = {k: v.shape for k, v in comfy.taesd.taesd.TAESD(latent_channels=16).state_dict().items()}
    sd = {k: torch.randn(s, generator=g) * (0.1 if len(s) > 1 else 0.01) for k, s in shapes.items()}
    sd["vae_scale"], sd["vae_shift"] = torch.tensor(1.0), torch.tensor(0.0)
    return comfy.sd.VAE(sd=sd)


def register_random_flux_loaders(host_nodes, model, vae, clip_vision, context_dim: int = 32, pooled_dim: int = 24) -> None:
    """Stand-ins for Flux and SD3.5 workflows: TestRandomUNet (UNETLoader), TestRandomCheckpoint
    (CheckpointLoaderSimple: the model, no CLIP, the VAE), TestRandomFluxClip / TestRandomTripleClip (DualCLIPLoader /
    TripleCLIPLoader, no model),
    TestRandomFluxText (CLIPTextEncode: seeded random T5 / pooled CLIP conditioning of the small widths),
    TestRandomVAE (VAELoader), TestRandomClipVision (CLIPVisionLoader)."""

    def node(name, returns, inputs, fn):
        cls = type(name, (), {"RETURN_TYPES": returns, "FUNCTION": "run", "CATEGORY": "test",
                              "INPUT_TYPES": classmethod(lambda c: {"required": inputs}),
                              "run": lambda self, **kw: fn(**kw)})
        host_nodes.NODE_CLASS_MAPPINGS[name] = cls

    def text(text, clip):
        g = torch.Generator().manual_seed(len(text))
        return ([[torch.randn(1, 7, context_dim, generator=g), {"pooled_output": torch.randn(1, pooled_dim, generator=g)}]],)

    node("TestRandomUNet", ("MODEL",), {"unet_name": ("STRING", {}), "weight_dtype": ("STRING", {})}, lambda **kw: (model,))
    node("TestRandomFluxClip", ("CLIP",), {"clip_name1": ("STRING", {}), "clip_name2": ("STRING", {}), "type": ("STRING", {})},
         lambda **kw: (object(),))
    node("TestRandomFluxText", ("CONDITIONING",), {"text": ("STRING", {}), "clip": ("CLIP",)}, text)
    node("TestRandomVAE", ("VAE",), {"vae_name": ("STRING", {})}, lambda **kw: (vae,))
    node("TestRandomClipVision", ("CLIP_VISION",), {"clip_name": ("STRING", {})}, lambda **kw: (clip_vision,))
    # SD3.5 workflows: CheckpointLoaderSimple (model and VAE; text encoders come from TripleCLIPLoader)
    node("TestRandomCheckpoint", ("MODEL", "CLIP", "VAE"), {"ckpt_name": ("STRING", {})}, lambda **kw: (model, object(), vae))
    node("TestRandomTripleClip", ("CLIP",), {"clip_name1": ("STRING", {}), "clip_name2": ("STRING", {}), "clip_name3": ("STRING", {})},
         lambda **kw: (object(),))


def foreign_block_patch():
    """Another pack's patches_replace["dit"] block replacement: (the patch, the list it appends to when it runs).
    It runs the block it is given, so ours, when it wraps it, runs inside."""
    seen = []

    def foreign(args, extra):
        seen.append(1)
        return extra["original_block"](args)

    return foreign, seen


def validate_and_execute(prompt: dict, name: str, out_images: str, executor=None, execute: bool = True) -> dict:
    """An API-format prompt through ComfyUI's validator, then (valid, and `execute`) its executor (a fresh one
    unless given): valid, validation_error, node_errors, and when run executed, seconds, error (the first
    execution error's message) and the images in out_images."""
    import time

    import execution

    valid = asyncio.run(execution.validate_prompt(name, prompt, None))
    result = {"valid": bool(valid[0]), "validation_error": valid[1], "node_errors": valid[3]}
    if valid[0] and execute:
        executor = executor or prompt_executor()
        t0 = time.time()
        executor.execute(prompt, name, {}, valid[2])
        errors = [m for m in executor.status_messages if m[0] == "execution_error"]
        result.update(executed=executor.success, seconds=round(time.time() - t0, 1),
                      error=errors[0][1]["exception_message"] if errors else None, images=sorted(os.listdir(out_images)))
    return result


def execute_example_workflow(host_nodes, file_name: str, swap: dict, latent_node: str, out_images: str,
                             block_patch_class, calls_of) -> dict:
    """example_workflows/<file_name> (UI format) converted as the frontend does, its loader nodes swapped for the
    stand-ins in `swap` (inputs a stand-in does not declare dropped), `latent_node`'s size set to 128 px and the
    KSampler to 2 steps, then validated and executed by ComfyUI's own executor. Each run of `block_patch_class`
    is counted with its image terms (calls_of(patch): the calls its branches counted so far) and batch size.
    Returns valid, validation_error, node_errors, executed, error, images, finite, block_calls, image_terms,
    batch_sizes."""
    sys.path.insert(0, str(REPO / "tests" / "nodes"))
    from workflow_api import ui_to_api

    path = REPO / "example_workflows" / file_name
    prompt = ui_to_api(json.loads(path.read_text()), lambda t: host_nodes.NODE_CLASS_MAPPINGS[t].INPUT_TYPES())
    for entry in prompt.values():
        if entry["class_type"] in swap:
            entry["class_type"] = swap[entry["class_type"]]
            declared = host_nodes.NODE_CLASS_MAPPINGS[entry["class_type"]].INPUT_TYPES()["required"]
            entry["inputs"] = {k: v for k, v in entry["inputs"].items() if k in declared}
        if entry["class_type"] == latent_node:
            entry["inputs"]["width"] = entry["inputs"]["height"] = 128
        if entry["class_type"] == "KSampler":
            entry["inputs"]["steps"] = 2
    calls = []
    original = block_patch_class._run

    def counted(self, args, block):
        before = calls_of(self)
        out = original(self, args, block)
        calls.append((calls_of(self) - before, int(args["img"].shape[0])))
        return out

    decoded = []
    vae_decode = host_nodes.NODE_CLASS_MAPPINGS["VAEDecode"].decode

    def checked(self, vae, samples):
        out = vae_decode(self, vae, samples)
        decoded.append(bool(torch.isfinite(out[0]).all()) and bool(torch.isfinite(samples["samples"]).all()))
        return out

    block_patch_class._run = counted
    host_nodes.NODE_CLASS_MAPPINGS["VAEDecode"].decode = checked
    try:
        result = validate_and_execute(prompt, path.stem, out_images)
    finally:
        block_patch_class._run = original
        host_nodes.NODE_CLASS_MAPPINGS["VAEDecode"].decode = vae_decode
    result.update(finite=decoded == [True], block_calls=len(calls), image_terms=sum(c for c, _ in calls),
                  batch_sizes=sorted({b for _, b in calls}))
    return result


def prompt_executor():
    """ComfyUI's PromptExecutor reporting to a SilentServer, with the classic cache (outputs dropped as soon as
    possible). Newer hosts read cache limits from `cache_args` at every execute (main.py fills them from its
    command line; these are its values under --cache-classic): given where the constructor takes them."""
    import inspect

    import execution

    kwargs = {}
    if "cache_args" in inspect.signature(execution.PromptExecutor).parameters:
        kwargs["cache_args"] = {"lru": 0, "ram": 0, "ram_inactive": 0}
    return execution.PromptExecutor(SilentServer(), **kwargs)


class SilentServer:
    """What ComfyUI's PromptExecutor reports progress to (its PromptServer), when nobody listens."""

    client_id = None
    last_node_id = None
    last_prompt_id = None

    def send_sync(self, *args, **kwargs):
        pass
