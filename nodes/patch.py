"""The attn2 replace patch ComfyUI calls in every cross-attention layer.

Host contract (comfy/ldm/modules/attention.py, BasicTransformerBlock.forward): for a layer whose key is in
transformer_options["patches_replace"]["attn2"] (looked up as (block, number, block_index) first, then
(block, number)), the host computes q = to_q(x), k = to_k(context), v = to_v(context), calls
`patch(q, k, v, extra_options)` and passes the result through to_out. extra_options holds n_heads,
attn_precision, block, block_index, cond_or_uncond, sigmas, original_shape (comfy/samplers.py
_calc_cond_batch and openaimodel.UNetModel._forward put them there).

Only one patch can sit at a key, so one IPAttentionPatch holds every adapter applied to the model
(branches: stacked Apply nodes add up) and wraps whatever other patch was there before it.

ModelPatcher.clone() deep-copies model_options (comfy/model_patcher.py), i.e. our patches: branches are
immutable after creation and shared between copies (their K'/V' caches too), so cloning costs nothing.
"""
from __future__ import annotations

import copy
import threading
from typing import Optional

import torch
import torch.nn.functional as F

from . import host
from ..ip_core import attention, errors
from ..ip_core import frames as frame_rules

image_attention, scaled_image_kv = attention.image_attention, attention.scaled_image_kv
AdapterMismatchError, IPAdapterError = errors.AdapterMismatchError, errors.IPAdapterError


class SigmaWindow:
    """start_at/end_at as sigmas (ModelSampling.percent_to_sigma), tested once per UNet call.

    The host passes one `sigmas` tensor object to every layer of one model call (samplers.py:
    transformer_options["sigmas"] = timestep). Reading it costs a device->host sync, so the answer is kept
    for that tensor object and the other layers of the call reuse it: at most one sync per UNet call per
    Apply node, and none at all when the window is the whole schedule (the default).

    One window is shared by every copy of the model options, also by the clones the host samples with in
    threads, one per device (comfy/multigpu.py MultiGPUThreadPool): the kept answer is per thread.
    """

    def __init__(self, sigma_start: float, sigma_end: float, whole_schedule: bool):
        self.sigma_start = float(sigma_start)
        self.sigma_end = float(sigma_end)
        self.whole_schedule = whole_schedule
        # per thread: (the last sigmas tensor seen (strong ref: its id cannot be reused meanwhile), its version,
        # the answer)
        self._kept = threading.local()
        self.syncs = 0  # how often the sigma was read from the device (tests check it stays per call)

    def active(self, extra_options: dict) -> bool:
        if self.whole_schedule:
            return True
        sigmas = extra_options.get("sigmas")
        if sigmas is None:
            return True  # called outside a sampler: behave as the full window
        # Inference tensors (the host's executor samples under torch.inference_mode) have no version counter.
        version = None if sigmas.is_inference() else sigmas._version
        kept = getattr(self._kept, "last", None)
        if kept is not None and kept[0] is sigmas and kept[1] == version:
            return kept[2]
        sigma = float(sigmas.detach().reshape(-1)[0])
        self.syncs += 1
        active = self.sigma_end <= sigma <= self.sigma_start
        self._kept.last = (sigmas, version, active)
        return active

    def __deepcopy__(self, memo):
        return self


def downsampled_hw(original_shape, tokens: int) -> tuple:
    """(h, w) of a layer with `tokens` query positions in a UNet whose input latent is original_shape.

    The UNet's stride-2 convolutions (kernel 3, padding 1) give ceil(h / 2), so odd sizes are exact too.
    """
    h, w = int(original_shape[-2]), int(original_shape[-1])
    while h * w > tokens:
        h, w = (h + 1) // 2, (w + 1) // 2
    if h * w != tokens:
        raise IPAdapterError(
            f"cannot place the attention mask: a layer has {tokens} positions, which is no downsampling of the "
            f"{original_shape[-2]}x{original_shape[-1]} latent. Remove attn_mask for this model."
        )
    return h, w


class AdapterBranch:
    """One Apply node's contribution: an adapter's K'/V' for every layer, its weights, window and mask.

    K'/V' are computed once, at apply time, from the cond and uncond tokens; a layer call only looks them up
    (converted once per device/dtype, arranged once per cond/uncond batch layout).

    Frames (ip_core.frames): with one reference per frame, one mask per frame or per-frame weights, each
    frame of the call (all of the batch, or the context window named in extra_options["ad_params"]) picks
    its own; fewer values than frames repeat the last. K'/V' exist once per distinct reference; the
    per-frame arrangement is kept only for the current window.
    """

    def __init__(self, adapter, embeds, layer_weights, window: SigmaWindow, mask: Optional[torch.Tensor] = None,
                 label: str = "IPAdapter", frame_weights=None, *, swap_layers=(), composition_layers=(),
                 composition_embeds=None, embeds_scaling: str = "V only"):
        """layer_weights: lambda per layer (adapter layer order). swap_layers: layer indexes where the cond
        tokens go to the uncond slot and the cond slot gets none (the precise weight types);
        composition_layers: where composition_embeds' cond tokens replace the reference's; embeds_scaling:
        where lambda enters (ip_core.attention.scaled_image_kv), folded into K'/V' here, once."""
        self._start(label, window, mask, frame_weights, embeds)
        self._kv = {}  # layer index -> (k_cond, v_cond, k_uncond, v_uncond) as computed (fp32, adapter device)
        param = next(adapter.parameters())
        cond = embeds.cond.to(param.device, param.dtype)
        uncond = embeds.uncond.to(param.device, param.dtype)
        comp = cond if composition_embeds is None else composition_embeds.cond.to(param.device, param.dtype)
        if self.per_item:
            (cond, uncond, comp), self._row = distinct_rows(cond, uncond, comp)
        swap_layers, composition_layers = set(swap_layers), set(composition_layers)
        with torch.no_grad():
            for spec, w in zip(adapter.layers, layer_weights):
                self.layer_of_key[spec.comfy_key] = spec.index
                self.weight_of_layer[spec.index] = float(w)
                if w == 0:
                    continue  # never computed, never run
                c = comp if spec.index in composition_layers else cond
                # swapped: the uncond slot attends to the reference, the cond slot to no tokens (zeros:
                # K'/V' have no bias, so its image term is exactly 0)
                c, u = (c * 0, c) if spec.index in swap_layers else (c, uncond)
                kc, vc = _rows_kv(adapter, spec.index, c)
                ku, vu = _rows_kv(adapter, spec.index, u)
                kc, vc, out_w = scaled_image_kv(kc, vc, float(w), embeds_scaling)
                ku, vu, _ = scaled_image_kv(ku, vu, float(w), embeds_scaling)
                self._output_weight[spec.index] = out_w
                self._kv[spec.index] = (kc, vc, ku, vu)

    def _start(self, label, window, mask, frame_weights, embeds):
        """What every branch holds besides its image tokens: names, window, mask, the per-item layout, caches."""
        self.label = label
        self.window = window
        self.mask = mask  # [M, H, W] float or None
        self.frame_weights = None if frame_weights is None else torch.tensor(frame_weights, dtype=torch.float32)
        self.per_item = embeds.cond.shape[0] > 1
        self.references = embeds.cond.shape[0]
        self._row = list(range(self.references))  # reference -> its row of the tables
        self.layer_of_key = {}
        self.weight_of_layer = {}
        self._output_weight = {}  # layer index -> the factor on Attn(q, K'', V'') (lambda for "V only", else 1)
        self._on_device = {}  # (table, device, dtype) -> the table's tensors there
        self._arranged = {}  # (table, device, dtype, cond_or_uncond, batch, frames) -> rows per batch item
        self._masks = {}  # (tokens, original hw, device, dtype, cond_or_uncond, batch, frames) -> [B, tokens, 1]
        self._frames_held = None  # the per-frame window whose arrangements are kept
        self.calls = 0  # image-branch evaluations (tests count them per UNet call)

    def __deepcopy__(self, memo):
        return self

    def weight(self, key) -> float:
        layer = self.layer_of_key.get(key)
        return 0.0 if layer is None else self.weight_of_layer[layer]

    def output_weight(self, key) -> float:
        """The factor on this layer's Attn(q, K'', V''): lambda, or 1 where the scaling folded it into K'/V'."""
        return self._output_weight[self.layer_of_key[key]]

    def _window(self, per_chunk: int, extra_options):
        """(full_length, frame indices) of this call; arrangements of other per-frame windows are dropped."""
        full, idxs = frame_rules.window_of(host.frame_window_options(extra_options or {}), per_chunk)
        held = (full, tuple(idxs))
        if held != self._frames_held:
            # list(...) snapshots the cache in one step: a thread sampling another device (one model clone per
            # device) may add to it meanwhile. Entries are keyed by their frames, so a thread never reads another
            # window's; a window another thread dropped is only computed again.
            self._arranged = {k: v for k, v in list(self._arranged.items()) if k[-1] is None}
            self._masks = {k: v for k, v in list(self._masks.items()) if k[-1] is None}
            self._frames_held = held
        return full, idxs

    def device_bytes(self) -> int:
        """Bytes this branch holds in K'/V' and masks (all devices): what the memory benchmark reports."""
        held = [t for parts in self._on_device.values() for t in parts]
        held += [t for kv in self._arranged.values() for t in kv] + list(self._masks.values())
        return sum(t.numel() * t.element_size() for t in {id(t): t for t in held}.values())

    def kv(self, key, cond_or_uncond, batch: int, device, dtype, extra_options=None):
        """(K', V') of layer `key` for this call's batch: each row the cond or uncond one of its chunk (and, per
        item, its frame's reference)."""
        layer = self.layer_of_key[key]
        return self.arranged(layer, self._kv[layer], cond_or_uncond, batch, device, dtype, extra_options)

    def arranged(self, table, parts, cond_or_uncond, batch: int, device, dtype, extra_options=None) -> tuple:
        """parts = (cond tensors..., uncond tensors...), each [references, ...]: the cond half's rows for the cond
        chunks of the batch, the uncond half's for the uncond chunks; kept per (table, device, layout)."""
        chunks = tuple(cond_or_uncond) if cond_or_uncond else (0,)
        frames = None
        if self.per_item and batch % len(chunks) == 0:
            full, idxs = self._window(batch // len(chunks), extra_options)
            sources = frame_rules.frame_picks(self.references, full, idxs, f"references of {self.label}")
            frames = tuple(self._row[s] for s in sources)
        ck = (table, device, dtype, chunks, batch, frames)
        hit = self._arranged.get(ck)
        if hit is not None:
            return hit
        dk = (table, device, dtype)
        moved = self._on_device.get(dk)
        if moved is None:
            moved = tuple(t.to(device=device, dtype=dtype) for t in parts)
            self._on_device[dk] = moved
        if batch % len(chunks):
            raise IPAdapterError(f"{self.label}: batch of {batch} does not split into {len(chunks)} cond/uncond chunks")
        per_chunk = batch // len(chunks)
        half = len(moved) // 2
        pick = None if frames is None else torch.tensor(frames, device=device)
        rows = [[] for _ in range(half)]
        for c in chunks:
            for i, t in enumerate(moved[:half] if c == 0 else moved[half:]):
                rows[i].append(t.expand(per_chunk, *t.shape[1:]) if pick is None else t.index_select(0, pick))
        out = tuple(torch.cat(r).contiguous() for r in rows)
        self._arranged[ck] = out
        return out

    def spatial_mask(self, tokens: int, original_shape, cond_or_uncond, batch: int, device, dtype, extra_options=None):
        """[batch, tokens, 1]: the mask of each frame times its frame weight, or None (neither is set)."""
        if self.mask is None and self.frame_weights is None:
            return None
        chunks = tuple(cond_or_uncond) if cond_or_uncond else (0,)
        per_chunk = batch // len(chunks)
        frames = None
        if self.frame_weights is not None or self.mask.shape[0] > 1:
            full, idxs = self._window(per_chunk, extra_options)
            frames = (full, tuple(idxs))
        key = (tokens, tuple(original_shape[-2:]), device, dtype, chunks, batch, frames)
        hit = self._masks.get(key)
        if hit is not None:
            return hit
        m = torch.ones(1, tokens, 1)
        if self.mask is not None:
            h, w = downsampled_hw(original_shape, tokens)
            m = F.interpolate(self.mask[:, None].float(), size=(h, w), mode="bilinear", align_corners=False)
            m = m.reshape(m.shape[0], h * w, 1)
        if frames is not None:
            full, idxs = frames
            if m.shape[0] > 1:
                m = m[frame_rules.frame_picks(m.shape[0], full, idxs, f"attn_mask masks of {self.label}")]
            if self.frame_weights is not None:
                picks = frame_rules.frame_picks(len(self.frame_weights), full, idxs, f"frame_weights of {self.label}")
                m = m * self.frame_weights[picks].reshape(-1, 1, 1)
        m = m.expand(per_chunk, -1, -1).repeat(len(chunks), 1, 1)
        m = m.to(device=device, dtype=dtype)
        self._masks[key] = m
        return m


def distinct_rows(*parts: torch.Tensor):
    """A reference repeated over frames (e.g. IPAdapter Frame Weights' image_1) gets one row of K'/V', not
    one per frame: ((each part's distinct rows), row of each reference). Only rows identical in every part
    (cond, uncond, composition tokens) merge."""
    keys = torch.cat([p.flatten(1) for p in parts], dim=1)
    inverse = torch.unique(keys, dim=0, return_inverse=True)[1].tolist()
    first = {}  # distinct row -> its first reference, in first-seen order
    for r, u in enumerate(inverse):
        first.setdefault(u, r)
    slot = {u: i for i, u in enumerate(first)}
    keep = list(first.values())
    return tuple(p[keep] for p in parts), [slot[u] for u in inverse]


def _rows_kv(adapter, layer: int, tokens: torch.Tensor):
    """K'/V' of each reference on its own: a reference's K'/V' are the same numbers whether it is alone or
    one of many (a batched matmul may round differently), so per-frame runs equal shared runs bit for bit."""
    if tokens.shape[0] == 1:
        return adapter.layer_kv(layer, tokens)
    pairs = [adapter.layer_kv(layer, tokens[r:r + 1]) for r in range(tokens.shape[0])]
    return torch.cat([k for k, _ in pairs]), torch.cat([v for _, v in pairs])


class IPAttentionPatch:
    """Replacement of one attn2 layer: text attention (or the wrapped foreign patch) plus every branch."""

    def __init__(self, key, branches=(), wrapped=None):
        self.key = key
        self.branches = tuple(branches)
        self.wrapped = wrapped

    def with_branch(self, branch: AdapterBranch) -> "IPAttentionPatch":
        return IPAttentionPatch(self.key, self.branches + (branch,), self.wrapped)

    def __deepcopy__(self, memo):
        # Branches are immutable and shared; a foreign wrapped patch is copied as the host would copy it.
        return IPAttentionPatch(self.key, self.branches, copy.deepcopy(self.wrapped, memo))

    def to(self, device):
        """ModelPatcher.model_patches_to calls .to(device) on replace patches that have it: pass it on to a
        wrapped patch that needs it (ours move lazily, once per device, on first use)."""
        if self.wrapped is not None and hasattr(self.wrapped, "to"):
            return IPAttentionPatch(self.key, self.branches, self.wrapped.to(device))
        return self

    def __call__(self, q, k, v, extra_options):
        heads = extra_options["n_heads"]
        attention = host.attention_for(extra_options)
        active = [b for b in self.branches if b.weight(self.key) != 0 and b.window.active(extra_options)]
        out = self.wrapped(q, k, v, extra_options) if self.wrapped is not None else attention(q, k, v, heads)
        cond_or_uncond = extra_options.get("cond_or_uncond")
        batch = q.shape[0]
        # Attn(text) + sum_i lambda_i * mask_i * Attn(q, K'_i, V'_i): stacked Apply nodes add up
        for branch in active:
            ip_k, ip_v = branch.kv(self.key, cond_or_uncond, batch, q.device, q.dtype, extra_options)
            mask = branch.spatial_mask(q.shape[1], extra_options.get("original_shape", (0, 0)), cond_or_uncond,
                                       batch, q.device, q.dtype, extra_options)
            branch.calls += 1
            out = out + image_attention(q, ip_k, ip_v, heads, branch.output_weight(self.key), mask, attention)
        return out


def patch_model(model, branch: AdapterBranch, layers):
    """A clone of `model` (a ComfyUI ModelPatcher) with `branch` in every layer; the input is not touched.

    Registers under (block, number, transformer_index), the key BasicTransformerBlock looks up first, so
    the middle block is ("middle", 0, i): the key the host really uses (openaimodel.py sets
    transformer_options["block"] = ("middle", 0); ComfyUI_IPAdapter_plus registers ("middle", 1), which is
    never looked up). An existing patch at the 3-key or at the host's fallback 2-key is kept: our patch
    extends it (ours) or wraps it (anyone else's).
    """
    m = model.clone()
    replace = m.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
    patched = 0
    for spec in layers:
        key = spec.comfy_key
        if key is None:
            raise AdapterMismatchError(
                f"{branch.label}: this adapter was made for a custom UNet and has no ComfyUI layer names; "
                "it can only be used with SD1.5 or SDXL models."
            )
        existing = replace.get(key, replace.get(key[:2]))
        if branch.weight(key) == 0 and existing is None:
            continue  # nothing to run here; leave the layer to the host's own attention
        if isinstance(existing, IPAttentionPatch):
            new = existing.with_branch(branch)
        else:
            new = IPAttentionPatch(key, (branch,), wrapped=existing)
        m.set_model_attn2_replace(new, key[0], key[1], key[2])
        patched += 1
    return m, patched
