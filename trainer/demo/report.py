"""results.md and PNG grids (references beside generations)."""
from __future__ import annotations

import os

from PIL import Image, ImageDraw

from .shapes import to_uint8_hwc

CELL = 64  # pixels per image in the grids (16x16 images upscaled, nearest)
LABEL_W = 110


def _tile(img_chw) -> Image.Image:
    return Image.fromarray(to_uint8_hwc(img_chw[None])[0]).resize((CELL, CELL), Image.NEAREST)


def save_grid(path: str, columns: list, rows: int, header: list, labels=None) -> str:
    """columns: list of image tensors [N, 3, S, S] (first = references); labels: optional text per row."""
    rows = min(rows, len(columns[0]))
    lw = LABEL_W if labels else 0
    head = 16
    grid = Image.new("RGB", (lw + CELL * len(columns), head + CELL * rows), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for j, h in enumerate(header):
        draw.text((lw + j * CELL + 2, 2), h, fill=(0, 0, 0))
    for i in range(rows):
        if labels:
            draw.text((2, head + i * CELL + CELL // 2 - 6), labels[i] or '""', fill=(0, 0, 0))
        for j, col in enumerate(columns):
            grid.paste(_tile(col[i]), (lw + j * CELL, head + i * CELL))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    grid.save(path)
    return path


def _pct(x, ci=None) -> str:
    """'49%', or with its 95% interval '49% (35-63)'."""
    return f"{100 * x:.0f}%" if ci is None else f"{100 * x:.0f}% ({100 * ci[0]:.0f}-{100 * ci[1]:.0f})"


def _wall_time(results: dict) -> str:
    """The time the results took to compute; a rerun that took stages from the cache says so, and its own time."""
    wall, stages = results.get("wall_time_s"), results.get("stages", [])
    text = f"{wall:.0f} s" if wall is not None else "unknown (stages cached before their times were recorded)"
    text += f" ({results['threads']} torch threads)"
    cached = sum(bool(s.get("cached")) for s in stages)
    if cached and "run_wall_time_s" in results:
        text += (f", as measured when the stages were computed; this rerun took {results['run_wall_time_s']:.0f} s "
                 f"with {cached} of {len(stages)} stages from the cache")
    return text


def _environment(env) -> str:
    if not env:
        return "not recorded"
    packages = ", ".join(f"{name} {env.get(key)}" for name, key in (
        ("Python", "python"), ("torch", "torch"), ("numpy", "numpy"), ("Pillow", "pillow"), ("diffusers", "diffusers"),
        ("transformers", "transformers"), ("open_clip", "open_clip")) if env.get(key))
    return (f"{packages}; CPU {env.get('cpu')} ({env.get('cpu_count')} logical cores, torch kernels "
            f"{env.get('torch_cpu_capability')}); {env.get('platform')}")


def results_markdown(results: dict) -> str:
    m = results["metrics"]
    ci = results.get("intervals", {})

    def cell(*path):  # a rate with its interval
        v, c = m, ci
        for k in path:
            v, c = v[k], (c or {}).get(k)
        return _pct(v, c)

    ch = m["chance"]
    lam = list(m["fidelity"])
    hi = lam[-1]
    mid = "0.5" if "0.5" in m["text_compat"] else hi
    lines = [
        "# IP-Adapter in miniature: results",
        "",
        f"Command: `{results['command']}`  ",
        f"Wall time: {_wall_time(results)}; "
        f"{'quick' if results['quick'] else 'full'} run, seed {results['seed']}.  ",
        f"Environment: {_environment(results.get('environment'))}.",
        "",
        f"Judges: colour from pixel statistics (accuracy on held-out dataset images {_pct(results['judges']['colour_accuracy'])}); "
        f"shape CNN held-out accuracy {_pct(results['judges']['shape_accuracy'])}"
        + (f"; on the derived model's style (below): colour {_pct(results['judges']['colour_accuracy_derived_style'])}, "
           f"shape {_pct(results['judges']['shape_accuracy_derived_style'])}." if "shape_accuracy_derived_style" in results["judges"] else "."),
        f"Image encoder: {results['encoder']['description']}.",
        f"Base model from text alone (full caption): colour {_pct(m['base_text']['colour'])}, shape {_pct(m['base_text']['shape'])}, "
        f"both {_pct(m['base_text']['both'])}.",
        "",
        "## Image-prompt fidelity (empty text; CLIP-I analogue) and text compatibility (CLIP-T analogue)",
        "",
        "| model | fidelity colour | fidelity shape | fidelity both | text+image both | text attribute kept | image attribute kept |",
        "|---|---|---|---|---|---|---|",
    ]
    def row(label, fid, comp):
        return (f"| {label} | {cell(*fid, 'colour')} | {cell(*fid, 'shape')} | {cell(*fid, 'both')} | {cell(*comp, 'both')} | "
                f"{cell(*comp, 'text_attribute')} | {cell(*comp, 'image_attribute')} |")

    lines.append(row(f"no image prompt (lambda {lam[0]})", ("fidelity", lam[0]), ("text_compat", lam[0])))
    for l in (mid, hi) if mid != hi else (hi,):
        lines.append(row(f"IP-Adapter, decoupled (lambda {l})", ("fidelity", l), ("text_compat", l)))
    if "concat" in m:
        lines.append(row("ablation: tokens concatenated to text", ("concat", "fidelity"), ("concat", "text_compat")))
    if "finetuned" in m:
        lines.append(row("fully fine-tuned on image tokens (no text)", ("finetuned", "fidelity"), ("finetuned", "text_compat")))
    lines.append(f"| chance | {_pct(ch['colour'])} | {_pct(ch['shape'])} | {_pct(ch['both'])} | {_pct(ch['both'])} | | |")
    if "finetuned" in m:  # the paper's Table 1, in miniature: what each approach trains, and what it gets
        hi_l = lam[-1]
        lines += ["", "## Table 1 analogue: trainable parameters against fidelity and text compatibility", "",
                  "| model | trainable parameters | fidelity both | text+image both |", "|---|---|---|---|",
                  f"| IP-Adapter, decoupled (lambda {hi_l}) | {results['ip_adapter']['trainable_parameters']:,} | "
                  f"{cell('fidelity', hi_l, 'both')} | {cell('text_compat', hi_l, 'both')} |",
                  f"| fully fine-tuned on image tokens (SD Image Variations recipe) | {results['finetuned']['trainable_parameters']:,} | "
                  f"{cell('finetuned', 'fidelity', 'both')} | {cell('finetuned', 'text_compat', 'both')} |",
                  f"| ablation: tokens concatenated to text | {results['concat']['trainable_parameters']:,} | "
                  f"{cell('concat', 'fidelity', 'both')} | {cell('concat', 'text_compat', 'both')} |"]
    lines += ["", "## Lambda sweep (decoupled IP-Adapter)", "",
              "| lambda | fidelity colour | fidelity shape | fidelity both | text+image both |", "|---|---|---|---|---|"]
    for l in lam:
        lines.append(f"| {l} | {cell('fidelity', l, 'colour')} | {cell('fidelity', l, 'shape')} | {cell('fidelity', l, 'both')} | "
                     f"{cell('text_compat', l, 'both')} |")
    lines += ["", f"References: {results['n_refs']} held-out images ({results['eval']['refs_per_combination']} per colour x shape); "
              f"DDIM {results['eval']['sample_steps']} steps, guidance {results['eval']['guidance']}. In brackets: the 95% "
              f"Wilson interval of each rate over those {results['n_refs']} references.", ""]
    if "derived" in results:
        lines += derived_markdown(results, cell)
    lines += ["## Stages", "", "| stage | seconds | cached | notes |", "|---|---|---|---|"]
    for s in results["stages"]:
        lines.append(f"| {s['name']} | {s['seconds']:.1f} | {'yes' if s['cached'] else 'no'} | {s.get('notes', '')} |")
    lines += [""]
    if "grid_claims" in results:
        lines += ["## Grids: one per claim (first column: the references; row labels: the captions where text is used)", "",
                  "| claim | grid |", "|---|---|"] + [f"| {c} | `{g}` |" for c, g in results["grid_claims"].items()] + [""]
    else:
        lines += ["Grids: " + ", ".join(f"`{os.path.basename(p)}`" for p in results["grids"]), ""]
    return "\n".join(lines)


def derived_markdown(results: dict, cell) -> list:
    """The reuse claim: the base's adapter, unchanged, on a model fine-tuned from the base into a new style."""
    d = results["derived"]
    m, ci = d["metrics"], d["intervals"]

    def dcell(*path):
        v, c = m, ci
        for k in path:
            v, c = v[k], c[k]
        return _pct(v, c)

    sj = d["style_judge"]
    lines = ["## Reuse on a derived model: the base's adapter, unchanged", "",
             f"Derived model: the base UNet fine-tuned {d['steps']} steps (learning rate {d['lr']}) on text-only data in a style "
             f"the base never saw, {d['style']}-tinted backgrounds (captions unchanged, the base's text encoder; final loss "
             f"{d['final_loss']:.4f}). The adapter trained on the base is loaded from its file onto it as it is. Style judge "
             f"(the background's tint, from the border pixels), on ground truth: it fires on {_pct(sj['fires_on_style_data'])} of "
             f"the style's images and {_pct(sj['fires_on_base_data'])} of the base's.", "",
             "| model | prompt | colour | shape | both | style kept | text+image both | style kept (text+image) |",
             "|---|---|---|---|---|---|---|---|",
             f"| base | caption alone | {cell('base_text', 'colour')} | {cell('base_text', 'shape')} | {cell('base_text', 'both')} | "
             f"{dcell('base', 'text', 'style')} | | |",
             f"| derived | caption alone | {dcell('text', 'colour')} | {dcell('text', 'shape')} | {dcell('text', 'both')} | "
             f"{dcell('text', 'style')} | | |"]
    for l in d["lambdas"]:
        lines += [f"| base + adapter (lambda {l}) | image | {cell('fidelity', l, 'colour')} | {cell('fidelity', l, 'shape')} | "
                  f"{cell('fidelity', l, 'both')} | {dcell('base', 'fidelity', l, 'style')} | {cell('text_compat', l, 'both')} | "
                  f"{dcell('base', 'text_compat', l, 'style')} |",
                  f"| derived + the unchanged adapter (lambda {l}) | image | {dcell('fidelity', l, 'colour')} | {dcell('fidelity', l, 'shape')} | "
                  f"{dcell('fidelity', l, 'both')} | {dcell('fidelity', l, 'style')} | {dcell('text_compat', l, 'both')} | "
                  f"{dcell('text_compat', l, 'style')} |"]
    lines += ["", "Caption alone: colour / shape / both against the caption; image: against the reference (empty text); "
              "text+image: the text-compatibility test above. Style kept: how often the style judge fires on those images.", ""]
    return lines
