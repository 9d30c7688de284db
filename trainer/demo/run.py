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
        p, m = self.path(name, key), self.path(name, key, ".json")
        save_file({k: v.contiguous() for k, v in tensors.items()}, p + ".tmp")
        os.replace(p + ".tmp", p)
        with open(m + ".tmp", "w") as fh:
            json.dump(meta, fh, indent=1)
        os.replace(m + ".tmp", m)


class Progress:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, desc: str, total: int):
        return tqdm(total=total, desc=desc, disable=not self.enabled, leave=True, dynamic_ncols=True, file=sys.stderr)


# ---------------------------------------------------------------------------------------------- the run

def run_demo(cfg: DemoConfig, output_dir: str, use_cache: bool = True, progress: bool = True, command: str = "", quick: bool = False) -> dict:
    t_start = time.time()
    os.makedirs(output_dir, exist_ok=True)
    cache = StageCache(output_dir, use_cache)
    bar = Progress(progress)
    stages = []
    S, seed = cfg.image_size, cfg.seed

    def stage(name, t0, cached, notes=""):
        stages.append({"name": name, "seconds": time.time() - t0, "cached": cached, "notes": notes})

    # 1. judges ---------------------------------------------------------------------------------
    t0 = time.time()
    key = _hash({"judge": 4, "size": S, "seed": seed, "steps": cfg.judge_steps, "style": cfg.derived_style})  # bump when the judge changes
    hit = cache.load("judge", key)
    judge = ShapeJudge()
    if hit:
        judge.load_state_dict(hit[0])
        judge.eval().requires_grad_(False)
        meta = hit[1]
    else:
        with bar("judges: shape CNN", cfg.judge_steps) as pb:
            judge, acc, acc_noisy = train_shape_judge(S, seed, steps=cfg.judge_steps, progress=pb)
        meta = {"shape_accuracy": acc, "shape_accuracy_noisy": acc_noisy, "colour_accuracy": colour_judge_accuracy(S, seed),
                "shape_accuracy_derived_style": shape_judge_accuracy(judge, S, seed, cfg.derived_style),
                "colour_accuracy_derived_style": colour_judge_accuracy(S, seed, cfg.derived_style)}
        cache.save("judge", key, judge.state_dict(), meta)
    judges = dict(meta)
    stage("judges", t0, bool(hit), f"shape CNN held-out accuracy {meta['shape_accuracy']:.3f} "
                                   f"({meta['shape_accuracy_derived_style']:.3f} on the derived style's images)")

    data = make_shapes(cfg.train_images, seed=seed, size=S)

    # 2. base model -----------------------------------------------------------------------------
    t0 = time.time()
    base_key = _hash({"base": cfg.base.to_dict(), "seed": seed, "n": cfg.train_images})
    torch.manual_seed(seed)
    base = TinyBase(replace(cfg.base, image_size=S))
    hit = cache.load("base", base_key)
    if hit:
        base.load_state_dict(hit[0])
        base.freeze()
        base_meta = hit[1]
    else:
        with bar("base model: UNet + text encoder", cfg.base.steps) as pb:
            losses = train_base(base, data, seed, progress=pb)
        base_meta = {"final_loss": sum(losses[-50:]) / len(losses[-50:]), "unet_parameters": sum(p.numel() for p in base.unet.parameters())}
        cache.save("base", base_key, base.state_dict(), base_meta)
    stage("base model", t0, bool(hit), f"{base_meta['unet_parameters']:,} UNet parameters, final loss {base_meta['final_loss']:.4f}")

    # 3. image encoder --------------------------------------------------------------------------
    t0 = time.time()
    arch = encoder_arch(S)
    enc_key = _hash({"arch": arch, "seed": seed, "pretrain": cfg.encoder_pretrain_steps})
    encoder = build_encoder(arch, seed)
    hit = cache.load("encoder", enc_key)
    if hit:
        encoder.module.load_state_dict(hit[0])
        enc_meta = hit[1]
    else:
        if cfg.encoder_pretrain_steps:
            with bar("image encoder: warm-up", cfg.encoder_pretrain_steps) as pb:
                pretrain_encoder(encoder, make_shapes(4096, seed=seed + 7, size=S), cfg.encoder_pretrain_steps, seed, progress=pb)
        probe_tr, probe_te = make_shapes(1500, seed + 11, S), make_shapes(500, seed + 12, S)
        ftr, fte = encode_images(encoder, probe_tr.images), encode_images(encoder, probe_te.images)
        enc_meta = {
            "probe_colour": linear_probe(ftr, probe_tr.colour, fte, probe_te.colour, 5),
            "probe_shape": linear_probe(ftr, probe_tr.shape, fte, probe_te.shape, 3),
            "pretrain_steps": cfg.encoder_pretrain_steps,
        }
        cache.save("encoder", enc_key, encoder.module.state_dict(), enc_meta)
    encoder.module.eval().requires_grad_(False)
    n_params = sum(p.numel() for p in encoder.module.parameters())
    how = f"supervised warm-up {enc_meta['pretrain_steps']} steps" if enc_meta["pretrain_steps"] else "random init"
    enc_desc = (f"open_clip VisionTransformer, {arch['vision_cfg']['layers']} layers x {arch['vision_cfg']['width']} wide, "
                f"patch {arch['vision_cfg']['patch_size']}, image_embeds {arch['embed_dim']}-d, {n_params:,} parameters, {how}, frozen; "
                f"linear probe on image_embeds: colour {enc_meta['probe_colour']:.2f}, shape {enc_meta['probe_shape']:.2f}")
    stage("image encoder", t0, bool(hit), how)
    features = encode_images(encoder, data.images)

    # 4. IP-Adapter (decoupled) -----------------------------------------------------------------
    t0 = time.time()
    ip_key = _hash({"ip": cfg.adapter.to_dict(), "base": base_key, "enc": enc_key, "seed": seed})
    ip_model = A.build_ip_model(base, encoder.projection_dim, cfg.adapter.num_tokens)
    adapter_file = os.path.join(output_dir, "ip-adapter_demo.safetensors")
    hit = cache.load("ip_adapter", ip_key)
    if hit:
        ip_model.adapter.load_state_dict(hit[0])
        ip_meta = hit[1]
    else:
        with bar("IP-Adapter (decoupled cross-attention)", cfg.adapter.steps) as pb:
            losses = A.train_adapter(ip_model, base, data, features, cfg.adapter, seed + 1, progress=pb)
        ip_meta = {"final_loss": sum(losses[-50:]) / len(losses[-50:]), "trainable_parameters": ip_model.adapter.num_parameters()}
        cache.save("ip_adapter", ip_key, ip_model.adapter.state_dict(), ip_meta)
    ip_model.eval().requires_grad_(False)
    save_adapter(ip_model.adapter, adapter_file)  # released layout, loadable by ip_core.load_adapter / the nodes
    stage("IP-Adapter", t0, bool(hit), f"{ip_meta['trainable_parameters']:,} trainable parameters, final loss {ip_meta['final_loss']:.4f}")

    # 5. ablation: concatenated tokens ----------------------------------------------------------
    t0 = time.time()
    cc_key = _hash({"concat": cfg.adapter.to_dict(), "base": base_key, "enc": enc_key, "seed": seed})
    cc_model = A.build_concat_model(base, encoder.projection_dim, cfg.adapter.num_tokens)
    hit = cache.load("concat", cc_key)
    if hit:
        cc_model.image_proj.load_state_dict(hit[0])
        cc_meta = hit[1]
    else:
        with bar("ablation: tokens concatenated to text", cfg.adapter.steps) as pb:
            losses = A.train_adapter(cc_model, base, data, features, cfg.adapter, seed + 1, progress=pb)
        cc_meta = {"final_loss": sum(losses[-50:]) / len(losses[-50:]),
                   "trainable_parameters": sum(p.numel() for p in cc_model.image_proj.parameters())}
        cache.save("concat", cc_key, cc_model.image_proj.state_dict(), cc_meta)
    cc_model.eval().requires_grad_(False)
    stage("ablation (concat)", t0, bool(hit), f"{cc_meta['trainable_parameters']:,} trainable parameters, final loss {cc_meta['final_loss']:.4f}")

    # 5b. the fully fine-tuned image-prompt model (Table 1's comparison): same data, steps, learning rate ---------
    t0 = time.time()
    ft_key = _hash({"finetuned": cfg.adapter.to_dict(), "base": base_key, "enc": enc_key, "seed": seed})
    ft_model = A.build_image_variations_model(base, encoder.projection_dim, cfg.adapter.num_tokens)
    hit = cache.load("finetuned", ft_key)
    if hit:
        ft_model.load_state_dict(hit[0])
        ft_meta = hit[1]
    else:
        with bar("fully fine-tuned image-prompt model", cfg.adapter.steps) as pb:
            losses = A.train_adapter(ft_model, base, data, features, cfg.adapter, seed + 1, progress=pb)
        ft_meta = {"final_loss": sum(losses[-50:]) / len(losses[-50:]),
                   "trainable_parameters": sum(p.numel() for p in ft_model.parameters())}
        cache.save("finetuned", ft_key, ft_model.state_dict(), ft_meta)
    ft_model.eval().requires_grad_(False)
    stage("fine-tuned (image variations)", t0, bool(hit),
          f"{ft_meta['trainable_parameters']:,} trainable parameters, final loss {ft_meta['final_loss']:.4f}")

    # 5c. reuse on a derived model: the base fine-tuned into a new style on text-only data (UNet only) ---------------
    t0 = time.time()
    dv_cfg = {"style": cfg.derived_style, "steps": cfg.derived_steps, "lr": cfg.derived_lr, "n": cfg.train_images}
    dv_key = _hash({"derived": dv_cfg, "base": base_key, "seed": seed})
    derived = base.derive()
    hit = cache.load("derived", dv_key)
    if hit:
        derived.unet.load_state_dict(hit[0])
        derived.freeze()
        dv_meta = hit[1]
    else:
        styled = make_shapes(cfg.train_images, seed=seed + 5, size=S, style=cfg.derived_style)
        with bar(f"derived model: base fine-tuned into {cfg.derived_style} backgrounds", cfg.derived_steps) as pb:
            losses = train_base(derived, styled, seed + 5, progress=pb, steps=cfg.derived_steps, lr=cfg.derived_lr, text_encoder=False)
        dv_meta = {"final_loss": sum(losses[-50:]) / len(losses[-50:]), "trainable_parameters": sum(p.numel() for p in derived.unet.parameters()),
                   **dv_cfg, "style_judge": style_judge_accuracy(S, seed)}
        cache.save("derived", dv_key, derived.unet.state_dict(), dv_meta)
    # the adapter trained on the base, unchanged: its released file loaded onto the derived model's UNet
    dv_ip = A.reuse_ip_model(derived, encoder.projection_dim, adapter_file, cfg.adapter.num_tokens)
    sj = dv_meta["style_judge"]
    stage("derived model", t0, bool(hit), f"{cfg.derived_steps} steps on {cfg.derived_style} backgrounds, final loss {dv_meta['final_loss']:.4f}; "
          f"style judge fires on {100 * sj['fires_on_style_data']:.0f}% of the style's images, {100 * sj['fires_on_base_data']:.0f}% of the base's")

    # 6. evaluation -----------------------------------------------------------------------------
    t0 = time.time()
    k = cfg.eval.refs_per_combination
    # held out (never trained on); a pool large enough to hold k of every colour x shape (the quick run's 400 as before)
    refs = make_shapes(400 if k <= 3 else 60 * k, seed=seed + 999, size=S)
    pick = []
    for c in range(len(COLOUR_NAMES)):
        for s in range(len(SHAPES)):
            found = torch.nonzero((refs.colour == c) & (refs.shape == s)).flatten()[:k].tolist()
            if len(found) < k:
                raise ValueError(f"the reference pool holds {len(found)} {COLOUR_NAMES[c]} {SHAPES[s]}s, fewer than {k}")
            pick += found
    refs = refs.subset(torch.tensor(sorted(pick)))
    ref_features = encode_images(encoder, refs.images)
    ev_key = _hash({"eval": cfg.eval.to_dict(), "ip": ip_key, "concat": cc_key, "finetuned": ft_key, "judge": key, "seed": seed})
    hit = cache.load("evaluation", ev_key)
    if hit:
        metrics = hit[1]["metrics"]
        images = {name: (caps, hit[0][name]) for name, caps in hit[1]["captions"].items()}
    else:
        with bar("evaluation: sampling", total_images(len(refs), cfg.eval)) as pb:
            metrics, images = evaluate(base, ip_model, cc_model, ref_features, refs, judge, cfg.eval, seed + 2, progress=pb,
                                       finetuned_model=ft_model)
        cache.save("evaluation", ev_key, {k: v[1] for k, v in images.items()},
                   {"metrics": metrics, "captions": {k: v[0] for k, v in images.items()}})
    stage("evaluation", t0, bool(hit), f"{total_images(len(refs), cfg.eval)} images, DDIM {cfg.eval.sample_steps} steps")

    # 6b. the unchanged adapter on the derived model (the same noise as the base's evaluation) ------------------------
    t0 = time.time()
    dv_images_n = len(refs) * (1 + 2 * len(derived_lambdas(cfg.eval)))
    dev_key = _hash({"derived_eval": 1, "eval": ev_key, "derived": dv_key, "ip": ip_key})
    hit = cache.load("derived_evaluation", dev_key)
    if hit:
        dv_metrics = hit[1]["metrics"]
        images.update({name: (caps, hit[0][name]) for name, caps in hit[1]["captions"].items()})
    else:
        with bar("derived model: the unchanged adapter", dv_images_n) as pb:
            dv_metrics, dv_images = evaluate_derived(derived, dv_ip, ref_features, refs, judge, cfg.eval, seed + 2, images, progress=pb)
        cache.save("derived_evaluation", dev_key, {k: v[1] for k, v in dv_images.items()},
                   {"metrics": dv_metrics, "captions": {k: v[0] for k, v in dv_images.items()}})
        images.update(dv_images)
    stage("derived evaluation", t0, bool(hit), f"{dv_images_n} images, DDIM {cfg.eval.sample_steps} steps")

    # 7. outputs --------------------------------------------------------------------------------
    rows = min(len(refs), 15)
    lam = [str(l) for l in cfg.eval.lambdas]
    hi, dv_hi = lam[-1], str(derived_lambdas(cfg.eval)[-1])
    compat_labels = images[f"compat_{lam[0]}"][0]
    path = lambda name: os.path.join(output_dir, name)
    # one grid per claim (results.md names the claim of each); the first column holds the references
    grids = {
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
    results = {
        "command": command or "python -m trainer demo",
        "quick": quick,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "wall_time_s": time.time() - t_start,
        "n_refs": len(refs),
        "judges": judges,
        "encoder": {"description": enc_desc, **enc_meta},
        "base": base_meta,
        "ip_adapter": {**ip_meta, "file": adapter_file},
        "concat": cc_meta,
        "finetuned": ft_meta,
        # reuse on a derived model: n = n_refs for every interval
        "derived": {**dv_meta, "adapter_file": adapter_file, "lambdas": [str(l) for l in derived_lambdas(cfg.eval)],
                    "metrics": dv_metrics, "intervals": intervals(dv_metrics, len(refs))},
        "eval": cfg.eval.to_dict(),
        "metrics": metrics,
        "intervals": intervals(metrics, len(refs)),  # 95% Wilson intervals, one per rate, n = n_refs
        "stages": stages,
        "grids": list(grids.values()),
        "grid_claims": {claim: os.path.basename(p) for claim, p in grids.items()},
        "config": {"base": cfg.base.to_dict(), "adapter": cfg.adapter.to_dict(), "train_images": cfg.train_images,
                   "judge_steps": cfg.judge_steps, "encoder_pretrain_steps": cfg.encoder_pretrain_steps, "image_size": S,
                   "derived": dv_cfg},
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
