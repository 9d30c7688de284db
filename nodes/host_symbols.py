"""Every ComfyUI symbol and call convention the nodes rely on, in one table.

A real-host test (tests/integration/test_integration_host.py) checks each entry on every tested host: the module
imports, the attribute exists, the call's keywords are accepted, the host's code still makes the calls we rely
on. A unit test (tests/nodes/test_host_symbols.py) reads nodes/ for host module uses and fails on any that is
not listed here, so the table cannot fall behind the code. This module imports nothing of the host.

Entry fields:
- modules: where the symbol lives, newest place first (the nodes take the first that has it);
- name: the attribute path inside the module ("ModelPatcher.clone"); "" for the module itself;
- accepts: keyword names the nodes pass (each a parameter of the callable, or taken by its **kwargs);
- leads: the first positional parameters, in order, where the nodes read or pass arguments by position;
- code: regular expressions the symbol's source must match: what the host passes us, or calls us with;
- where_present: a feature of some hosts only; the nodes use it where it is there and do without elsewhere;
- used_by: the function of the nodes that relies on it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HostSymbol:
    modules: tuple
    name: str
    used_by: str
    accepts: tuple = ()
    leads: tuple = ()
    code: tuple = ()
    where_present: bool = False


FP, MM, ATTN = ("folder_paths",), ("comfy.model_management",), ("comfy.ldm.modules.attention",)
MP = ("comfy.model_patcher",)

HOST_SYMBOLS = (
    # ---- model folders, input / output folders (host.py)
    HostSymbol(FP, "folder_names_and_paths", "host.register_model_folder"),
    HostSymbol(FP, "models_dir", "host.register_model_folder, host.insightface_root"),
    HostSymbol(FP, "get_filename_list", "host.adapter_files, host.model_files", leads=("folder_name",)),
    HostSymbol(FP, "get_full_path", "host.adapter_path, host.model_path", leads=("folder_name", "filename")),
    HostSymbol(FP, "get_folder_paths", "host.adapter_path, host.model_files", leads=("folder_name",)),
    HostSymbol(FP, "get_output_directory", "host.output_directory"),
    HostSymbol(FP, "get_input_directory", "host.input_directory"),
    HostSymbol(FP, "get_save_image_path", "host.save_path", leads=("filename_prefix", "output_dir")),
    HostSymbol(FP, "get_annotated_filepath", "host.annotated_input_path", leads=("name",)),
    # ---- model management, progress (host.py)
    HostSymbol(MM, "throw_exception_if_processing_interrupted", "host.check_interrupt"),
    HostSymbol(MM, "InterruptProcessingException", "host.passthrough_exceptions"),
    HostSymbol(MM, "OOM_EXCEPTION", "host.passthrough_exceptions"),
    HostSymbol(MM, "intermediate_device", "host.intermediate_device, host.encode_pixels"),
    HostSymbol(MM, "load_models_gpu", "host.encode_pixels", leads=("models",)),
    HostSymbol(MM, "get_torch_device", "host.managed_model (the adapter's load device)"),
    HostSymbol(MM, "unet_offload_device", "host.managed_model (the adapter's offload device)"),
    HostSymbol(MP, "ModelPatcher.model_patches_models", "patch_mmdit.SD3BlockPatch.models (load_models_gpu asks the "
               "patches for their models)", code=(r"\.models\(\)",)),
    HostSymbol(("comfy.utils",), "ProgressBar", "host.progress_bar", leads=("total",)),
    HostSymbol(("comfy.utils",), "load_torch_file", "host.apply_lora_file", accepts=("safe_load",), leads=("ckpt",)),
    HostSymbol(("comfy.sd",), "load_lora_for_models", "host.apply_lora_file",
               leads=("model", "clip", "lora", "strength_model", "strength_clip")),
    HostSymbol(("comfy.utils",), "ProgressBar.update", "host.progress_bar", leads=("self", "value")),
    # ---- attention (host.py, patch.py, patch_dit.py, patch_mmdit.py)
    HostSymbol(ATTN, "optimized_attention", "host.attention_for (q, k, v, heads by position)",
               accepts=("mask", "attn_precision", "transformer_options")),
    HostSymbol(ATTN, "wrap_attn", "patch_dit.FluxBlockPatch, patch_mmdit.SD3BlockPatch (the override's call)",
               code=(r"optimized_attention_override(?:\"\])?\(func, \*args, \*\*kwargs\)",)),
    HostSymbol(ATTN, "BasicTransformerBlock.forward", "patch.IPAttentionPatch (attn2 replace patch call and key)",
               code=(r"attn2_replace_patch\[block_attn2\]\(n, context_attn2, value_attn2, extra_options\)",
                     r"transformer_block = \(block\[0\], block\[1\], block_index\)",
                     r"extra_options\[\"n_heads\"\] = self\.n_heads",
                     r"extra_options\[\"attn_precision\"\] = self\.attn_precision")),
    HostSymbol(("comfy.samplers",), "_calc_cond_batch", "patch.SigmaWindow, patch.AdapterBranch (per-call options)",
               code=(r"transformer_options\[\"sigmas\"\] = timestep",
                     r"transformer_options\[\"cond_or_uncond\"\] = cond_or_uncond")),
    HostSymbol(("comfy.ldm.modules.diffusionmodules.openaimodel",), "UNetModel._forward",
               "patch.downsampled_hw (original_shape), patch.patch_model (the middle block's key)",
               code=(r"transformer_options\[\"original_shape\"\] = list\(x\.shape\)",
                     r"transformer_options\[\"block\"\] = \(\"middle\", 0\)")),
    # ---- the model patcher (patch*.py, nodes_apply.py, nodes_faceid.py, host.py)
    HostSymbol(MP, "ModelPatcher.clone", "patch.patch_model, patch_dit.patch_blocks"),
    HostSymbol(MP, "ModelPatcher.set_model_attn2_replace", "patch.patch_model",
               leads=("self", "patch", "block_name", "number", "transformer_index")),
    HostSymbol(MP, "ModelPatcher.set_model_patch_replace", "patch_dit.patch_blocks",
               leads=("self", "patch", "name", "block_name", "number")),
    HostSymbol(MP, "ModelPatcher.get_model_object", "nodes_apply (model_sampling), patch_dit, host.flux_img_first",
               leads=("self", "name")),
    HostSymbol(MP, "ModelPatcher.add_patches", "host.add_unet_lora", leads=("self", "patches", "strength_patch")),
    HostSymbol(MP, "ModelPatcher.model_state_dict", "host.unet_weight_shapes", accepts=("filter_prefix",)),
    HostSymbol(MP, "ModelPatcher.add_wrapper_with_key", "host.add_model_wrapper",
               leads=("self", "wrapper_type", "key", "wrapper")),
    HostSymbol(MP, "ModelPatcher.__init__", "host.add_model_wrapper (wrappers), patch.patch_model (model_options), "
               "host.managed_model", accepts=("load_device", "offload_device"),
               code=(r"self\.wrappers\b", r"self\.model_options\b")),
    HostSymbol(("comfy.patcher_extension",), "WrappersMP.DIFFUSION_MODEL", "patch_dit.patch_flux_model"),
    HostSymbol(("comfy.patcher_extension",), "WrappersMP.APPLY_MODEL", "patch_mmdit.patch_sd3_model"),
    HostSymbol(("comfy.patcher_extension",), "WrappersMP.OUTER_SAMPLE", "patch_mmdit.patch_sd3_model"),
    HostSymbol(("comfy.model_sampling",), "ModelSamplingDiscrete.percent_to_sigma", "nodes_apply (start_at / end_at)"),
    HostSymbol(("comfy.model_sampling",), "ModelSamplingDiscrete.timestep", "patch_mmdit._record_step"),
    HostSymbol(("comfy.model_base",), "BaseModel.apply_model", "patch_mmdit._record_step (APPLY_MODEL wrapper)",
               leads=("self", "x", "t", "c_concat", "c_crossattn", "control", "transformer_options")),
    HostSymbol(("comfy.model_base",), "BaseModel.__init__", "nodes_apply (model.model.model_config.unet_config)",
               code=(r"self\.model_config = model_config",)),
    HostSymbol(("comfy.weight_adapter.lora",), "LoRAAdapter", "host.add_unet_lora",
               leads=("loaded_keys", "weights"),
               code=(r"v\[4\]", r"v\[5\]")),  # weights = (up, down, alpha, mid, dora_scale, reshape)
    # ---- CLIP vision (host.py)
    HostSymbol(("comfy.clip_model", "comfy.clip_vision"), "clip_preprocess", "host.clip_preprocess",
               accepts=("size", "crop"), leads=("image",)),
    HostSymbol(("comfy.clip_vision",), "load", "host.load_clip_vision", leads=("ckpt_path",)),
    HostSymbol(("comfy.clip_vision",), "ClipVisionModel.__init__", "host.encode_pixels, host.encoder_normalization",
               code=(r"self\.image_mean = ", r"self\.image_std = ", r"self\.load_device = ", r"self\.model = ",
                     r"self\.patcher = ")),
    HostSymbol(("comfy.clip_vision",), "ClipVisionModel.encode_image", "host.encode_pixels (the model's call)",
               code=(r"self\.model\(pixel_values=pixel_values, intermediate_output=",)),
    # ---- Flux (patch_dit.py, host.py, nodes_apply.py)
    HostSymbol(("comfy.ldm.flux.model",), "Flux.forward", "patch_dit._record_latent (DIFFUSION_MODEL wrapper)",
               leads=("self", "x", "timestep", "context", "y", "guidance", "ref_latents", "control",
                      "transformer_options")),
    HostSymbol(("comfy.ldm.flux.model",), "Flux.forward_orig", "patch_dit.FluxBlockPatch (dit block replace call)",
               code=(r"blocks_replace\[\(\"double_block\", i\)\]\(\{\"img\": img,", r"\(\"single_block\", i\)",
                     r"\{\"original_block\": block_wrap\}")),
    HostSymbol(("comfy.ldm.flux.math",), "attention", "patch_dit.FluxBlockPatch (the block's attention call)",
               code=(r"optimized_attention\(q, k, v, heads, skip_reshape=True, mask=mask, "
                     r"transformer_options=transformer_options\)",)),
    HostSymbol(("comfy.ldm.flux.layers",), "DoubleStreamBlock.__init__", "host.flux_img_first (older hosts' "
               "image-first blocks; newer hosts put text first always)", accepts=("flipped_img_txt",), where_present=True),
    HostSymbol(("comfy.model_detection",), "detect_unet_config", "nodes_apply (unet_config image_model 'flux')",
               code=(r"\[\"image_model\"\] = \"flux\"",)),
    # ---- SD3 / SD3.5 (patch_mmdit.py, host.py)
    HostSymbol(("comfy.supported_models",), "SD3", "host.is_sd3 (the model config's class name)"),
    HostSymbol(("comfy.ldm.modules.diffusionmodules.mmdit",), "MMDiT.forward_core_with_concat",
               "patch_mmdit.SD3BlockPatch (dit block replace call), host.sd3_joint_blocks",
               code=(r"blocks_replace\[\(\"double_block\", i\)\]\(\{\"img\": x, \"txt\": context, \"vec\": c_mod, "
                     r"\"transformer_options\": transformer_options\}, \{\"original_block\": block_wrap\}\)",
                     r"self\.joint_blocks")),
    # ---- core context windows (host.frame_window_options)
    HostSymbol(("comfy.context_windows",), "IndexListContextWindow.__init__", "host.frame_window_options",
               leads=("self", "index_list", "dim"), code=(r"self\.index_list = index_list", r"self\.dim = dim")),
    HostSymbol(("comfy.context_windows",), "IndexListContextHandler.evaluate_context_windows",
               "host.frame_window_options (the window in transformer_options)",
               code=(r"model_options\[\"transformer_options\"\]\[\"context_window\"\] = window",)),
    HostSymbol(("comfy.context_windows",), "IndexListContextWindow.__init__", "host.frame_window_options "
               "(newer hosts: the animation's length)", code=(r"self\.total_frames = total_frames",),
               where_present=True),
    HostSymbol(("comfy.context_windows",), "IndexListContextHandler.evaluate_context_windows",
               "host.frame_window_options (newer hosts: the anchor frame before a window)",
               code=(r"window\.causal_anchor_index = ",), where_present=True),
    HostSymbol(("comfy.context_windows",), "IndexListContextWindow.get_tensor",
               "host.frame_window_options (the anchor frame comes first)",
               code=(r"indices = \[anchor_idx\] \+ list\(indices\)",), where_present=True),
)

# Host modules the nodes import (the unit test reads nodes/ for uses of these names).
HOST_MODULES = ("comfy", "folder_paths")
