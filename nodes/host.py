"""Everything the nodes take from the ComfyUI host, in one place.

Host modules are imported lazily, inside functions: the package must import (for ComfyUI-Manager scans,
for tests with a stand-in host) even where `comfy` is not importable. Each function names the host code it
relies on (ComfyUI 0.3.64 a125cd84, 2025-10, and 0.33.0 783545f6, 2026-08); where the hosts differ, the
function looks for the feature, never at a version number. host_symbols.HOST_SYMBOLS lists every host symbol
and call convention the nodes rely on; a real-host test checks each entry on every tested host.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from types import SimpleNamespace

import torch

from ..ip_core import attention as _attention
from ..ip_core.encoder_table import EncoderOutput
from ..ip_core.errors import IPAdapterError

multihead_attention = _attention.multihead_attention

FOLDER = "ipadapter"
# What ip_core.checkpoint reads safely. .ckpt/.pkl are pickles this package does not open.
EXTENSIONS = {".safetensors", ".bin", ".pt", ".pth"}


def register_model_folder() -> None:
    """Make models/ipadapter a model folder, the way ComfyUI_IPAdapter_plus does, so users' files are found.

    folder_paths.py: folder_names_and_paths[name] = ([paths], extensions). extra_model_paths.yaml entries
    (loaded before custom nodes, utils/extra_config.py) and another pack may already have created the entry:
    keep its paths; widen (never narrow) its extension set so no other pack loses files. An entry made by
    add_model_folder_path has an empty set, which the host reads as "any extension": we give it ours.
    """
    import folder_paths

    default = os.path.join(folder_paths.models_dir, FOLDER)
    if FOLDER in folder_paths.folder_names_and_paths:
        paths, exts = folder_paths.folder_names_and_paths[FOLDER]
        exts = set(exts) | EXTENSIONS if exts else set(EXTENSIONS)
        if default not in paths:
            paths = list(paths) + [default]
    else:
        paths, exts = [default], set(EXTENSIONS)
    folder_paths.folder_names_and_paths[FOLDER] = (paths, exts)
    if not os.path.isdir(default):  # a manual clone runs no install script: the folder is there from the first start
        try:
            os.makedirs(default, exist_ok=True)
        except OSError as e:  # e.g. a read-only models folder; extra_model_paths.yaml folders still work
            logging.getLogger(__name__).warning(
                "IP-Adapter: could not create %s (%s); create it yourself, or name a folder under 'ipadapter:' "
                "in extra_model_paths.yaml.", default, e.strerror or e)


def adapter_files() -> list:
    import folder_paths

    register_model_folder()
    names = folder_paths.get_filename_list(FOLDER)
    return [n for n in names if os.path.splitext(n)[1].lower() in EXTENSIONS]


def adapter_path(name: str):
    import folder_paths

    register_model_folder()
    return folder_paths.get_full_path(FOLDER, name), folder_paths.get_folder_paths(FOLDER)


def check_interrupt() -> None:
    """comfy/model_management.py throw_exception_if_processing_interrupted: raises if the user pressed Cancel."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return
    mm.throw_exception_if_processing_interrupted()


def passthrough_exceptions() -> tuple:
    """Exceptions the host handles itself (execution.py): Cancel (InterruptProcessingException) and GPU out of
    memory (model_management.OOM_EXCEPTION, which unloads models and prints tips). Node errors let them through."""
    found = [torch.OutOfMemoryError] if hasattr(torch, "OutOfMemoryError") else []
    try:
        import comfy.model_management as mm
    except ImportError:
        return tuple(found)
    for name in ("InterruptProcessingException", "OOM_EXCEPTION"):
        exc = getattr(mm, name, None)
        # Without CUDA the host sets OOM_EXCEPTION = Exception, which would let every bug through.
        if isinstance(exc, type) and issubclass(exc, BaseException) and exc is not Exception:
            found.append(exc)
    return tuple(found)


def progress_bar(total: int):
    """comfy/utils.py ProgressBar(total).update(n); a no-op outside the host."""
    try:
        import comfy.utils
    except ImportError:
        return SimpleNamespace(update=lambda n: None)
    return comfy.utils.ProgressBar(total)


def intermediate_device():
    try:
        import comfy.model_management as mm
    except ImportError:
        return torch.device("cpu")
    return mm.intermediate_device()


def attention_for(extra_options: dict):
    """The host's own attention function with the layer's precision, as CrossAttention.forward calls it.

    comfy/ldm/modules/attention.py CrossAttention.forward: optimized_attention(q, k, v, heads,
    attn_precision=..., transformer_options=...). Using it (not SDPA) keeps weight 0 bit-identical to the
    unpatched model and honours `optimized_attention_override` set by other packs (wrap_attn).
    """
    host_attention = _host_attention_module()
    if host_attention is None:
        return multihead_attention
    precision = extra_options.get("attn_precision")

    def attention(q, k, v, heads, mask=None):
        # Read the attribute per call: packs that swap the host's attention function at load time still count.
        return host_attention.optimized_attention(q, k, v, heads, mask=mask, attn_precision=precision,
                                                  transformer_options=extra_options)

    return attention


def attention_keywords(kwargs: dict) -> dict:
    """The keywords of a host attention call (what an optimized_attention_override receives) that an extra
    attention call with other tensors keeps: the host's choices for this layer (attn_precision,
    transformer_options, a per-layer backend choice such as preferred_attention, whatever else a host adds),
    without those describing the call's own tensors (their layout, its mask)."""
    return {k: v for k, v in kwargs.items() if k not in CALL_OWN_KEYWORDS}


# Keywords about the call's own tensors (layout, mask, head count and grouping) or its own softmax scale: the
# image term sets its own (its math is the adapter's: default scale, one K'/V' head per query head).
CALL_OWN_KEYWORDS = ("heads", "mask", "skip_reshape", "skip_output_reshape", "enable_gqa", "scale")


def frame_window_options(extra_options: dict) -> dict:
    """extra_options with the context window this model call evaluates named as AnimateDiff-Evolved names it
    (ad_params = {"full_length", "sub_idxs"}), which ip_core.frames reads.

    AnimateDiff-Evolved's own ad_params win. Otherwise the host's core context windows (newer hosts,
    comfy/context_windows.py IndexListContextHandler): transformer_options["context_window"] is an
    IndexListContextWindow whose index_list are the frames of the call out of total_frames along `dim`, with
    `causal_anchor_index` (causal_window_fix) prepended as the call's first frame (0.3.64's windows have neither
    total_frames nor an anchor). Only windows over the batch
    dimension (dim 0, image models' frames) name batch items; windows over a video latent's own frame axis
    leave the batch alone.
    """
    ad = extra_options.get("ad_params")
    if isinstance(ad, dict) and ad.get("sub_idxs") is not None:
        return extra_options
    window = extra_options.get("context_window")
    if window is None or getattr(window, "dim", 0) != 0 or getattr(window, "index_list", None) is None:
        return extra_options
    idxs = [int(i) for i in window.index_list]
    anchor = getattr(window, "causal_anchor_index", None)
    if anchor is not None and anchor >= 0:
        idxs = [int(anchor)] + idxs
    # total_frames: newer hosts; older windows do not say the animation's length (None: frames still pick by the
    # rule, a surplus of references cannot be found)
    return {**extra_options, "ad_params": {"full_length": getattr(window, "total_frames", None), "sub_idxs": idxs}}


def _host_attention_module():
    # The UNet that calls us has imported this module already: a sys.modules lookup, not an import per layer.
    return sys.modules.get("comfy.ldm.modules.attention")


def encode_pixels(clip_vision, pixel_values: torch.Tensor):
    """Run the host's CLIP vision model on already-preprocessed pixels.

    comfy/clip_vision.py ClipVisionModel.encode_image does clip_preprocess (centre crop only) and then
    self.model(pixel_values=..., intermediate_output=-2) -> (last_hidden, penultimate, image_embeds, mm).
    We call the model the same way with our own preprocessing (exact CLIPImageProcessor, pad, squash).
    intermediate_output=-2 is transformers' hidden_states[-2], the layer the plus adapters were trained on.
    """
    import comfy.model_management as mm

    mm.load_models_gpu([clip_vision.patcher])  # load_model_gpu(p) is a wrapper of this, kept for old callers
    out = clip_vision.model(pixel_values=pixel_values.to(clip_vision.load_device).float(), intermediate_output=-2)
    device = mm.intermediate_device()
    embeds = out[2]
    head = getattr(clip_vision, POOLING_HEAD, None)  # SigLIP (Load SigLIP Vision): the pooled embedding
    if head is not None and embeds.ndim == 3:
        with torch.no_grad():
            embeds = head.to(embeds.device)(embeds.float())
    hidden = out[1].to(device) if out[1] is not None else None  # a 1-layer tower has no layer -2
    return EncoderOutput(image_embeds=embeds.to(device), penultimate_hidden_states=hidden)


# The attribute Load SigLIP Vision (nodes_flux.py) sets on the host's CLIP vision object: ip_core.siglip's head.
POOLING_HEAD = "ipadapter_pooling_head"


def encoder_normalization(clip_vision):
    """(mean, std) the host's CLIP vision model was configured with (comfy/clip_vision.py ClipVisionModel:
    image_mean / image_std from its json: CLIP's, or 0.5 / 0.5 for SigLIP)."""
    return getattr(clip_vision, "image_mean", None), getattr(clip_vision, "image_std", None)


def clip_preprocess(images: torch.Tensor, size: int, crop: bool = True) -> torch.Tensor:
    """The host's own preprocessing, comfy/clip_vision.py clip_preprocess(image, size, crop): torch bicubic with
    antialias, centre crop (crop=True) or stretch, 8-bit rounding, CLIP mean/std. ComfyUI_IPAdapter_plus
    encodes with it; only Encode Image Prompt's legacy mode uses it (ours is ip_core.preprocess)."""
    return _host_clip_preprocess()(images, size=size, crop=crop).float()


def _host_clip_preprocess():
    """comfy.clip_model.clip_preprocess where the host has it there (newer hosts: comfy.clip_vision keeps an
    alias marked for removal), else comfy.clip_vision's (older hosts)."""
    import importlib

    for module in CLIP_PREPROCESS_MODULES:
        try:
            found = getattr(importlib.import_module(module), "clip_preprocess", None)
        except ImportError:
            continue
        if found is not None:
            return found
    raise ImportError(f"the host has no clip_preprocess in {' or '.join(CLIP_PREPROCESS_MODULES)}")


CLIP_PREPROCESS_MODULES = ("comfy.clip_model", "comfy.clip_vision")  # where it lives now, where it lived


def can_encode_pixels(clip_vision) -> bool:
    return all(hasattr(clip_vision, a) for a in ("model", "patcher", "load_device"))


# ---------------------------------------------------------------------------------------------------------
# Toolkit (loader presets, embeds files): model folders, CLIP vision loading, input / output folders.

CLIP_VISION_FOLDER = "clip_vision"


def model_files(folder: str) -> tuple:
    """(file names as the host lists them, the folders searched): folder_paths.get_filename_list is sorted
    and recursive; get_folder_paths gives the folders (models/<folder> and extra_model_paths.yaml entries)."""
    import folder_paths

    if folder == FOLDER:
        register_model_folder()
    return list(folder_paths.get_filename_list(folder)), list(folder_paths.get_folder_paths(folder))


def model_path(folder: str, name: str):
    import folder_paths

    return folder_paths.get_full_path(folder, name)


def load_clip_vision(path: str):
    """comfy/clip_vision.py load(ckpt_path): the host's CLIP vision model (the CLIPVisionLoader node's call)."""
    import comfy.clip_vision

    return comfy.clip_vision.load(path)


def output_directory() -> str:
    import folder_paths

    return folder_paths.get_output_directory()


def input_directory() -> str:
    import folder_paths

    return folder_paths.get_input_directory()


EXAMPLE_INPUTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "example_inputs")


def provide_example_inputs() -> list:
    """Copy the reference images the example workflows load (example_inputs/*.png, drawn by the project) into
    the host's input folder, where Load Image lists files, so the examples run as shipped. A file of the same
    name already there is the user's and stays. Returns the paths written."""
    import shutil

    if not os.path.isdir(EXAMPLE_INPUTS):
        return []
    target = input_directory()
    written = []
    for name in sorted(os.listdir(EXAMPLE_INPUTS)):
        dst = os.path.join(target, name)
        if not name.endswith(".png") or os.path.exists(dst):
            continue
        try:
            os.makedirs(target, exist_ok=True)
            shutil.copyfile(os.path.join(EXAMPLE_INPUTS, name), dst)
            written.append(dst)
        except OSError as e:  # a read-only input folder: the examples then need the user's own images
            logging.getLogger(__name__).warning(
                "IP-Adapter: could not copy the example image %s to %s (%s); copy it yourself or pick another "
                "image in the examples' Load Image nodes.", name, target, e.strerror or e)
    return written


class InputRefusedError(IPAdapterError):
    """The host or the operating system refused something the user typed (a save prefix, a file name): an input
    error shown with their words, not a bug."""


@contextlib.contextmanager
def refusals(what: str, remedy: str):
    """Turn the host's refusal of the user's input into an InputRefusedError naming `what`, the refusal's own
    words and `remedy`. Refusals are what folder_paths raises on purpose (a plain Exception, as
    get_save_image_path does for a path outside the output folder) and what the OS says about a name (OSError:
    too long, not a folder, permission denied; ValueError: a NUL character); any other exception type stays a bug."""
    try:
        yield
    except IPAdapterError:
        raise
    except Exception as e:
        if type(e) is not Exception and not isinstance(e, (OSError, ValueError)):
            raise
        words = " ".join(str(e).replace("*", " ").split()) or type(e).__name__
        raise InputRefusedError(f"{what} was refused: {words}. {remedy}") from e


def save_path(filename_prefix: str, output_dir: str):
    """folder_paths.get_save_image_path: (folder, file name, counter, subfolder, prefix), as SaveImage uses it;
    it refuses prefixes that leave the output folder (an absolute path, '..'): that refusal is the user's error."""
    import folder_paths

    with refusals(f"filename_prefix {filename_prefix!r}",
                  "Give a relative prefix inside the output folder, such as ipadapter/embeds: no '..', no drive or "
                  "leading '/', no folder named like an existing file."):
        return folder_paths.get_save_image_path(filename_prefix, output_dir)


def annotated_input_path(name: str) -> str:
    """folder_paths.get_annotated_filepath: 'name', 'name [input]' / '[output]' / '[temp]' -> a full path, which must
    stay inside that folder: the host lists the input folder's files, but a linked or edited name can say '../x'."""
    import folder_paths

    annotated = getattr(folder_paths, "annotated_filepath", None)
    base = (annotated(name)[1] if annotated else None) or folder_paths.get_input_directory()
    base = os.path.abspath(base)
    remedy = "choose a file listed in the node (files in ComfyUI's input folder)."
    try:
        path = folder_paths.get_annotated_filepath(name)
    except ValueError as e:  # newer hosts refuse a path outside the folder themselves ("Invalid file path: ...")
        raise InputRefusedError(f"'{name}' points outside its folder ({base}): {e}; {remedy}") from e
    try:
        inside = os.path.commonpath((base, os.path.abspath(path))) == base
    except ValueError:  # another drive (Windows)
        inside = False
    if not inside:
        raise InputRefusedError(f"'{name}' points outside its folder ({base}); {remedy}")
    return path


# ---- FaceID: the UNet's weights, LoRA patches, the InsightFace models folder ---------------------------------

# ComfyUI's BaseModel holds the UNet as `diffusion_model`; its weights keep the original SD/SGM (ldm) names.
UNET_PREFIX = "diffusion_model."
INSIGHTFACE_FOLDER = "insightface"


def unet_weight_shapes(model) -> dict:
    """{ldm weight name: shape} of the model's UNet (comfy/model_patcher.py ModelPatcher.model_state_dict)."""
    sd = model.model_state_dict(filter_prefix=UNET_PREFIX)
    return {k[len(UNET_PREFIX):]: tuple(v.shape) for k, v in sd.items()}


def add_unet_lora(model, pairs: dict, strength: float) -> list:
    """Add LoRA weight patches to a ModelPatcher: {ldm weight name: (up, down)} -> W + strength * up @ down.

    comfy/model_patcher.py add_patches(patches, strength_patch) stores them beside the user's other LoRAs; they
    are merged when the model loads and removed when it unloads (the weights are never edited in place).
    comfy/weight_adapter/lora.py LoRAAdapter(loaded_keys, (up, down, alpha, mid, dora_scale, reshape)): alpha
    None means scale 1, as the FaceID files were trained (diffusers LoRALinearLayer without network_alpha).
    """
    from comfy.weight_adapter.lora import LoRAAdapter

    patches = {}
    for name, (up, down) in pairs.items():
        key = UNET_PREFIX + name
        patches[key] = LoRAAdapter({key}, (up, down, None, None, None, None))
    return model.add_patches(patches, strength)


LORA_FOLDER = "loras"


def apply_lora_file(model, path: str, strength: float):
    """A LoRA file on the model's UNet as the host's LoRA loader puts it there (comfy/sd.py load_lora_for_models
    with clip strength 0; comfy/utils.py load_torch_file(safe_load=True): tensors only, never code): a patched clone.
    ComfyUI_IPAdapter_plus's Unified Loader FaceID applies its preset's LoRA file with these two calls."""
    import comfy.sd
    import comfy.utils

    return comfy.sd.load_lora_for_models(model, None, comfy.utils.load_torch_file(path, safe_load=True), strength, 0)[0]


def insightface_root() -> str:
    """models/insightface, where ComfyUI_IPAdapter_plus also looks (FaceAnalysis(root=...) reads root/models/NAME)."""
    import folder_paths

    return os.path.join(folder_paths.models_dir, INSIGHTFACE_FOLDER)


# ---------------------------------------------------------------------------------------------------------
# Kolors (FaceID-Plus): the UNet's own text projection.

def encoder_hid_proj(model) -> tuple:
    """(weight, bias) of the Kolors UNet's encoder_hid_proj (Linear 4096 -> 2048 that maps ChatGLM's states to
    the context), or (None, None) when the UNet has none. ComfyUI has no Kolors model of its own: Kolors loaders
    (ComfyUI-Kolors-MZ's UNet loader) give the host's UNetModel this layer as `diffusion_model.encoder_hid_proj`,
    where ComfyUI_IPAdapter_plus also reads it."""
    layer = getattr(getattr(model.model, "diffusion_model", None), "encoder_hid_proj", None)
    weight, bias = getattr(layer, "weight", None), getattr(layer, "bias", None)
    if not isinstance(weight, torch.Tensor):
        return None, None
    return weight.detach(), bias.detach() if isinstance(bias, torch.Tensor) else None


# ---------------------------------------------------------------------------------------------------------
# Flux (nodes/patch_dit.py): the block layout and the diffusion-model wrapper.

def flux_img_first(model) -> bool:
    """comfy/ldm/flux/layers.py DoubleStreamBlock.flipped_img_txt: image tokens first in the joint attention."""
    blocks = getattr(model.get_model_object("diffusion_model"), "double_blocks", None)
    return bool(blocks and getattr(blocks[0], "flipped_img_txt", False))


def add_model_wrapper(model, key: str, wrapper, kind_name: str = "DIFFUSION_MODEL") -> None:
    """comfy/patcher_extension.py: ModelPatcher.add_wrapper_with_key(WrappersMP.<kind_name>, key, wrapper); once
    per key (a clone carries its source's wrappers). APPLY_MODEL wraps model_base.BaseModel.apply_model:
    executor(x, sigma, c_concat, c_crossattn, control, transformer_options, **kwargs), executor.class_obj the
    BaseModel (its model_sampling turns sigma into the diffusion model's timestep)."""
    from comfy.patcher_extension import WrappersMP

    kind = getattr(WrappersMP, kind_name)
    if not model.wrappers.get(kind, {}).get(key):
        model.add_wrapper_with_key(kind, key, wrapper)


# ---------------------------------------------------------------------------------------------------------
# SD3 / SD3.5 (nodes/patch_mmdit.py): the MMDiT's joint blocks.

def is_sd3(model) -> bool:
    """comfy/supported_models.py SD3 (SD3 Medium, SD3.5 Large / Medium): an MMDiT with joint_blocks."""
    try:
        return type(model.model.model_config).__name__ == "SD3"
    except AttributeError:
        return False


def sd3_joint_blocks(model) -> list:
    """The diffusion model's joint blocks (comfy/ldm/modules/diffusionmodules/mmdit.py JointBlock)."""
    return list(getattr(model.get_model_object("diffusion_model"), "joint_blocks", ()))


# ---------------------------------------------------------------------------------------------------------
# Adapter weights under the host's memory management (nodes/patch_mmdit.py).

def managed_model(module: torch.nn.Module):
    """`module` as a host model (comfy/model_patcher.py ModelPatcher, as ControlNet and comfy_extras/
    nodes_model_patch.py wrap theirs): a patch's models() lists it, so load_models_gpu (model_management.py
    load_models_gpu: m.model_patches_models()) loads it on the GPU with the model and offloads it when memory
    is needed. Its weights stay on the offload device until then."""
    import comfy.model_management as mm
    from comfy.model_patcher import ModelPatcher

    return ModelPatcher(module, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def compute_dtype(model) -> torch.dtype:
    """The dtype the diffusion model computes in (model_base.py BaseModel.apply_model: manual_cast_dtype, else
    get_dtype())."""
    inner = model.model
    return getattr(inner, "manual_cast_dtype", None) or inner.get_dtype()


def mask_conditioning(conditioning, mask, strength: float):
    """The host's ConditioningSetMask (set_cond_area 'default'): the text prompt acts where `mask` is, at `strength`."""
    import node_helpers

    mask = mask if mask.ndim >= 3 else mask[None]
    return node_helpers.conditioning_set_values(conditioning, {"mask": mask, "set_area_to_bounds": False,
                                                               "mask_strength": float(strength)})
