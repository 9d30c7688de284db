"""Generation and measurement: the paper's CLIP-I / CLIP-T analogues with deterministic judges.

- base text check: does the frozen base model draw what its caption says?
- image-prompt fidelity (CLIP-I analogue): empty text, image prompt, weight lambda: how often the generation
  has the reference's colour / shape / both; lambda 0 is the no-adapter baseline.
- text compatibility (CLIP-T analogue): the caption names one attribute, the image prompt carries the other
  (half the cases: text names the shape and the image gives the colour; half the reverse): how often the
  generation has both the text's attribute and the image's.
Every condition uses the same starting noise per reference, so differences come from the conditioning.
All lambdas are sampled in one batch (ip_core's decoupled attention takes a per-sample lambda).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from .shapes import COLOUR_NAMES, SHAPES, ShapeBatch, caption
from .judges import judge_colour
from trainer.sampling import guided_sample, noise_for

CHANCE = {"colour": 1 / len(COLOUR_NAMES), "shape": 1 / len(SHAPES), "both": 1 / (len(COLOUR_NAMES) * len(SHAPES))}


@dataclass(frozen=True)
class EvalConfig:
    refs_per_combination: int = 26  # 390 references: every rate's 95% interval within +-5 points
    lambdas: tuple = (0.0, 0.25, 0.5, 0.75, 1.0)
    sample_steps: int = 20
    guidance: float = 2.5
    batch: int = 256

    def to_dict(self) -> dict:
        return asdict(self)


def compat_prompts(refs: ShapeBatch):
    """-> (captions, want_colour, want_shape, text_names) for the text-compatibility test."""
    caps, want_c, want_s, names = [], [], [], []
    for i, (c, s) in enumerate(zip(refs.colour.tolist(), refs.shape.tolist())):
        k = 1 + (i // 2) % 2  # alternate which other value the text names
        if i % 2 == 0:  # text: shape, image: colour
            s2 = (s + k) % len(SHAPES)
            caps.append(caption(None, s2)); want_c.append(c); want_s.append(s2); names.append("shape")
        else:  # text: colour, image: shape
            c2 = (c + k) % len(COLOUR_NAMES)
            caps.append(caption(c2, None)); want_c.append(c2); want_s.append(s); names.append("colour")
    return caps, torch.tensor(want_c), torch.tensor(want_s), names


class Generator:
    """Runs guided sampling for any of the demo's models in fixed-size chunks."""

    def __init__(self, base, cfg: EvalConfig, progress=None):
        self.base, self.cfg, self.progress = base, cfg, progress
        self.empty = base.text_embeds([""])

    def text(self, captions):
        return self.base.text_embeds(list(captions))

    def run(self, model, captions, features=None, scale=None, seed: int = 0, noise=None) -> torch.Tensor:
        """model None = the base UNet alone; else an IPAdapterUNet / ConcatTokensUNet fed `features` at `scale`
        (a float or one lambda per sample). Uncond = empty caption + zero features (the official inference)."""
        n = len(captions)
        noise = noise if noise is not None else noise_for(n, self.base.latent_shape, seed)
        text = self.text(captions)
        out = []
        for i in range(0, n, self.cfg.batch):
            j = min(n, i + self.cfg.batch)
            m = j - i
            t_in = torch.cat([text[i:j], self.empty.expand(m, -1, -1)])
            if model is None:
                predict = lambda z, t, t_in=t_in: self.base.unet(z, t, t_in).sample
            else:
                f = features[i:j]
                f_in = torch.cat([f, torch.zeros_like(f)])
                s = scale[i:j] if isinstance(scale, torch.Tensor) else scale
                s_in = torch.cat([s, s]) if isinstance(s, torch.Tensor) else s
                predict = lambda z, t, t_in=t_in, f_in=f_in, s_in=s_in: model(z, t.expand(z.shape[0]), t_in, f_in, scale=s_in)
            z = guided_sample(predict, noise[i:j], self.base.scheduler.config, self.cfg.sample_steps, self.cfg.guidance)
            out.append(self.base.decode(z))
            if self.progress is not None:
                self.progress.update(m)
        return torch.cat(out)


def judge_all(images, judge):
    return judge_colour(images), judge.predict(images)


def rates(pc, ps, want_c, want_s) -> dict:
    c = pc == want_c
    s = ps == want_s
    return {"colour": c.float().mean().item(), "shape": s.float().mean().item(), "both": (c & s).float().mean().item()}


def total_images(n_refs: int, cfg: EvalConfig, others: int = 2) -> int:
    """Images one evaluation samples: base text, (fidelity + compat) per lambda and per other model."""
    return n_refs * (1 + 2 * len(cfg.lambdas) + 2 * others)


def evaluate(base, ip_model, concat_model, ref_features: torch.Tensor, refs: ShapeBatch, judge, cfg: EvalConfig, seed: int, progress=None,
             finetuned_model=None):
    """-> (metrics dict, images dict for the grids)."""
    gen = Generator(base, cfg, progress)
    n = len(refs)
    noise = noise_for(n, base.latent_shape, seed)
    metrics, images = {}, {}

    # 1. the frozen base model from text alone
    full = [caption(c, s) for c, s in zip(refs.colour.tolist(), refs.shape.tolist())]
    img = gen.run(None, full, noise=noise)
    metrics["base_text"] = rates(*judge_all(img, judge), refs.colour, refs.shape)
    images["base_text"] = (full, img)

    # 2 + 3. fidelity and text compatibility for every lambda, one batch
    ccaps, want_c, want_s, names = compat_prompts(refs)
    lam = list(cfg.lambdas)
    caps = ([""] * n + ccaps) * len(lam)
    feats = ref_features.repeat(2 * len(lam), 1)
    scale = torch.tensor(lam).repeat_interleave(2 * n)
    img = gen.run(ip_model, caps, feats, scale, noise=noise.repeat(2 * len(lam), 1, 1, 1))
    pc, ps = judge_all(img, judge)
    text_named_shape = torch.tensor([x == "shape" for x in names])
    fid, comp = {}, {}
    for k, l in enumerate(lam):
        a = 2 * n * k
        fid[str(l)] = rates(pc[a : a + n], ps[a : a + n], refs.colour, refs.shape)
        cpc, cps = pc[a + n : a + 2 * n], ps[a + n : a + 2 * n]
        r = rates(cpc, cps, want_c, want_s)
        # which attribute came through: the one the text named, the one the image gave
        text_ok = torch.where(text_named_shape, cps == want_s, cpc == want_c)
        image_ok = torch.where(text_named_shape, cpc == want_c, cps == want_s)
        r.update(text_attribute=text_ok.float().mean().item(), image_attribute=image_ok.float().mean().item())
        comp[str(l)] = r
        images[f"fidelity_{l}"] = ([""] * n, img[a : a + n])
        images[f"compat_{l}"] = (ccaps, img[a + n : a + 2 * n])
    metrics["fidelity"] = fid
    metrics["text_compat"] = comp

    # 4. the ablation (concatenated tokens in the existing cross-attention) and the fully fine-tuned model
    for name, model in (("concat", concat_model), ("finetuned", finetuned_model)):
        if model is None:
            continue
        img = gen.run(model, [""] * n + ccaps, ref_features.repeat(2, 1), 1.0, noise=noise.repeat(2, 1, 1, 1))
        pc, ps = judge_all(img, judge)
        r = rates(pc[n:], ps[n:], want_c, want_s)
        text_ok = torch.where(text_named_shape, ps[n:] == want_s, pc[n:] == want_c)
        image_ok = torch.where(text_named_shape, pc[n:] == want_c, ps[n:] == want_s)
        r.update(text_attribute=text_ok.float().mean().item(), image_attribute=image_ok.float().mean().item())
        metrics[name] = {"fidelity": rates(pc[:n], ps[:n], refs.colour, refs.shape), "text_compat": r}
        images[f"{name}_fidelity"] = ([""] * n, img[:n])
        images[f"{name}_compat"] = (ccaps, img[n:])
    metrics["chance"] = dict(CHANCE)
    return metrics, images


Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson(rate: float, n: int, z: float = Z95) -> list:
    """The 95% Wilson score interval of a rate measured on n references: [low, high], within 0..1 (unlike
    the normal approximation, it stays sensible at rates near 0 or 1 and for small n)."""
    if n <= 0:
        return [0.0, 1.0]
    denom = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denom
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denom
    # the interval always holds the rate itself; the clamp keeps float rounding (1 - 1e-16 at rate 1) from losing it
    return [max(0.0, min(rate, centre - half)), min(1.0, max(rate, centre + half))]


def intervals(metrics: dict, n: int) -> dict:
    """The 95% interval of every measured rate, in the same nesting as `metrics` (chance has none)."""
    def walk(node):
        return {k: walk(v) if isinstance(v, dict) else wilson(float(v), n) for k, v in node.items()}

    return {k: walk(v) for k, v in metrics.items() if k != "chance"}


def derived_lambdas(cfg: EvalConfig) -> list:
    """The lambdas the derived model is measured at: the results table's (0.5 where swept, and the highest)."""
    lam = [l for l in cfg.lambdas if l != 0]
    return sorted({l for l in lam if l == 0.5} | set(lam[-1:]))


def evaluate_derived(derived, derived_ip, ref_features: torch.Tensor, refs: ShapeBatch, judge, cfg: EvalConfig, seed: int,
                     base_images: dict, progress=None):
    """Reuse on a derived model: the base's adapter, unchanged, on a model fine-tuned from the base into a new style.

    derived: the fine-tuned TinyBase; derived_ip: the unchanged adapter on its UNet. The same starting noise per
    reference as `evaluate` (same seed), so each derived image pairs with the base's image of the same condition.
    base_images: `evaluate`'s images ({"base_text": ..., "fidelity_<l>": ..., "compat_<l>": ...}), for the style
    rate of the base's own generations (the judge's false-alarm rate on generated images).
    -> (metrics, images): metrics["text"] (derived model, full caption, no adapter), metrics["fidelity"][l] and
    metrics["text_compat"][l] (derived + adapter), each with "style" (the derived style kept); metrics["base"]: the
    style rate of the base model's images under the same conditions."""
    from .judges import judge_teal

    gen = Generator(derived, cfg, progress)
    n = len(refs)
    noise = noise_for(n, derived.latent_shape, seed)
    style = lambda img: judge_teal(img).float().mean().item()
    metrics, images = {}, {}

    full = [caption(c, s) for c, s in zip(refs.colour.tolist(), refs.shape.tolist())]
    img = gen.run(None, full, noise=noise)
    metrics["text"] = {**rates(*judge_all(img, judge), refs.colour, refs.shape), "style": style(img)}
    images["derived_text"] = (full, img)

    ccaps, want_c, want_s, names = compat_prompts(refs)
    text_named_shape = torch.tensor([x == "shape" for x in names])
    lam = derived_lambdas(cfg)
    img = gen.run(derived_ip, ([""] * n + ccaps) * len(lam), ref_features.repeat(2 * len(lam), 1),
                  torch.tensor(lam).repeat_interleave(2 * n), noise=noise.repeat(2 * len(lam), 1, 1, 1))
    pc, ps = judge_all(img, judge)
    fid, comp = {}, {}
    for k, l in enumerate(lam):
        a = 2 * n * k
        f, c = img[a : a + n], img[a + n : a + 2 * n]
        fid[str(l)] = {**rates(pc[a : a + n], ps[a : a + n], refs.colour, refs.shape), "style": style(f)}
        cpc, cps = pc[a + n : a + 2 * n], ps[a + n : a + 2 * n]
        r = rates(cpc, cps, want_c, want_s)
        r.update(text_attribute=torch.where(text_named_shape, cps == want_s, cpc == want_c).float().mean().item(),
                 image_attribute=torch.where(text_named_shape, cpc == want_c, cps == want_s).float().mean().item(), style=style(c))
        comp[str(l)] = r
        images[f"derived_fidelity_{l}"] = ([""] * n, f)
        images[f"derived_compat_{l}"] = (ccaps, c)
    metrics["fidelity"], metrics["text_compat"] = fid, comp
    metrics["base"] = {"text": {"style": style(base_images["base_text"][1])},
                       "fidelity": {str(l): {"style": style(base_images[f"fidelity_{l}"][1])} for l in lam},
                       "text_compat": {str(l): {"style": style(base_images[f"compat_{l}"][1])} for l in lam}}
    return metrics, images
