"""SD3.5 IP-Adapters (InstantX) through the host's own hooks: joint-block replacements that change only the
attention call, and an apply-model wrapper for the per-step work.

Host contract (comfy/ldm/modules/diffusionmodules/mmdit.py MMDiT.forward_core_with_concat): a callable at
transformer_options["patches_replace"]["dit"][("double_block", i)] is called as patch(args, {"original_block":
run}) with args = {img, txt, vec, transformer_options} and returns {"img", "txt"}; run(args) is the host's own
JointBlock. Inside it, _block_mixing joins the context's and the image's q, k, v (context first), Q and K after
the block's RMSNorm (ln_q / ln_k), and calls optimized_attention(q, k, v, heads=, transformer_options=) with
[B, L, H*D] tensors; the host's wrap_attn hands that call to transformer_options["optimized_attention_override"].

So our replacement calls the host's block with an attention override that runs the host's attention (or the
override that was there), then adds each adapter's image term to the image rows of its output (before the
block's projection and gate, as diffusers' SD3 IP processor adds it). The adapter's own RMSNorms read the
block's raw Q / K: the host's normed values divided by the block's norm weight (ip_core.families.sd3.renorm_heads).

The adapter's tokens depend on the timestep: an APPLY_MODEL wrapper (model_base.BaseModel.apply_model) puts in
each call's transformer_options the timesteps the MMDiT receives (the model's own model_sampling.timestep), the
latent's size and a cache, so the resampler runs once per call and adapter, not once per block.
"""
from __future__ import annotations

import copy
import weakref

import torch

from . import host
from .patch import AdapterBranch, distinct_rows
from .patch_dit import BlockPatch, as_core_attention, patch_blocks
from ..ip_core.errors import AdapterMismatchError, IPAdapterError
from ..ip_core.families.sd3 import renorm_heads, sd3_image_term

STEP_KEY = "ipadapter_sd3_step"  # transformer_options entry: {"timestep", "latent", "tokens"} of this call
WRAPPER_KEY = "ipadapter_sd3"
FEATURES = "features"  # the branch's table of encoder features (AdapterBranch.arranged)

# adapter -> {dtype: its host-managed copy in that dtype}: the weights the host loads on the GPU with the model
# and offloads under memory pressure (SD3BlockPatch.models), one per adapter and compute dtype
_MANAGED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
# module -> {(device, dtype): its copy there}: only where the host left (part of) a managed copy elsewhere (a
# partial load under low VRAM, another compute dtype), held while a sampler runs (released by OUTER_SAMPLE)
_DEVICE_COPIES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
RELEASE_KEY = "ipadapter_sd3_release"


def managed_adapter(adapter, dtype):
    """The adapter in the model's compute dtype as a host model (nodes/host.managed_model). A copy when the
    dtype differs (shared by every Apply node of this adapter); the adapter itself when it is already in it."""
    if next(adapter.parameters()).dtype == dtype:
        return host.managed_model(adapter)
    held = _MANAGED.setdefault(adapter, {})
    if dtype not in held:
        held[dtype] = host.managed_model(copy.deepcopy(adapter).to(dtype=dtype))
    return held[dtype]


def _adapter_on(adapter, device, dtype):
    if all(p.device == device and p.dtype == dtype for p in adapter.parameters()):
        return adapter  # where the host loaded it
    copies = _DEVICE_COPIES.setdefault(adapter, {})
    held = copies.get((device, dtype))
    if held is None:
        held = copies[(device, dtype)] = copy.deepcopy(adapter).to(device=device, dtype=dtype)
    return held


class SD3Branch(AdapterBranch):
    """One Apply node's SD3.5 adapter: the encoder features (cond, uncond) and per-block weights. Tokens and
    K'/V' are made per call from the call's timesteps; the features' rows follow the batch as K'/V' rows do
    for SD1.5 (cond / uncond chunks, one reference per item)."""

    def __init__(self, adapter, embeds, layer_weights, window, mask=None, label: str = "IPAdapter", frame_weights=None,
                 managed=None):
        """managed: the adapter as a host model (managed_adapter), which the blocks' models() hand the host."""
        self._start(label, window, mask, frame_weights, embeds)
        self.adapter = adapter
        self.managed = managed
        cond, uncond = embeds.cond, embeds.uncond
        if self.per_item:
            (cond, uncond), self._row = distinct_rows(cond, uncond)
        self._features = (cond, uncond)
        for spec, w in zip(adapter.layers, layer_weights):
            self.layer_of_key[spec.comfy_key] = spec.index
            self.weight_of_layer[spec.index] = float(w)
            self._output_weight[spec.index] = float(w)  # "V only": lambda on the term

    def term(self, key, q, k, v, heads: int, host_norms, options: dict, attention):
        """lambda * mask * Attn(q', [k'; K'], [v; V']) of this block for the image rows q, k, v [B, L, H*D] as the
        host's attention received them; host_norms: the block's (ln_q, ln_k) weights, or None without QK norm."""
        step = options.get(STEP_KEY)
        if step is None:
            raise IPAdapterError(
                f"{self.label}: the SD3.5 adapter needs the sampler's timestep, which this call of the model does not "
                "give (it was not made through the model's apply_model). Sample with a KSampler node.")
        batch = q.shape[0]
        adapter = _adapter_on(self.managed.model if self.managed is not None else self.adapter, q.device, q.dtype)
        cond_or_uncond = options.get("cond_or_uncond")
        made = step["tokens"].get(id(self))
        if made is None:
            (features,) = self.arranged(FEATURES, self._features, cond_or_uncond, batch, q.device, q.dtype, options)
            timestep = step["timestep"].to(q.device, torch.float32).reshape(-1)
            with torch.no_grad():
                made = step["tokens"][id(self)] = adapter.step_tokens(features, timestep.expand(batch))
        layer = self.layer_of_key[key]
        w = adapter.block(layer)
        head_dim = adapter.config.head_dim
        q_host, k_host = host_norms if host_norms is not None else (None, None)
        with torch.no_grad():
            ip_k, ip_v = adapter.layer_kv(layer, *made)
            qa = renorm_heads(q, w.norm_q.weight, head_dim, q_host)
            ka = renorm_heads(k, w.norm_k.weight, head_dim, k_host)
        mask = self.spatial_mask(q.shape[1], step["latent"], cond_or_uncond, batch, q.device, q.dtype, options)
        self.calls += 1
        return sd3_image_term(qa, ka, v, ip_k, ip_v, heads, self.output_weight(key), mask, attention)


class SD3BlockPatch(BlockPatch):
    """Replacement of one joint block: the host's block with every branch's image term in its attention."""

    def __init__(self, key, branches=(), wrapped=None, norms=None):
        super().__init__(key, branches, wrapped)
        self.norms = norms  # the host block's (ln_q, ln_k) modules of its image stream, or None (no QK norm)

    def models(self) -> list:
        """The host models this block needs loaded (comfy/model_patcher.py model_patches_models asks every
        patches_replace entry): each branch's managed adapter, and what a wrapped patch needs."""
        found = {id(b.managed): b.managed for b in self.branches if getattr(b, "managed", None) is not None}
        wrapped = self.wrapped.models() if hasattr(self.wrapped, "models") else []
        return list(found.values()) + list(wrapped)

    def _host_norms(self, device, dtype):
        if self.norms is None:
            return None
        # read at call time: the host may have patched (LoRA) or moved the weights since the Apply node ran
        return tuple(n.weight.detach().to(device=device, dtype=torch.float32) for n in self.norms)

    def _run(self, args, original):
        options = args.get("transformer_options") or {}
        layer_key = self.key + (0,)  # LayerSpec.comfy_key of this block
        active = [b for b in self.branches if b.weight(layer_key) != 0 and b.window.active(options)]
        if not active:
            return original(args)  # the host's block, untouched
        txt = args["txt"].shape[1] if args.get("txt") is not None else 0
        previous = options.get("optimized_attention_override")

        def override(func, *a, **kw):
            out = previous(func, *a, **kw) if previous is not None else func(*a, **kw)
            # q, k: [B, L, H*D]; v keeps its heads apart ([B, L, H, D], mmdit.split_qkv): all as [B, L, H*D]
            q, k, v = (t.reshape(t.shape[0], t.shape[1], -1) for t in a[:3])
            heads = kw["heads"] if "heads" in kw else a[3]
            rows = slice(txt, q.shape[1])  # the image stream: after the context in the joint sequence
            attention = as_core_attention(func, kw)
            norms = self._host_norms(q.device, q.dtype)
            out = out.clone()  # the host's tensor is not ours to change in place
            for branch in active:
                term = branch.term(layer_key, q[:, rows], k[:, rows], v[:, rows], heads, norms, options, attention)
                out[:, rows] += term.to(out.dtype)
            return out

        return original({**args, "transformer_options": {**options, "optimized_attention_override": override}})


def _record_step(executor, *args, **kwargs):
    """APPLY_MODEL wrapper: executor(x, sigma, c_concat, c_crossattn, control, transformer_options, **kwargs).
    Adds this call's timesteps (as the host computes them for the MMDiT), latent size and token cache."""
    args = list(args)
    x = args[0] if args else kwargs["x"]
    sigma = args[1] if len(args) > 1 else kwargs["t"]
    step = {"timestep": executor.class_obj.model_sampling.timestep(sigma).float(), "latent": tuple(x.shape),
            "tokens": {}}
    if len(args) > 5:
        args[5] = {**(args[5] or {}), STEP_KEY: step}
    else:
        kwargs["transformer_options"] = {**(kwargs.get("transformer_options") or {}), STEP_KEY: step}
    return executor(*args, **kwargs)


def _release_after_sampling(executor, *args, **kwargs):
    """OUTER_SAMPLE wrapper (samplers.py CFGGuider.sample): the adapters' device copies live for one sampling."""
    try:
        return executor(*args, **kwargs)
    finally:
        _DEVICE_COPIES.clear()


def _norms_of(block):
    """(ln_q, ln_k) of a joint block's image stream when they are RMSNorms with a weight; None without QK norm."""
    attn = block.x_block.attn
    ln_q, ln_k = attn.ln_q, attn.ln_k
    if isinstance(ln_q, torch.nn.Identity):
        return None
    return ln_q, ln_k


def patch_sd3_model(model, branch: SD3Branch, layers):
    """A clone of `model` with `branch` in every joint block the adapter has (weight 0 blocks are left alone)."""
    blocks = host.sd3_joint_blocks(model)
    m, patched = patch_blocks(model, branch, branch, layers, SD3BlockPatch, lambda key, existing: SD3BlockPatch(
        key, (branch,), wrapped=existing, norms=_norms_of(blocks[key[1]])))
    host.add_model_wrapper(m, WRAPPER_KEY, _record_step, kind_name="APPLY_MODEL")
    host.add_model_wrapper(m, RELEASE_KEY, _release_after_sampling, kind_name="OUTER_SAMPLE")
    return m, patched


def check_sd3_model(a, model) -> None:
    """The model's joint blocks against the adapter's: width, head width, count, attention form, QK norms."""
    blocks = host.sd3_joint_blocks(model)
    if not blocks:
        return
    config = a.config
    x = blocks[0].x_block
    hidden, heads = int(x.attn.qkv.weight.shape[1]), int(x.attn.num_heads)
    fits = hidden == config.hidden_size and hidden // heads == config.head_dim and len(blocks) >= config.blocks
    if not fits:
        raise AdapterMismatchError(
            f"adapter/model mismatch: {a.name} is for SD3.5 joint blocks {config.hidden_size} wide (heads of "
            f"{config.head_dim}, {config.blocks} blocks), the model has {len(blocks)} blocks {hidden} wide with {heads} "
            "heads. Use SD3.5 Large (the InstantX adapter was trained on it).")
    if any(getattr(b.x_block, "x_block_self_attn", False) for b in blocks):
        raise AdapterMismatchError(
            f"{a.name} was trained on SD3.5 Large; this model's blocks have a second image self-attention (SD3.5 "
            "Medium's), which the adapter does not know. Use SD3.5 Large.")
    for i, b in enumerate(blocks[:config.blocks]):
        norms = _norms_of(b)
        if norms is None:
            continue
        for n in norms:
            w = getattr(n, "weight", None)
            if w is None or type(n).__name__ != "RMSNorm":
                raise AdapterMismatchError(
                    f"joint block {i} normalises Q/K with a {type(n).__name__}; the SD3.5 adapter reads them through "
                    "an RMSNorm with a weight (SD3.5 Large). Use SD3.5 Large.")
            if bool((w == 0).any()):
                raise IPAdapterError(
                    f"joint block {i}'s Q/K norm has zero weights, so the raw Q/K the adapter reads cannot be recovered "
                    "from the host's attention; this model's weights are not SD3.5 Large's.")
