"""A minimal, faithful stand-in of ComfyUI's calling convention for the node tests (no ComfyUI needed).

Every piece names the host code it mirrors (ComfyUI a125cd84, 2025-10). What matters for the nodes is
reproduced exactly: how replace patches are stored and copied, how the UNet names its blocks, how a
transformer block looks patches up and calls them, and what extra_options holds. The maths around it
(convolutions, feed-forwards) is replaced by cheap deterministic stand-ins: the tests compare the same
stand-in model with and without the adapter, never against real numbers.

install(monkeypatch, tmp_path) puts fake `folder_paths`, `comfy`, `comfy.utils`, `comfy.model_management`
and `comfy.ldm.modules.attention` modules into sys.modules for one test (monkeypatch restores them).
"""
from __future__ import annotations

import copy
import math
import os
import sys
import types

import torch
import torch.nn.functional as F
from torch import nn

from ip_core.attention import multihead_attention


# ---------------------------------------------------------------- comfy/model_patcher.py
def set_model_options_patch_replace(model_options, patch, name, block_name, number, transformer_index=None):
    """model_patcher.py:54-73, verbatim in behaviour: copies the dicts it changes, 3-key when an index is given."""
    to = model_options["transformer_options"].copy()
    to["patches_replace"] = dict(to.get("patches_replace", {}))
    to["patches_replace"][name] = dict(to["patches_replace"].get(name, {}))
    block = (block_name, number, transformer_index) if transformer_index is not None else (block_name, number)
    to["patches_replace"][name][block] = patch
    model_options["transformer_options"] = to
    return model_options


class ModelPatcher:
    """model_patcher.py ModelPatcher: model_options, clone() (deep-copies model_options, line 293),
    set_model_attn2_replace (line 423), get_model_object (line 466; no object patches here)."""

    def __init__(self, model):
        self.model = model
        self.model_options = {"transformer_options": {}}

    def clone(self):
        n = ModelPatcher(self.model)
        n.model_options = copy.deepcopy(self.model_options)
        return n

    def set_model_attn2_replace(self, patch, block_name, number, transformer_index=None):
        self.model_options = set_model_options_patch_replace(self.model_options, patch, "attn2", block_name, number, transformer_index)

    def get_model_object(self, name):
        obj = self.model
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    def attn2_patches(self) -> dict:
        return self.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})


# ---------------------------------------------------------------- comfy/model_sampling.py
class ModelSamplingDiscrete:
    """model_sampling.py ModelSamplingDiscrete for SD1.5/SDXL: scaled-linear betas 0.00085..0.012, 1000 steps;
    sigma(t) interpolates log-sigmas (line 165), percent_to_sigma (line 176)."""

    def __init__(self):
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.sigmas = (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).float()
        self.log_sigmas = self.sigmas.log()

    def sigma(self, timestep):
        t = torch.clamp(timestep.float(), min=0, max=len(self.sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def percent_to_sigma(self, percent):
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return self.sigma(torch.tensor((1.0 - percent) * 999.0)).item()


# ---------------------------------------------------------------- comfy/ldm/modules/attention.py
ATTENTION_CALLS = []  # (attn_precision, had transformer_options) per optimized_attention call


def optimized_attention(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, transformer_options=None, **kwargs):
    """attention.py attention_pytorch signature (line 476); SDPA maths. Records how it was called."""
    ATTENTION_CALLS.append((attn_precision, transformer_options is not None))
    return multihead_attention(q, k, v, heads, mask)


class CrossAttention(nn.Module):
    """attention.py CrossAttention (line 673): to_q/to_k/to_v without bias, to_out with bias."""

    def __init__(self, query_dim, context_dim, heads, dim_head):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim))

    def forward(self, x, context, transformer_options):
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        out = optimized_attention(q, k, v, self.heads, attn_precision=None, transformer_options=transformer_options)
        return self.to_out(out)


class BasicTransformerBlock:
    """The cross-attention half of attention.py BasicTransformerBlock.forward (lines 749-845).

    extra_options = transformer_options minus "patches"/"patches_replace", plus n_heads, dim_head,
    attn_precision; the attn2 replace patch is looked up under (block[0], block[1], block_index) first, then
    under block; a patch gets to_q(n), to_k(context), to_v(context) and its result goes through to_out.
    Self-attention and the feed-forward are left out: they never see attn2 patches. Shares the layer weights
    of its width (`attn`), which keeps the SDXL stand-in small.
    """

    def __init__(self, attn: CrossAttention, n_heads, d_head):
        self.attn2, self.n_heads, self.d_head = attn, n_heads, d_head
        self.attn_precision = None

    def __call__(self, x, context, transformer_options):
        extra_options = {}
        block = transformer_options.get("block", None)
        block_index = transformer_options.get("block_index", 0)
        transformer_patches_replace = {}
        for k in transformer_options:
            if k == "patches_replace":
                transformer_patches_replace = transformer_options[k]
            elif k != "patches":
                extra_options[k] = transformer_options[k]
        extra_options["n_heads"] = self.n_heads
        extra_options["dim_head"] = self.d_head
        extra_options["attn_precision"] = self.attn_precision
        transformer_block = (block[0], block[1], block_index) if block is not None else None

        n = x  # (norm2 left out)
        attn2_replace_patch = transformer_patches_replace.get("attn2", {})
        block_attn2 = transformer_block
        if block_attn2 not in attn2_replace_patch:
            block_attn2 = block
        if block_attn2 in attn2_replace_patch:
            q = self.attn2.to_q(n)
            k = self.attn2.to_k(context)
            v = self.attn2.to_v(context)
            n = attn2_replace_patch[block_attn2](q, k, v, extra_options)
            n = self.attn2.to_out(n)
        else:
            n = self.attn2(n, context=context, transformer_options=transformer_options)
        return n + x


# ---------------------------------------------------------------- comfy/ldm/modules/diffusionmodules/openaimodel.py
# (block kind, block id, resolution level, width, transformer depth) of every block with a SpatialTransformer.
SD15_BLOCKS = (
    [("input", i, lvl, w, 1) for i, lvl, w in ((1, 0, 320), (2, 0, 320), (4, 1, 640), (5, 1, 640), (7, 2, 1280), (8, 2, 1280))]
    + [("middle", 0, 3, 1280, 1)]
    + [("output", i, lvl, w, 1) for i, lvl, w in ((3, 2, 1280), (4, 2, 1280), (5, 2, 1280), (6, 1, 640), (7, 1, 640),
                                                   (8, 1, 640), (9, 0, 320), (10, 0, 320), (11, 0, 320))]
)
SDXL_BLOCKS = (
    [("input", i, lvl, w, d) for i, lvl, w, d in ((4, 1, 640, 2), (5, 1, 640, 2), (7, 2, 1280, 10), (8, 2, 1280, 10))]
    + [("middle", 0, 2, 1280, 10)]
    + [("output", i, lvl, w, d) for i, lvl, w, d in ((0, 2, 1280, 10), (1, 2, 1280, 10), (2, 2, 1280, 10), (3, 1, 640, 2),
                                                      (4, 1, 640, 2), (5, 1, 640, 2))]
)


class StandinUNet(nn.Module):
    """Walks blocks like openaimodel.UNetModel._forward (lines 846-893): sets original_shape and
    transformer_index, then transformer_options["block"] = ("input", id) / ("middle", 0) / ("output", id) before
    each block; inside a block, SpatialTransformer.forward (attention.py line 921) sets block_index = i per
    transformer and forward_timestep_embed bumps transformer_index after each SpatialTransformer.

    Features: the latent, average-pooled to each level (stride-2 ceil sizes) and lifted to the block width;
    each transformer's output is folded back into a running latent-shaped result.
    """

    def __init__(self, kind: str, context_dim: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.kind, self.context_dim = kind, context_dim
        self.blocks = SD15_BLOCKS if kind == "sd15" else SDXL_BLOCKS
        widths = sorted({b[3] for b in self.blocks})
        self.lift = nn.ModuleDict({str(w): nn.Linear(4, w) for w in widths})
        self.attn = nn.ModuleDict()
        self.heads = {}
        for w in widths:
            heads = 8 if kind == "sd15" else w // 64  # SD1.5 num_heads 8; SDXL num_head_channels 64
            self.heads[w] = heads
            self.attn[str(w)] = CrossAttention(w, context_dim, heads, w // heads)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * (1.0 / math.sqrt(p.shape[-1]))

    def forward(self, x, timesteps, context, transformer_options):
        transformer_options["original_shape"] = list(x.shape)
        transformer_options["transformer_index"] = 0
        out = x * 0.5
        for kind, number, level, width, depth in self.blocks:
            transformer_options["block"] = (kind, number)
            h, w = x.shape[-2], x.shape[-1]
            for _ in range(level):
                h, w = (h + 1) // 2, (w + 1) // 2
            feats = F.adaptive_avg_pool2d(x, (h, w)).flatten(2).transpose(1, 2)  # [B, h*w, 4]
            tokens = self.lift[str(width)](feats)
            blk = BasicTransformerBlock(self.attn[str(width)], self.heads[width], width // self.heads[width])
            for i in range(depth):
                transformer_options["block_index"] = i
                tokens = blk(tokens, context, transformer_options)
            transformer_options["transformer_index"] += 1
            folded = tokens.mean(-1).reshape(x.shape[0], 1, h, w)
            out = out + 0.1 * F.interpolate(folded, size=x.shape[-2:], mode="nearest")
        return out


class BaseModel:
    """model_base.BaseModel, the parts the nodes read: model_config.unet_config, model_sampling, diffusion_model."""

    def __init__(self, kind: str, seed: int = 0):
        ctx = 768 if kind == "sd15" else 2048
        self.model_config = types.SimpleNamespace(unet_config={"context_dim": ctx, "model_channels": 320})
        self.model_sampling = ModelSamplingDiscrete()
        self.diffusion_model = StandinUNet(kind, ctx, seed)


def make_model(kind: str = "sd15", seed: int = 0) -> ModelPatcher:
    return ModelPatcher(BaseModel(kind, seed))


# ---------------------------------------------------------------- comfy/samplers.py
def run_model(patcher: ModelPatcher, x, sigma: float, cond, uncond=None, cond_or_uncond=(0, 1), ad_params=None,
              context_window=None):
    """One model call as samplers._calc_cond_batch makes it (lines 296-331): chunks concatenated in
    cond_or_uncond order, transformer_options copied from model_options, cond_or_uncond and
    sigmas = the (per-latent) sigma tensor added, the same dict passed to every layer.
    ad_params: what AnimateDiff-Evolved's context windows add to transformer_options for one window
    ({"full_length", "sub_idxs", ...}); see run_context_windows. context_window: the host's core context
    window of this call (a ContextWindow); see run_core_context_windows."""
    chunks = {0: cond, 1: uncond}
    xs = torch.cat([x] * len(cond_or_uncond))
    ctx = torch.cat([chunks[c] for c in cond_or_uncond])
    timestep = torch.full((x.shape[0],), float(sigma))
    transformer_options = dict(patcher.model_options["transformer_options"])
    if ad_params is not None:
        transformer_options["ad_params"] = dict(ad_params)
    if context_window is not None:
        transformer_options["context_window"] = context_window
    transformer_options["cond_or_uncond"] = list(cond_or_uncond)
    transformer_options["uuids"] = [None] * len(cond_or_uncond)
    transformer_options["sigmas"] = timestep
    with torch.no_grad():
        return patcher.model.diffusion_model(xs, torch.cat([timestep] * len(cond_or_uncond)), ctx, transformer_options)


def context_windows(frames: int, length: int, overlap: int) -> list:
    """Uniform sliding windows with overlap, as AnimateDiff-Evolved's context options make them (the last
    window is moved back to end at the last frame)."""
    step = length - overlap
    starts = list(range(0, max(frames - length, 0) + 1, step))
    if starts[-1] + length < frames:
        starts.append(frames - length)
    return [list(range(s, min(s + length, frames))) for s in starts]


def run_context_windows(patcher: ModelPatcher, x, sigma: float, cond, uncond, length: int, overlap: int):
    """AnimateDiff's call pattern: the model on each window's frames (sub-batches of x, cond, uncond) with
    ad_params naming them; overlapping frames averaged. Returns (result [F, ...], windows)."""
    frames = x.shape[0]
    windows = context_windows(frames, length, overlap)
    total = torch.zeros(2 * frames, *x.shape[1:])
    count = torch.zeros(2 * frames, 1, 1, 1)
    for idxs in windows:
        sub = torch.tensor(idxs)
        out = run_model(patcher, x[sub], sigma, cond[sub], uncond[sub],
                        ad_params={"full_length": frames, "sub_idxs": idxs, "context_length": length})
        rows = torch.cat([sub, sub + frames])  # cond chunk then uncond chunk
        total[rows] += out
        count[rows] += 1
    return total / count, windows


class ContextWindow:
    """comfy/context_windows.py IndexListContextWindow (newer hosts), the attributes a model call can read:
    index_list (the window's frames), total_frames, dim (the axis of frames: 0 = the batch), and
    causal_anchor_index, set by the handler's causal_window_fix (a frame before the window, prepended)."""

    def __init__(self, index_list, total_frames=None, dim: int = 0):
        self.index_list, self.dim = list(index_list), dim
        if total_frames is not None:  # older hosts' windows (0.3.64) have no total_frames
            self.total_frames = total_frames


def run_core_context_windows(patcher: ModelPatcher, x, sigma: float, cond, uncond, length: int, overlap: int,
                             causal_window_fix: bool = True, says_total: bool = True):
    """The host's core context windows (IndexListContextHandler.evaluate_context_windows over dim 0): for each
    window, with causal_window_fix the frame before it (if any) is prepended as an anchor, the model is called
    on those frames with transformer_options["context_window"] = the window, the anchor's output is dropped;
    overlapping frames averaged. says_total False: older hosts' windows (no total_frames, no anchor). Returns
    (result [2F, ...], the windows' frames)."""
    frames = x.shape[0]
    windows = context_windows(frames, length, overlap)
    total = torch.zeros(2 * frames, *x.shape[1:])
    count = torch.zeros(2 * frames, 1, 1, 1)
    for idxs in windows:
        window = ContextWindow(idxs, frames if says_total else None)
        called = list(idxs)
        if causal_window_fix and idxs[0] > 0:
            window.causal_anchor_index = idxs[0] - 1
            called = [idxs[0] - 1] + called
        sub = torch.tensor(called)
        out = run_model(patcher, x[sub], sigma, cond[sub], uncond[sub], context_window=window)
        n = len(called)
        out = torch.cat([out[n - len(idxs):n], out[2 * n - len(idxs):]])  # the anchor's rows dropped
        rows = torch.cat([torch.tensor(idxs), torch.tensor(idxs) + frames])  # cond chunk then uncond chunk
        total[rows] += out
        count[rows] += 1
    return total / count, windows


# ---------------------------------------------------------------- comfy/clip_vision.py
class ClipVisionStandin(nn.Module):
    """A tiny random ViT/14-shaped encoder with the widths of ViT-H/14 (hidden 1280, projection 1024) or
    ViT-bigG/14 (1664, 1280): patch embedding, CLS token, no transformer layers."""

    def __init__(self, hidden=1280, projection=1024, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.patch = nn.Conv2d(3, hidden, 14, 14, bias=False)
        self.cls = nn.Parameter(torch.zeros(hidden))
        self.norm = nn.LayerNorm(hidden)
        self.proj = nn.Linear(hidden, projection, bias=False)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.05

    def forward(self, pixel_values, intermediate_output=None):
        """clip_model.CLIPVisionModelProjection.forward -> (last_hidden, intermediate, projected, mm_projected)."""
        x = self.patch(pixel_values).flatten(2).transpose(1, 2)
        cls = self.cls + x.mean(dim=1, keepdim=True)  # the CLS token sees the image (as attention would make it)
        x = torch.cat([cls, x], dim=1)
        penultimate = torch.tanh(x)
        last = self.norm(penultimate)
        return last, penultimate, self.proj(last[:, 0]), None


class ClipVisionModel:
    """clip_vision.py ClipVisionModel: image_size, load_device, patcher, model, encode_image (line 71)."""

    def __init__(self, hidden=1280, projection=1024, seed=0):
        self.image_size = 224
        self.load_device = torch.device("cpu")
        self.model = ClipVisionStandin(hidden, projection, seed).eval()
        self.patcher = types.SimpleNamespace(model=self.model)
        self.calls = 0

    def encode_image(self, image, crop=True):
        from ip_core.preprocess import preprocess_images

        pixel_values = preprocess_images(image, mode="center" if crop else "squash")
        with torch.no_grad():
            out = self.model(pixel_values=pixel_values, intermediate_output=-2)
        return types.SimpleNamespace(last_hidden_state=out[0], image_embeds=out[2], penultimate_hidden_states=out[1])


# ---------------------------------------------------------------- host modules
class InterruptProcessingException(Exception):
    """model_management.py line 1405."""


def make_host_modules(models_dir: str) -> dict:
    """Fake folder_paths (folder_paths.py), comfy.utils (ProgressBar, line 1024), comfy.model_management."""
    fp = types.ModuleType("folder_paths")
    fp.models_dir = models_dir
    fp.supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
    fp.folder_names_and_paths = {"checkpoints": ([os.path.join(models_dir, "checkpoints")], fp.supported_pt_extensions)}

    def add_model_folder_path(folder_name, full_folder_path, is_default=False):  # folder_paths.py:214
        if folder_name in fp.folder_names_and_paths:
            paths = fp.folder_names_and_paths[folder_name][0]
            if full_folder_path not in paths:
                paths.insert(0, full_folder_path) if is_default else paths.append(full_folder_path)
        else:
            fp.folder_names_and_paths[folder_name] = ([full_folder_path], set())

    def get_folder_paths(folder_name):  # folder_paths.py:232
        return fp.folder_names_and_paths[folder_name][0][:]

    def get_filename_list(folder_name):  # folder_paths.py:312 (recursive, filtered; empty set = any)
        paths, exts = fp.folder_names_and_paths[folder_name]
        out = set()
        for base in paths:
            for root, _, files in os.walk(base):
                for f in files:
                    rel = os.path.relpath(os.path.join(root, f), base)
                    if not exts or os.path.splitext(f)[1].lower() in exts:
                        out.add(rel)
        return sorted(out)

    def get_full_path(folder_name, filename):  # folder_paths.py:282
        if folder_name not in fp.folder_names_and_paths:
            return None
        filename = os.path.relpath(os.path.join("/", filename), "/")
        for base in fp.folder_names_and_paths[folder_name][0]:
            full = os.path.join(base, filename)
            if os.path.isfile(full):
                return full
        return None

    fp.add_model_folder_path, fp.get_folder_paths = add_model_folder_path, get_folder_paths
    fp.get_filename_list, fp.get_full_path = get_filename_list, get_full_path
    # folder_paths.py: input/ beside models/ in the ComfyUI folder
    fp.get_input_directory = lambda: os.path.join(os.path.dirname(models_dir), "input")

    comfy = types.ModuleType("comfy")
    comfy.__path__ = []
    utils = types.ModuleType("comfy.utils")

    class ProgressBar:
        instances = []

        def __init__(self, total, node_id=None):
            self.total, self.current = total, 0
            ProgressBar.instances.append(self)

        def update(self, value):
            self.current = min(self.total, self.current + value)

    utils.ProgressBar = ProgressBar
    mm = types.ModuleType("comfy.model_management")
    mm.InterruptProcessingException = InterruptProcessingException
    mm.interrupt_processing = False
    mm.loaded = []

    def throw_exception_if_processing_interrupted():
        if mm.interrupt_processing:
            mm.interrupt_processing = False
            raise InterruptProcessingException()

    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.load_models_gpu = lambda patchers, **kw: mm.loaded.extend(patchers)
    mm.intermediate_device = lambda: torch.device("cpu")
    ldm = types.ModuleType("comfy.ldm")
    ldm.__path__ = []
    modules = types.ModuleType("comfy.ldm.modules")
    modules.__path__ = []
    attention = types.ModuleType("comfy.ldm.modules.attention")
    attention.optimized_attention = optimized_attention
    comfy.utils, comfy.model_management, comfy.ldm = utils, mm, ldm
    ldm.modules, modules.attention = modules, attention
    return {
        "folder_paths": fp, "comfy": comfy, "comfy.utils": utils, "comfy.model_management": mm,
        "comfy.ldm": ldm, "comfy.ldm.modules": modules, "comfy.ldm.modules.attention": attention,
    }


def install(monkeypatch, models_dir: str) -> types.SimpleNamespace:
    mods = make_host_modules(models_dir)
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    ATTENTION_CALLS.clear()
    return types.SimpleNamespace(folder_paths=mods["folder_paths"], utils=mods["comfy.utils"],
                                 model_management=mods["comfy.model_management"], models_dir=models_dir)
