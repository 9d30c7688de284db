"""`python -m trainer demo --quick` end to end (the README's first command, shortened for CI): every stage
runs and connects, the files appear, the exported adapter loads through ip_core, the image prompt beats the
no-image baseline and chance, and a rerun reuses the cached stages and reproduces the numbers."""
import json

import numpy as np
import pytest
import torch


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path, capsys):
    from ip_core.families import load_adapter
    from trainer.demo.run import main

    out = tmp_path / "demo"
    assert main(["--quick", "--output-dir", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "results.json") in printed and "grid_fidelity.png" in printed

    results = json.loads((out / "results.json").read_text())
    grids = ("grid_fidelity.png", "grid_text_compat.png", "grid_ablation.png", "grid_table1.png", "grid_derived.png", "grid_base_text.png")
    for name in ("results.md", "ip-adapter_demo.safetensors") + grids:
        assert (out / name).stat().st_size > 0, name
    assert [s["name"] for s in results["stages"]] == [
        "judges", "base model", "image encoder", "IP-Adapter", "ablation (concat)", "fine-tuned (image variations)", "derived model",
        "evaluation", "derived evaluation"]
    assert not any(s["cached"] for s in results["stages"])

    # the trained adapter is a released-layout file the nodes can load
    adapter = load_adapter(out / "ip-adapter_demo.safetensors")
    assert adapter.config.variant == "base" and adapter.config.num_tokens == 4
    assert adapter.config.encoder_width == 64 and adapter.num_parameters() == results["ip_adapter"]["trainable_parameters"]

    m = results["metrics"]
    lam = list(m["fidelity"])
    assert lam[0] == "0.0" and lam[-1] == "1.0"
    f0, f1 = m["fidelity"]["0.0"], m["fidelity"]["1.0"]
    # the image prompt carries the reference's colour: above the lambda-0 baseline and above chance
    assert f1["colour"] > f0["colour"] and f1["colour"] > m["chance"]["colour"]
    assert results["judges"]["colour_accuracy"] > 0.95
    assert 0 <= m["text_compat"]["1.0"]["both"] <= 1 and "concat" in m
    # the Table 1 analogue: the fully fine-tuned image-prompt model, measured like the others, with its size
    assert set(m["finetuned"]) == {"fidelity", "text_compat"} and set(m["finetuned"]["text_compat"]) >= {"both", "text_attribute"}
    assert results["finetuned"]["trainable_parameters"] > results["base"]["unet_parameters"] > results["ip_adapter"]["trainable_parameters"]
    md = (out / "results.md").read_text()
    assert "Lambda sweep" in md and "concatenated" in md and "95% Wilson interval" in md and "Table 1 analogue" in md
    # one grid per claim, each named in results.md
    claims = results["grid_claims"]
    assert sorted(claims.values()) == sorted(grids) and all(f"`{g}`" in md for g in grids)
    assert any("ablation" in c for c in claims) and any("Table 1" in c for c in claims) and any("derived" in c for c in claims)

    # reuse on a derived model: the unchanged adapter file on the fine-tuned model, measured like the base, with the style
    d = results["derived"]
    assert d["adapter_file"] == results["ip_adapter"]["file"] and d["lambdas"] == ["0.5", "1.0"]
    assert set(d["style_judge"]) == {"fires_on_style_data", "fires_on_base_data"} and "Reuse on a derived model" in md
    dm = d["metrics"]
    assert set(dm) == {"text", "fidelity", "text_compat", "base"} and set(dm["text"]) == {"colour", "shape", "both", "style"}
    for l in d["lambdas"]:
        assert set(dm["fidelity"][l]) == {"colour", "shape", "both", "style"} and {"both", "style"} <= set(dm["text_compat"][l])
        assert set(dm["base"]["fidelity"][l]) == {"style"} and set(dm["base"]["text_compat"][l]) == {"style"}

    # every measured rate has its 95% interval, in the same nesting, around it
    def pairs(rates, cis):
        for k, v in rates.items():
            yield from pairs(v, cis[k]) if isinstance(v, dict) else [(v, cis[k])]

    assert set(results["intervals"]) == set(m) - {"chance"}
    for rate, (lo, hi) in pairs({k: v for k, v in m.items() if k != "chance"}, results["intervals"]):
        assert 0 <= lo <= rate <= hi <= 1
    assert set(d["intervals"]) == set(dm)
    for rate, (lo, hi) in pairs(dm, d["intervals"]):
        assert 0 <= lo <= rate <= hi <= 1

    # rerun: every stage comes from the cache, same numbers
    assert main(["--quick", "--output-dir", str(out), "--no-progress"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert all(s["cached"] for s in again["stages"])
    assert again["metrics"] == results["metrics"] and again["derived"]["metrics"] == dm
    # the rerun keeps the times measured when the stages were computed, and reports its own beside them
    assert [s["computed_seconds"] for s in again["stages"]] == [s["seconds"] for s in results["stages"]]
    assert again["wall_time_s"] >= sum(s["seconds"] for s in results["stages"])
    assert "this rerun took" in (out / "results.md").read_text() and "this rerun took" not in md
    # the environment the figures came from
    env = results["environment"]
    assert env["torch"] == torch.__version__ and env["numpy"] == np.__version__ and env["cpu_count"] >= 1
    assert f"torch {torch.__version__}" in md and f"numpy {np.__version__}" in md
