"""Flux IP-Adapters through the host's own hooks: block replacements that change only the attention call.

Host contract (comfy/ldm/flux/model.py forward_orig): a callable at transformer_options["patches_replace"]["dit"]
[("double_block", i)] / [("single_block", i)] is called as patch(args, {"original_block": run}) with args =
{img, txt (double only), vec, pe, attn_mask, transformer_options} and returns {"img", "txt"} ({"img"} for single
blocks); run(args) is the host's own block. Inside the block, comfy/ldm/flux/math.py attention() applies RoPE and
calls optimized_attention(q, k, v, heads, skip_reshape=True, mask, transformer_options); the host's wrap_attn
(comfy/ldm/modules/attention.py) hands that call to transformer_options["optimized_attention_override"]
(func, q, k, v, heads, ...) when set.

So our replacement calls the host's block with a copy of transformer_options whose attention override first
runs the host's attention (or the override that was there), then takes the block's queries (RoPE undone with
the block's own pe: the adapters attend before RoPE) and computes each adapter's image term. InstantX's term is
added to the attention output (inside the block, before its projection and gate); XLabs' to the block's image
output after the block. No module is replaced and no forward is copied: the host's blocks run as they are.

A diffusion-model wrapper (patcher_extension WrappersMP.DIFFUSION_MODEL) records the latent's height and width in
the transformer_options of each call, so attn_mask can be placed on the image tokens.
"""
from __future__ import annotations

import copy

import torch

from . import host
from ..ip_core.families import flux as flux_math
from ..ip_core.errors import AdapterMismatchError

LATENT_KEY = "ipadapter_flux_latent"  # transformer_options entry: (height, width) of this call's latent
WRAPPER_KEY = "ipadapter_flux"


class BlockPatch:
    """A patches_replace["dit"] replacement holding this pack's branches at one block key. One object per key
    holds every Apply node's branch (stacked adapters add up); another pack's replacement that was there runs
    around ours. Branches are immutable and shared between the host's copies of the model options."""

    def __init__(self, key, branches=(), wrapped=None):
        self.key = key  # ("double_block", i) / ("single_block", i)
        self.branches = tuple(branches)
        self.wrapped = wrapped  # another pack's replacement at this key: it runs around ours

    def with_branch(self, branch) -> "BlockPatch":
        new = copy.copy(self)
        new.branches = self.branches + (branch,)
        return new

    def __deepcopy__(self, memo):
        new = copy.copy(self)
        new.wrapped = copy.deepcopy(self.wrapped, memo)
        return new

    def __call__(self, args, extra):
        original = extra["original_block"]
        if self.wrapped is not None:
            return self.wrapped(args, {**extra, "original_block": lambda a: self._run(a, original)})
        return self._run(args, original)

    def _run(self, args, original):
        raise NotImplementedError


class FluxBlockPatch(BlockPatch):
    """Replacement of one Flux block: the host's block with every branch's image term added.

    branches: (AdapterBranch, placement) pairs; placement is ip_core.families.flux ATTENTION_OUTPUT or BLOCK_OUTPUT."""

    def __init__(self, key, branches=(), wrapped=None, flipped: bool = False):
        super().__init__(key, branches, wrapped)
        self.flipped = flipped  # DoubleStreamBlock.flipped_img_txt: image tokens first in the joint sequence

    def _run(self, args, original):
        options = args.get("transformer_options") or {}
        layer_key = self.key + (0,)  # LayerSpec.comfy_key of this block
        active = [(b, p) for b, p in self.branches if b.weight(layer_key) != 0 and b.window.active(options)]
        if not active:
            return original(args)  # the host's block, untouched
        double = self.key[0] == "double_block"
        pe = args.get("pe")
        after_block = []  # XLabs terms, added to the image output once the block has run
        previous = options.get("optimized_attention_override")

        def override(func, *a, **kw):
            out = previous(func, *a, **kw) if previous is not None else func(*a, **kw)
            q = a[0]  # [B, H, L, D] after RoPE
            q = flux_math.undo_rope(q, pe) if pe is not None else q
            length = q.shape[2]
            if double:  # the image stream; the latent's tokens are its first rows
                img = args["img"].shape[1]
                rows = slice(0, img) if self.flipped else slice(length - img, length)
                latent_start = 0
            else:  # single block: the whole joint sequence (InstantX), text first
                rows = slice(0, length)
                latent_start = (options.get(LATENT_KEY) or (0, 0, 0))[2]
            q_img = q[:, :, rows]
            batch = q.shape[0]
            attention = as_core_attention(func, kw)
            cloned = False
            for branch, placement in active:
                k, v = branch.kv(layer_key, options.get("cond_or_uncond"), batch, q.device, q.dtype, options)
                mask = _mask(branch, options, q_img.shape[2], latent_start, batch, q.device, q.dtype)
                branch.calls += 1
                term = flux_math.flux_image_term(q_img, k, v, branch.output_weight(layer_key), mask, attention)
                if placement == flux_math.ATTENTION_OUTPUT:
                    if not cloned:  # the host's tensor is not ours to change in place
                        out, cloned = out.clone(), True
                    out[:, rows] += term.to(out.dtype)
                else:
                    after_block.append(term)
            return out

        result = original({**args, "transformer_options": {**options, "optimized_attention_override": override}})
        if after_block:
            img = result["img"]
            for term in after_block:
                img = img + term.to(img.dtype)
            result = {**result, "img": img}
        return result


def _mask(branch, options, rows: int, latent_start: int, batch, device, dtype):
    """[B, rows, 1] over the rows the term acts on, or None: attn_mask (and frame weights) on the latent's
    tokens; other rows (text in single blocks, reference latents of Flux Kontext) get no image prompt under it."""
    if branch.mask is None and branch.frame_weights is None:
        return None
    latent = options.get(LATENT_KEY)
    if latent is None:
        raise AdapterMismatchError(f"{branch.label}: attn_mask needs the latent size, which this host call does not give.")
    hw = latent[:2]
    h, w = (hw[0] + 1) // 2, (hw[1] + 1) // 2  # 2x2 patches, padded (Flux._forward)
    m = branch.spatial_mask(h * w, hw, options.get("cond_or_uncond"), batch, device, dtype, options)
    full = torch.zeros(batch, rows, 1, device=device, dtype=dtype)
    full[:, latent_start:latent_start + h * w] = m
    return full


def as_core_attention(func, host_keywords: dict | None = None):
    """The host's attention function the override received, as ip_core's [B, L, H*D] attention, called with the
    keywords the host gave this layer's call (host.attention_keywords: precision, transformer_options, a
    per-layer backend choice) so the image term runs as the layer's own attention does."""
    keywords = host.attention_keywords(host_keywords or {})

    def attention(q, k, v, heads, mask=None):
        return func(q, k, v, heads, mask=mask, **keywords)
    return attention


def _record_latent(executor, *args, **kwargs):
    """WrappersMP.DIFFUSION_MODEL wrapper: executor(x, timestep, context, y, guidance, ref_latents, control,
    transformer_options, **kwargs) (comfy/ldm/flux/model.py Flux.forward). Adds (latent h, latent w, text tokens)."""
    args = list(args)
    x = args[0] if args else kwargs["x"]
    context = args[2] if len(args) > 2 else kwargs.get("context")
    shape = (int(x.shape[-2]), int(x.shape[-1]), int(context.shape[1]) if context is not None else 0)
    if len(args) > 7:
        args[7] = {**(args[7] or {}), LATENT_KEY: shape}
    else:
        kwargs["transformer_options"] = {**(kwargs.get("transformer_options") or {}), LATENT_KEY: shape}
    return executor(*args, **kwargs)


def patch_flux_model(model, branch, layers, placement: str):
    """A clone of `model` with `branch` in every Flux block the adapter has (weight 0 blocks are left alone);
    placement: where the adapter's term lands (ip_core.families.flux FluxAdapterConfig.placement)."""
    flipped = host.flux_img_first(model)
    item = (branch, placement)
    m, patched = patch_blocks(model, branch, item, layers, FluxBlockPatch,
                              lambda key, existing: FluxBlockPatch(key, (item,), wrapped=existing, flipped=flipped))
    host.add_model_wrapper(m, WRAPPER_KEY, _record_latent)
    return m, patched


def patch_blocks(model, branch, item, layers, patch_class, make):
    """A clone of `model` with `item` (what a `patch_class` holds for `branch`) at the patches_replace["dit"] key of
    every block in `layers`; blocks where the branch has weight 0 and nothing is patched are left alone. Our
    patch at a key is extended; anything else there is wrapped by make(key, existing)."""
    m = model.clone()
    replace = m.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    patched = 0
    for spec in layers:
        key = spec.comfy_block
        existing = replace.get(key)
        if branch.weight(spec.comfy_key) == 0 and existing is None:
            continue
        new = existing.with_branch(item) if isinstance(existing, patch_class) else make(key, existing)
        m.set_model_patch_replace(new, "dit", key[0], key[1])
        patched += 1
    return m, patched


def check_flux_model(a, model) -> None:
    """The model's Flux blocks against the adapter's: width, head width, block counts."""
    blocks = getattr(model.get_model_object("diffusion_model"), "double_blocks", None)
    if blocks is not None and len(blocks):
        b = blocks[0]
        hidden, heads = int(b.hidden_size), int(b.num_heads)
        config = a.config
        if hidden != config.hidden_size or (config.key_norm and hidden // heads != config.head_dim):
            raise AdapterMismatchError(
                f"adapter/model mismatch: {a.name} is for Flux blocks {config.hidden_size} wide (heads of {config.head_dim}), "
                f"the model's are {hidden} wide with {heads} heads. Use a FLUX.1 model with this adapter.")
        n = len(blocks)
        singles = len(getattr(model.get_model_object("diffusion_model"), "single_blocks", ()))
        if config.double_blocks > n or config.single_blocks > singles:
            raise AdapterMismatchError(
                f"adapter/model mismatch: {a.name} has {config.double_blocks} double + {config.single_blocks} single blocks, "
                f"the model {n} + {singles}. Use the Flux model the adapter was made for.")


def check_flux_encoder(config, encoded) -> None:
    """ComfyUI's SigLIP vision model (comfy/clip_model.py CLIPVision, model_type siglip_vision_model) returns the
    post-layernormed token states as image_embeds: it has no attention-pooling head, so no pooler_output, which is
    what InstantX's adapter projects. Say so instead of a shape error."""
    embeds = encoded.image_embeds
    if config.encoder_width == 1152 and embeds.ndim == 3 and embeds.shape[-1] == 1152:
        raise AdapterMismatchError(
            f"{config.description}: ComfyUI's SigLIP CLIP vision model gives per-token states ({list(embeds.shape)}), "
            "not the pooled embedding (pooler_output, from SigLIP's attention-pooling head, which ComfyUI's loader does "
            "not build). Load the SigLIP file with 'Load SigLIP Vision, pooled (IPAdapter)' instead of Load CLIP Vision.")
