"""`python -m trainer demo`: an IP-Adapter reproduction in miniature, from nothing, on a CPU.

Stages (each cached in --output-dir/cache under a hash of its settings and its inputs' hashes, so a rerun
reuses what is done): judges -> base model -> image encoder -> IP-Adapter -> ablation -> fully fine-tuned
model -> derived model -> evaluation -> derived evaluation -> results.json / results.md / one grid per claim.
With --sd15/--image-encoder/--ip-adapter it instead generates with real weights (see real.py).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, replace

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ip_core.adapter import save_adapter
from ip_core.errors import EXIT_FAILED, EXIT_USAGE, IPAdapterError
from ip_core.text import read_text

from . import adapters as A
from .adapters import AdapterTrainConfig
from .base import BaseConfig, TinyBase, train_base
from .encoder import build_encoder, encode_images, encoder_arch, linear_probe, pretrain_encoder
from .judges import ShapeJudge, colour_judge_accuracy, shape_judge_accuracy, style_judge_accuracy, train_shape_judge
from .metrics import EvalConfig, derived_lambdas, evaluate, evaluate_derived, intervals, total_images
from .real import run_real
from .report import results_markdown, save_grid
from .shapes import COLOUR_NAMES, SHAPES, make_shapes


@dataclass(frozen=True)
class DemoConfig:
    seed: int = 0
    image_size: int = 16
    train_images: int = 8192
    judge_steps: int = 600  # its data has tinted backgrounds too (the derived style): 600 steps read both at ~98-99%
    encoder_pretrain_steps: int = 200  # 0 = random-init frozen tower
    # the derived model: the base's UNet fine-tuned (text-only data, captions unchanged) into a new style
    derived_style: str = "teal"
    derived_steps: int = 300
    derived_lr: float = 1e-3
    base: BaseConfig = BaseConfig()
    adapter: AdapterTrainConfig = AdapterTrainConfig()
    eval: EvalConfig = EvalConfig()


def full_config(seed: int = 0) -> DemoConfig:
    return DemoConfig(seed=seed)


def quick_config(seed: int = 0) -> DemoConfig:
    # About a third of the compute; higher learning rates make up part of the shorter schedules.
    return DemoConfig(
        seed=seed, train_images=4096, judge_steps=300, encoder_pretrain_steps=60,
        base=replace(BaseConfig(), steps=500, lr=4e-3), adapter=replace(AdapterTrainConfig(), steps=200, lr=3e-3),
        derived_steps=100, derived_lr=2e-3,
        eval=replace(EvalConfig(), refs_per_combination=2, lambdas=(0.0, 0.5, 1.0), sample_steps=15),
    )


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("demo (synthetic, from nothing)")
    g.add_argument("--quick", action="store_true", help="a shorter run (CI): fewer steps and references")
    g.add_argument("--output-dir", default="demo_output", help="where results, grids and the stage cache go (default: ./demo_output)")
    g.add_argument("--seed", type=int, default=0, help="seed of every stage (data, init, drops, sampling)")
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 for the synthetic demo - its tiny models gain little from more and "
                        "lose a lot when the cores are shared - and torch's default with real weights)")
    g.add_argument("--no-cache", action="store_true", help="recompute every stage even if its output is cached")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    r = parser.add_argument_group("real weights (generate instead of the synthetic demo)")
    r.add_argument("--sd15", help="SD1.5 diffusers folder or single-file .safetensors")
    r.add_argument("--sd15-config", help="offline config folder for a single-file --sd15 (a diffusers SD1.5 folder without weights)")
    r.add_argument("--image-encoder", help="CLIP vision model: transformers folder, or OpenCLIP/transformers weight file")
    r.add_argument("--image-encoder-arch", default="ViT-H-14", help="open_clip architecture of a single-file --image-encoder (name, or a JSON model config file)")
    r.add_argument("--ip-adapter", help="IP-Adapter weights (.safetensors / .bin)")
    r.add_argument("--reference", action="append", help="reference image (repeat for several); default: a generated shape")
    r.add_argument("--prompt", default="", help="text prompt (default: empty = image prompt only)")
    r.add_argument("--negative-prompt", default="", help="negative text prompt")
    r.add_argument("--scale", type=float, action="append", help="lambda(s) (repeatable; default 0 and 1)")
    r.add_argument("--steps", type=int, default=30, help="DDIM steps (real weights)")
    r.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance (real weights)")
    r.add_argument("--resolution", type=int, default=None, help="output size (default: the UNet's sample size x VAE factor)")
    r.add_argument("--num-images", type=int, default=1, help="images per reference and lambda")
    return parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer demo", description=__doc__.split("\n\n")[0])
    return add_arguments(p)


# ---------------------------------------------------------------------------------------------- cache

def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


class StageCache:
    def __init__(self, root: str, enabled: bool = True):
        self.root = os.path.join(root, "cache")
        self.enabled = enabled
        os.makedirs(self.root, exist_ok=True)

    def path(self, name: str, key: str, suffix: str = ".safetensors") -> str:
        return os.path.join(self.root, f"{name}-{key}{suffix}")

    def load(self, name: str, key: str):
        """-> (tensors dict, meta dict) or None."""
        p, m = self.path(name, key), self.path(name, key, ".json")
        if not (self.enabled and os.path.exists(p) and os.path.exists(m)):
            return None
        try:
            meta = json.loads(read_text(m))
            return load_file(p), meta
        except Exception:  # a torn or foreign file: recompute rather than fail
            return None

    def save(self, name: str, key: str, tensors: dict, meta: dict) -> None:
        p = self.path(name, key)
        save_file({k: v.contiguous() for k, v in tensors.items()}, p + ".tmp")
        os.replace(p + ".tmp", p)
        self._write_json(self.path(name, key, ".json"), meta)

    def save_computed(self, name: str, key: str, record: dict) -> None:
        """How the stage's output was computed (its seconds, the environment), so a rerun can report it."""
        self._write_json(self.path(name, key, ".computed.json"), record)

    def computed(self, name: str, key: str):
        """-> the record save_computed wrote, or None (none written, or unreadable)."""
        try:
            with open(self.path(name, key, ".computed.json")) as fh:
                record = json.load(fh)
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    @staticmethod
    def _write_json(path: str, obj) -> None:
        with open(path + ".tmp", "w") as fh:
            json.dump(obj, fh, indent=1)
        os.replace(path + ".tmp", path)


class Progress:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, desc: str, total: int):
        return tqdm(total=total, desc=desc, disable=not self.enabled, leave=True, dynamic_ncols=True, file=sys.stderr)


# ---------------------------------------------------------------------------------------------- the run

def environment() -> dict:
    """What the figures depend on besides the seed: the interpreter, the numeric packages, the CPU."""
    from importlib import metadata

    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    cpu = platform.processor() or platform.machine()
    try:  # Linux names the model in /proc/cpuinfo; platform.processor() there is often just the architecture
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
            # the kernels torch picked for this CPU (AVX512, AVX2, ...; ATEN_CPU_CAPABILITY overrides): they round differently
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            **{name: version(dist) for name, dist in (("numpy", "numpy"), ("pillow", "pillow"),
                                                       ("diffusers", "diffusers"), ("transformers", "transformers"),
                                                       ("open_clip", "open_clip_torch"), ("safetensors", "safetensors"))},
            "cpu": cpu, "cpu_count": os.cpu_count()}


class DemoRun:
    """One run's state: what the stages read (config, cache, progress bars) and what each adds for the next."""

    def __init__(self, cfg: DemoConfig, output_dir: str, cache: StageCache, bar: Progress):
        self.cfg, self.output_dir, self.cache, self.bar = cfg, output_dir, cache, bar
        self.S, self.seed = cfg.image_size, cfg.seed
        self.adapter_file = os.path.join(output_dir, "ip-adapter_demo.safetensors")
        self.entry = None  # (cache name, key) of the running stage's output; None for a stage with no cached output
        self.hit = False

    def load_or_train(self, name: str, key: str, restore, train) -> dict:
        """The stage's output from the cache when it is there (restore(tensors) puts the tensors back), else
        train() -> (tensors, meta), saved for the next run. -> meta."""
        self.entry = (name, key)
        hit = self.cache.load(name, key)
        self.hit = bool(hit)
        if hit:
            restore(hit[0])
            return hit[1]
        tensors, meta = train()
        self.cache.save(name, key, tensors, meta)
        return meta


def _mean_tail(losses) -> float:
    return sum(losses[-50:]) / len(losses[-50:])


def _judges(r: DemoRun) -> str:
    cfg, S, seed = r.cfg, r.S, r.seed
    r.judge_key = _hash({"judge": 4, "size": S, "seed": seed, "steps": cfg.judge_steps, "style": cfg.derived_style})  # bump when the judge changes
    r.judge = ShapeJudge()

    def restore(sd):
        r.judge.load_state_dict(sd)
        r.judge.eval().requires_grad_(False)

    def train():
        with r.bar("judges: shape CNN", cfg.judge_steps) as pb:
            r.judge, acc, acc_noisy = train_shape_judge(S, seed, steps=cfg.judge_steps, progress=pb)
        return r.judge.state_dict(), {
            "shape_accuracy": acc, "shape_accuracy_noisy": acc_noisy, "colour_accuracy": colour_judge_accuracy(S, seed),
            "shape_accuracy_derived_style": shape_judge_accuracy(r.judge, S, seed, cfg.derived_style),
            "colour_accuracy_derived_style": colour_judge_accuracy(S, seed, cfg.derived_style)}

    meta = r.load_or_train("judge", r.judge_key, restore, train)
    r.judges = dict(meta)
    return (f"shape CNN held-out accuracy {meta['shape_accuracy']:.3f} "
            f"({meta['shape_accuracy_derived_style']:.3f} on the derived style's images)")


def _base_model(r: DemoRun) -> str:
    cfg, seed = r.cfg, r.seed
    r.data = make_shapes(cfg.train_images, seed=seed, size=r.S)
    r.base_key = _hash({"base": cfg.base.to_dict(), "seed": seed, "n": cfg.train_images})
    torch.manual_seed(seed)
    r.base = TinyBase(replace(cfg.base, image_size=r.S))

    def restore(sd):
        r.base.load_state_dict(sd)
        r.base.freeze()

    def train():
        with r.bar("base model: UNet + text encoder", cfg.base.steps) as pb:
            losses = train_base(r.base, r.data, seed, progress=pb)
        return r.base.state_dict(), {"final_loss": _mean_tail(losses),
                                     "unet_parameters": sum(p.numel() for p in r.base.unet.parameters())}

    r.base_meta = meta = r.load_or_train("base", r.base_key, restore, train)
    return f"{meta['unet_parameters']:,} UNet parameters, final loss {meta['final_loss']:.4f}"


def _image_encoder(r: DemoRun) -> str:
    cfg, S, seed = r.cfg, r.S, r.seed
    arch = encoder_arch(S)
    r.enc_key = _hash({"arch": arch, "seed": seed, "pretrain": cfg.encoder_pretrain_steps})
    r.encoder = encoder = build_encoder(arch, seed)

    def train():
        if cfg.encoder_pretrain_steps:
            with r.bar("image encoder: warm-up", cfg.encoder_pretrain_steps) as pb:
                pretrain_encoder(encoder, make_shapes(4096, seed=seed + 7, size=S), cfg.encoder_pretrain_steps, seed, progress=pb)
        probe_tr, probe_te = make_shapes(1500, seed + 11, S), make_shapes(500, seed + 12, S)
        ftr, fte = encode_images(encoder, probe_tr.images), encode_images(encoder, probe_te.images)
        return encoder.module.state_dict(), {
            "probe_colour": linear_probe(ftr, probe_tr.colour, fte, probe_te.colour, 5),
            "probe_shape": linear_probe(ftr, probe_tr.shape, fte, probe_te.shape, 3),
            "pretrain_steps": cfg.encoder_pretrain_steps,
        }

    r.enc_meta = meta = r.load_or_train("encoder", r.enc_key, encoder.module.load_state_dict, train)
    encoder.module.eval().requires_grad_(False)
    n_params = sum(p.numel() for p in encoder.module.parameters())
    how = f"supervised warm-up {meta['pretrain_steps']} steps" if meta["pretrain_steps"] else "random init"
    vc = arch["vision_cfg"]
    r.enc_desc = (f"open_clip VisionTransformer, {vc['layers']} layers x {vc['width']} wide, "
                  f"patch {vc['patch_size']}, image_embeds {arch['embed_dim']}-d, {n_params:,} parameters, {how}, frozen; "
                  f"linear probe on image_embeds: colour {meta['probe_colour']:.2f}, shape {meta['probe_shape']:.2f}")
    r.features = encode_images(encoder, r.data.images)
    return how


def _trained_on_images(r: DemoRun, name: str, key_name: str, model, module, desc: str, count=None) -> tuple:
    """The adapter and its two comparisons: `module` of `model` trained on the image features, same data,
    steps, learning rate and seed; count() its trainable parameters (default: all of module's). -> (key, meta)"""
    cfg = r.cfg
    key = _hash({key_name: cfg.adapter.to_dict(), "base": r.base_key, "enc": r.enc_key, "seed": r.seed})

    def train():
        with r.bar(desc, cfg.adapter.steps) as pb:
            losses = A.train_adapter(model, r.base, r.data, r.features, cfg.adapter, r.seed + 1, progress=pb)
        trainable = count() if count else sum(p.numel() for p in module.parameters())
        return module.state_dict(), {"final_loss": _mean_tail(losses), "trainable_parameters": trainable}

    meta = r.load_or_train(name, key, module.load_state_dict, train)
    model.eval().requires_grad_(False)
    return key, meta


def _ip_adapter(r: DemoRun) -> str:
    r.ip_model = A.build_ip_model(r.base, r.encoder.projection_dim, r.cfg.adapter.num_tokens)
    r.ip_key, r.ip_meta = _trained_on_images(r, "ip_adapter", "ip", r.ip_model, r.ip_model.adapter,
                                             "IP-Adapter (decoupled cross-attention)", r.ip_model.adapter.num_parameters)
    save_adapter(r.ip_model.adapter, r.adapter_file)  # released layout, loadable by ip_core.load_adapter / the nodes
    return f"{r.ip_meta['trainable_parameters']:,} trainable parameters, final loss {r.ip_meta['final_loss']:.4f}"


def _ablation(r: DemoRun) -> str:
    # the paper's ablation: image tokens concatenated to the text tokens, no K'/V'
    r.cc_model = A.build_concat_model(r.base, r.encoder.projection_dim, r.cfg.adapter.num_tokens)
    r.cc_key, r.cc_meta = _trained_on_images(r, "concat", "concat", r.cc_model, r.cc_model.image_proj,
                                             "ablation: tokens concatenated to text")
    return f"{r.cc_meta['trainable_parameters']:,} trainable parameters, final loss {r.cc_meta['final_loss']:.4f}"


def _finetuned(r: DemoRun) -> str:
    # the fully fine-tuned image-prompt model (Table 1's comparison): same data, steps, learning rate
    r.ft_model = A.build_image_variations_model(r.base, r.encoder.projection_dim, r.cfg.adapter.num_tokens)
    r.ft_key, r.ft_meta = _trained_on_images(r, "finetuned", "finetuned", r.ft_model, r.ft_model,
                                             "fully fine-tuned image-prompt model")
    return f"{r.ft_meta['trainable_parameters']:,} trainable parameters, final loss {r.ft_meta['final_loss']:.4f}"


def _derived_model(r: DemoRun) -> str:
    # reuse on a derived model: the base fine-tuned into a new style on text-only data (UNet only)
    cfg, S, seed = r.cfg, r.S, r.seed
    r.dv_cfg = {"style": cfg.derived_style, "steps": cfg.derived_steps, "lr": cfg.derived_lr, "n": cfg.train_images}
    r.dv_key = _hash({"derived": r.dv_cfg, "base": r.base_key, "seed": seed})
    r.derived = derived = r.base.derive()

    def restore(sd):
        derived.unet.load_state_dict(sd)
        derived.freeze()

    def train():
        styled = make_shapes(cfg.train_images, seed=seed + 5, size=S, style=cfg.derived_style)
        with r.bar(f"derived model: base fine-tuned into {cfg.derived_style} backgrounds", cfg.derived_steps) as pb:
            losses = train_base(derived, styled, seed + 5, progress=pb, steps=cfg.derived_steps, lr=cfg.derived_lr, text_encoder=False)
        return derived.unet.state_dict(), {
            "final_loss": _mean_tail(losses), "trainable_parameters": sum(p.numel() for p in derived.unet.parameters()),
            **r.dv_cfg, "style_judge": style_judge_accuracy(S, seed)}

    r.dv_meta = meta = r.load_or_train("derived", r.dv_key, restore, train)
    # the adapter trained on the base, unchanged: its released file loaded onto the derived model's UNet
    r.dv_ip = A.reuse_ip_model(derived, r.encoder.projection_dim, r.adapter_file, cfg.adapter.num_tokens)
    sj = meta["style_judge"]
    return (f"{cfg.derived_steps} steps on {cfg.derived_style} backgrounds, final loss {meta['final_loss']:.4f}; "
            f"style judge fires on {100 * sj['fires_on_style_data']:.0f}% of the style's images, {100 * sj['fires_on_base_data']:.0f}% of the base's")


def _references(r: DemoRun):
    """Held out (never trained on): k of every colour x shape from a pool large enough to hold them (the quick
    run's 400 as before)."""
    k = r.cfg.eval.refs_per_combination
    refs = make_shapes(400 if k <= 3 else 60 * k, seed=r.seed + 999, size=r.S)
    pick = []
    for c in range(len(COLOUR_NAMES)):
        for s in range(len(SHAPES)):
            found = torch.nonzero((refs.colour == c) & (refs.shape == s)).flatten()[:k].tolist()
            if len(found) < k:
                raise ValueError(f"the reference pool holds {len(found)} {COLOUR_NAMES[c]} {SHAPES[s]}s, fewer than {k}")
            pick += found
    return refs.subset(torch.tensor(sorted(pick)))


def _sampled(r: DemoRun, name: str, key: str, sample):
    """An evaluation stage's metrics and images (name -> (captions, images)), from the cache or sample()."""
    got = {}

    def run():
        metrics, got["images"] = sample()
        return {k: v[1] for k, v in got["images"].items()}, {"metrics": metrics, "captions": {k: v[0] for k, v in got["images"].items()}}

    meta = r.load_or_train(name, key, lambda tensors: got.update(tensors=tensors), run)
    if "images" in got:
        return meta["metrics"], got["images"]
    return meta["metrics"], {n: (caps, got["tensors"][n]) for n, caps in meta["captions"].items()}


def _evaluation(r: DemoRun) -> str:
    cfg = r.cfg
    r.refs = _references(r)
    r.ref_features = encode_images(r.encoder, r.refs.images)
    key = _hash({"eval": cfg.eval.to_dict(), "ip": r.ip_key, "concat": r.cc_key, "finetuned": r.ft_key, "judge": r.judge_key, "seed": r.seed})
    r.ev_key = key
    n = total_images(len(r.refs), cfg.eval)

    def sample():
        with r.bar("evaluation: sampling", n) as pb:
            return evaluate(r.base, r.ip_model, r.cc_model, r.ref_features, r.refs, r.judge, cfg.eval, r.seed + 2, progress=pb,
                            finetuned_model=r.ft_model)

    r.metrics, r.images = _sampled(r, "evaluation", key, sample)
    return f"{n} images, DDIM {cfg.eval.sample_steps} steps"


def _derived_evaluation(r: DemoRun) -> str:
    # the unchanged adapter on the derived model (the same noise as the base's evaluation)
    cfg = r.cfg
    n = len(r.refs) * (1 + 2 * len(derived_lambdas(cfg.eval)))
    key = _hash({"derived_eval": 1, "eval": r.ev_key, "derived": r.dv_key, "ip": r.ip_key})

    def sample():
        with r.bar("derived model: the unchanged adapter", n) as pb:
            return evaluate_derived(r.derived, r.dv_ip, r.ref_features, r.refs, r.judge, cfg.eval, r.seed + 2, r.images, progress=pb)

    r.dv_metrics, dv_images = _sampled(r, "derived_evaluation", key, sample)
    r.images.update(dv_images)
    return f"{n} images, DDIM {cfg.eval.sample_steps} steps"


# The demo, in order: (the stage's name in results.json, what it does). Each reads what the earlier ones left.
STAGES = (
    ("judges", _judges),
    ("base model", _base_model),
    ("image encoder", _image_encoder),
    ("IP-Adapter", _ip_adapter),
    ("ablation (concat)", _ablation),
    ("fine-tuned (image variations)", _finetuned),
    ("derived model", _derived_model),
    ("evaluation", _evaluation),
    ("derived evaluation", _derived_evaluation),
)
def run_stages(r: DemoRun, stages=STAGES) -> list:
    """Runs each stage in order, timed. -> one record per stage: its name, this run's seconds, whether its
    output came from the cache, its notes, and the seconds it took when it was computed (a cached stage: as
    recorded then; None if the cache predates the record) with the environment, where that differs from this one."""
    here, records = environment(), []
    for name, stage in stages:
        t0 = time.time()
        r.entry, r.hit = None, False
        notes = stage(r)
        seconds = time.time() - t0
        record = {"name": name, "seconds": seconds, "cached": r.hit, "notes": notes, "computed_seconds": seconds}
        if r.entry and not r.hit:
            r.cache.save_computed(*r.entry, {"seconds": seconds, "environment": here})
        elif r.entry:
            computed = r.cache.computed(*r.entry) or {}
            record["computed_seconds"] = computed.get("seconds")
            if computed.get("environment", here) != here:
                record["computed_environment"] = computed["environment"]
        records.append(record)
    return records


def save_grids(r: DemoRun) -> dict:
    """One grid per claim (results.md names the claim of each); the first column holds the references. -> claim: path"""
    refs, images, cfg = r.refs, r.images, r.cfg
    rows = min(len(refs), 15)
    lam = [str(l) for l in cfg.eval.lambdas]
    hi, dv_hi = lam[-1], str(derived_lambdas(cfg.eval)[-1])
    compat_labels = images[f"compat_{lam[0]}"][0]
    path = lambda name: os.path.join(r.output_dir, name)
    return {
        "fidelity (lambda sweep)": save_grid(
            path("grid_fidelity.png"),
            [refs.images] + [images[f"fidelity_{l}"][1] for l in lam] + [images["concat_fidelity"][1], images["finetuned_fidelity"][1]],
            rows, ["ref"] + [f"l={l}" for l in lam] + ["concat", "finetune"]),
        "text + image (lambda sweep)": save_grid(
            path("grid_text_compat.png"),
            [refs.images] + [images[f"compat_{l}"][1] for l in lam] + [images["concat_compat"][1], images["finetuned_compat"][1]],
            rows, ["ref"] + [f"l={l}" for l in lam] + ["concat", "finetune"], labels=compat_labels),
        "ablation: decoupled vs concatenated, text + image": save_grid(
            path("grid_ablation.png"), [refs.images, images[f"compat_{hi}"][1], images["concat_compat"][1]], rows,
            ["ref", f"IP l={hi}", "concat"], labels=compat_labels),
        "Table 1 analogue: adapter vs fully fine-tuned": save_grid(
            path("grid_table1.png"),
            [refs.images, images[f"fidelity_{hi}"][1], images["finetuned_fidelity"][1], images[f"compat_{hi}"][1], images["finetuned_compat"][1]],
            rows, ["ref", "IP img", "FT img", "IP +txt", "FT +txt"], labels=compat_labels),
        "reuse on a derived model": save_grid(
            path("grid_derived.png"),
            [refs.images, images[f"fidelity_{dv_hi}"][1], images[f"derived_fidelity_{dv_hi}"][1], images["derived_text"][1]],
            rows, ["ref", "base+IP", "deriv+IP", "deriv txt"], labels=images["derived_text"][0]),
        "base model from text": save_grid(path("grid_base_text.png"), [refs.images, images["base_text"][1]], rows,
                                          ["same attr.", "base"], labels=images["base_text"][0]),
    }


def run_demo(cfg: DemoConfig, output_dir: str, use_cache: bool = True, progress: bool = True, command: str = "", quick: bool = False) -> dict:
    t_start = time.time()
    os.makedirs(output_dir, exist_ok=True)
    r = DemoRun(cfg, output_dir, StageCache(output_dir, use_cache), Progress(progress))
    stages = run_stages(r)
    grids = save_grids(r)
    run_wall = time.time() - t_start
    computed = [s["computed_seconds"] for s in stages]
    results = {
        "command": command or "python -m trainer demo",
        "quick": quick,
        "seed": cfg.seed,
        "threads": torch.get_num_threads(),
        # what computing every result took: each stage's seconds when it was computed (so a cached rerun keeps
        # the measured time) plus this run's time outside the stages; None when a cached stage's time is unknown
        "wall_time_s": None if None in computed else sum(computed) + run_wall - sum(s["seconds"] for s in stages),
        "run_wall_time_s": run_wall,  # this run's own wall time (seconds when every stage came from the cache)
        "environment": environment(),
        "n_refs": len(r.refs),
        "judges": r.judges,
        "encoder": {"description": r.enc_desc, **r.enc_meta},
        "base": r.base_meta,
        "ip_adapter": {**r.ip_meta, "file": r.adapter_file},
        "concat": r.cc_meta,
        "finetuned": r.ft_meta,
        # reuse on a derived model: n = n_refs for every interval
        "derived": {**r.dv_meta, "adapter_file": r.adapter_file, "lambdas": [str(l) for l in derived_lambdas(cfg.eval)],
                    "metrics": r.dv_metrics, "intervals": intervals(r.dv_metrics, len(r.refs))},
        "eval": cfg.eval.to_dict(),
        "metrics": r.metrics,
        "intervals": intervals(r.metrics, len(r.refs)),  # 95% Wilson intervals, one per rate, n = n_refs
        "stages": stages,
        "grids": list(grids.values()),
        "grid_claims": {claim: os.path.basename(p) for claim, p in grids.items()},
        "config": {"base": cfg.base.to_dict(), "adapter": cfg.adapter.to_dict(), "train_images": cfg.train_images,
                   "judge_steps": cfg.judge_steps, "encoder_pretrain_steps": cfg.encoder_pretrain_steps, "image_size": r.S,
                   "derived": r.dv_cfg},
    }
    with open(os.path.join(output_dir, "results.json"), "w") as fh:
        json.dump(results, fh, indent=1)
    with open(os.path.join(output_dir, "results.md"), "w") as fh:
        fh.write(results_markdown(results))
    return results


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    real = [args.sd15, args.image_encoder, args.ip_adapter]
    threads = args.threads if args.threads is not None else (None if any(real) else 1)
    if threads:
        torch.set_num_threads(threads)
    if any(real):
        if not all(real):
            print("error: real-weights generation needs all of --sd15, --image-encoder and --ip-adapter", file=sys.stderr)
            return EXIT_USAGE
        try:
            out = run_real(args)
        except IPAdapterError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_FAILED
        print(f"generated images: {out}")
        return 0
    cfg = quick_config(args.seed) if args.quick else full_config(args.seed)
    command = "python -m trainer demo " + " ".join(shlex.quote(a) for a in argv)
    results = run_demo(cfg, args.output_dir, use_cache=not args.no_cache, progress=not args.no_progress,
                       command=command.strip(), quick=args.quick)
    out = os.path.abspath(args.output_dir)
    print(open(os.path.join(out, "results.md")).read())
    print(f"results: {os.path.join(out, 'results.json')}\ntable: {os.path.join(out, 'results.md')}")
    print("grids: " + ", ".join(os.path.abspath(g) for g in results["grids"]))
    print(f"adapter: {os.path.abspath(results['ip_adapter']['file'])}")
    return 0
