"""Unit tests of the demo's pieces: dataset determinism, captions, tokenizer, judges, cache keys."""
import numpy as np
import pytest
import torch

from trainer.demo.shapes import COLOUR_NAMES, SHAPES, all_captions, caption, make_judge_shapes, make_shapes, training_captions
from trainer.demo.judges import NONE, judge_colour, train_shape_judge
from trainer.demo.text import WordTokenizer


def test_dataset_is_deterministic_and_seeded():
    a, b, c = make_shapes(64, seed=3), make_shapes(64, seed=3), make_shapes(64, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.colour, b.colour) and torch.equal(a.shape, b.shape)
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (64, 3, 16, 16) and a.images.min() >= -1 and a.images.max() <= 1
    # every attribute value occurs
    big = make_shapes(300, seed=0)
    assert set(big.colour.tolist()) == set(range(len(COLOUR_NAMES))) and set(big.shape.tolist()) == set(range(len(SHAPES)))


def test_shapes_differ_in_pixels():
    # same colour/position, different shape -> different masks (the judge has something to see)
    from trainer.demo.shapes import render

    rgb = np.array([[1.0, 0, 0]] * 3, np.float32)
    bg = np.zeros((3, 3), np.float32)
    img = render(rgb, [0, 1, 2], [8.0] * 3, [8.0] * 3, [4.0] * 3, bg, 16)
    areas = img[..., 0].sum(axis=(1, 2))
    assert all(a > 20 for a in areas)
    assert np.abs(img[0] - img[1]).sum() > 5 and np.abs(img[0] - img[2]).sum() > 5


def test_captions():
    assert caption(0, 0) == "a red circle"
    assert caption(None, 2) == "a triangle"
    assert caption(1, None) == "a green shape"
    assert caption(None, None) == ""
    caps = training_captions(torch.tensor([0] * 400), torch.tensor([1] * 400), torch.Generator().manual_seed(0))
    kinds = {c: caps.count(c) for c in set(caps)}
    assert set(kinds) == {"a red square", "a red shape", "a square", ""}
    assert 0.5 < kinds["a red square"] / 400 < 0.7  # the full caption most of the time
    assert set(caps) <= set(all_captions())


def test_tokenizer_like_clip():
    tok = WordTokenizer(model_max_length=8)
    ids = tok(["a red circle", ""]).input_ids
    assert ids.shape == (2, 8)
    assert ids[0, 0] == tok.bos_token_id and ids[0, 4] == tok.eos_token_id and ids[1, 1] == tok.eos_token_id
    assert (ids[0, 5:] == tok.pad_token_id).all()
    with pytest.raises(ValueError, match="knows only the words"):
        tok(["a purple circle"])


def test_colour_judge_reads_every_palette_colour():
    data = make_shapes(300, seed=5)
    assert (judge_colour(data.images) == data.colour).float().mean() == 1.0
    # a blank image has no object
    blank = torch.full((2, 3, 16, 16), -0.4)
    assert (judge_colour(blank) == NONE).all()


def test_shape_judge_learns_shapes_not_colours():
    judge, acc, acc_noisy = train_shape_judge(16, seed=0, steps=150, n_train=1500)
    assert acc > 0.6 and acc_noisy > 0.6  # chance is 1/3; the full demo trains longer (reported accuracy ~0.99)
    # it reads shapes on the derived model's tinted backgrounds too (its data has tinted backgrounds)
    from trainer.demo.judges import shape_judge_accuracy

    assert shape_judge_accuracy(judge, 16, seed=0, style="teal") > 0.6
    pred = judge.predict(make_judge_shapes(10, seed=9).images)
    assert pred.shape == (10,) and pred.dtype == torch.long


def test_stage_cache_roundtrip_and_key(tmp_path):
    from trainer.demo.run import StageCache, _hash

    cache = StageCache(str(tmp_path))
    k = _hash({"a": 1})
    assert k == _hash({"a": 1}) and k != _hash({"a": 2})
    assert cache.load("x", k) is None
    cache.save("x", k, {"w": torch.ones(2)}, {"note": 1})
    sd, meta = cache.load("x", k)
    assert torch.equal(sd["w"], torch.ones(2)) and meta == {"note": 1}
    # a torn file is recomputed, not fatal
    open(cache.path("x", k), "wb").write(b"junk")
    assert cache.load("x", k) is None
    assert StageCache(str(tmp_path), enabled=False).load("x", k) is None


def test_wilson_intervals_are_the_standard_ones():
    from trainer.demo.metrics import wilson

    # scipy.stats.binomtest(49, 100).proportion_ci(method="wilson"): (0.394220, 0.586520)
    lo, hi = wilson(0.49, 100)
    assert abs(lo - 0.3942199893) < 1e-9 and abs(hi - 0.5865198807) < 1e-9
    assert wilson(0.0, 45)[0] == 0.0 and wilson(1.0, 45)[1] == 1.0  # never outside 0..1
    for n in range(1, 400):  # and always around the rate (at rate 1, n = 30 the formula rounds to 1 - 1e-16)
        for k in {0, 1, n // 3, n - 1, n}:
            lo, hi = wilson(k / n, n)
            assert 0 <= lo <= k / n <= hi <= 1, (k, n)
    assert wilson(0.5, 385)[1] - 0.5 < 0.05  # 385 references: within +-5 points at the widest


def test_every_rate_gets_an_interval_in_the_same_nesting():
    from trainer.demo.metrics import intervals

    metrics = {"base_text": {"colour": 0.9, "shape": 0.5}, "fidelity": {"0.5": {"both": 0.4}}, "chance": {"both": 0.07}}
    ci = intervals(metrics, 45)
    assert set(ci) == {"base_text", "fidelity"} and set(ci["fidelity"]["0.5"]) == {"both"}
    assert ci["base_text"]["colour"][0] < 0.9 < ci["base_text"]["colour"][1]


def test_style_judge_fires_on_the_derived_styles_images_not_on_the_bases():
    from trainer.demo.judges import judge_teal, style_judge_accuracy, teal_score

    styled, plain = make_shapes(400, seed=6, style="teal"), make_shapes(400, seed=6)
    assert judge_teal(styled.images).all() and not judge_teal(plain.images).any()
    # the same draws but the background: same objects, and the colour judge still reads them all
    assert torch.equal(styled.colour, plain.colour) and torch.equal(styled.shape, plain.shape)
    assert (judge_colour(styled.images) == styled.colour).all()
    assert teal_score(styled.images).min() > 0.15 and teal_score(plain.images).abs().max() < 0.09  # margins around 0.12
    assert style_judge_accuracy(16, seed=0, n=300) == {"fires_on_style_data": 1.0, "fires_on_base_data": 0.0}
    with pytest.raises(ValueError, match="unknown style"):
        make_shapes(4, seed=0, style="striped")


def test_derived_model_fine_tunes_a_copy_and_takes_the_unchanged_adapter(tmp_path):
    from ip_core.adapter import save_adapter
    from trainer.demo.adapters import build_ip_model, reuse_ip_model
    from trainer.demo.base import BaseConfig, TinyBase, train_base

    torch.manual_seed(0)
    base = TinyBase(BaseConfig(block_out_channels=(8, 16), context_dim=32)).freeze()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    derived = base.derive()
    assert derived.unet is not base.unet and derived.text_encoder is base.text_encoder
    losses = train_base(derived, make_shapes(64, seed=1, style="teal"), seed=2, steps=2, lr=1e-3, text_encoder=False)
    assert len(losses) == 2
    # the base (UNet and the shared text encoder) is untouched; the derived UNet moved and is frozen again
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())
    assert any(not torch.equal(p, q) for p, q in zip(derived.unet.parameters(), base.unet.parameters()))
    assert not any(p.requires_grad for p in derived.unet.parameters())

    ip = build_ip_model(base, encoder_width=16)
    with torch.no_grad():
        for p in ip.adapter.parameters():
            p.add_(torch.randn_like(p))  # a "trained" adapter, unlike the fresh init
    path = save_adapter(ip.adapter, tmp_path / "a.safetensors")
    reused = reuse_ip_model(derived, 16, str(path))
    assert all(torch.equal(a, b) for a, b in zip(reused.adapter.state_dict().values(), ip.adapter.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(reused.unet.state_dict().values(), derived.unet.state_dict().values()))
    # lambda 0 is the derived model itself, bit for bit
    z, t = torch.randn(2, *derived.latent_shape), torch.tensor([10, 500])
    text = derived.text_embeds(["a red circle", ""])
    with torch.no_grad():
        assert torch.equal(reused(z, t, text, torch.randn(2, 16), scale=0.0), derived.unet(z, t, text).sample)


def test_derived_lambdas_and_seed_option():
    from dataclasses import replace

    from trainer.demo.metrics import EvalConfig, derived_lambdas
    from trainer.demo.run import build_parser, full_config, quick_config

    assert derived_lambdas(EvalConfig()) == [0.5, 1.0]
    assert derived_lambdas(replace(EvalConfig(), lambdas=(0.0, 0.75))) == [0.75]
    args = build_parser().parse_args(["--seed", "3"])
    assert args.seed == 3 and build_parser().parse_args([]).seed == 0
    assert full_config(3).seed == 3 and quick_config(3).seed == 3


def test_stages_run_in_order_load_or_train_once_and_a_rerun_keeps_the_computed_time(tmp_path):
    from trainer.demo.run import DemoRun, Progress, StageCache, environment, full_config, run_stages

    trained = []

    def make_stage(name, value):
        def stage(r):
            def train():
                trained.append(name)
                return {"w": torch.full((2,), value)}, {"value": value}

            r.out = getattr(r, "out", []) + [r.load_or_train(name, "k", lambda t: r.loaded.append((name, t["w"])), train)]
            return f"{name} notes"
        return stage

    stages = [("first", make_stage("first", 1.0)), ("second", make_stage("second", 2.0)), ("no cache", lambda r: "plain")]

    def run():
        r = DemoRun(full_config(), str(tmp_path), StageCache(str(tmp_path)), Progress(False))
        r.loaded = []
        return r, run_stages(r, stages)

    r, records = run()
    assert trained == ["first", "second"] and r.out == [{"value": 1.0}, {"value": 2.0}] and r.loaded == []
    assert [(s["name"], s["cached"], s["notes"]) for s in records] == [
        ("first", False, "first notes"), ("second", False, "second notes"), ("no cache", False, "plain")]
    assert all(s["computed_seconds"] == s["seconds"] for s in records)

    again, rerun = run()
    assert trained == ["first", "second"]  # nothing trained twice
    assert again.out == r.out and [(n, w.tolist()) for n, w in again.loaded] == [("first", [1.0, 1.0]), ("second", [2.0, 2.0])]
    assert [s["cached"] for s in rerun] == [True, True, False]
    # a cached stage reports the seconds it took when it was computed, not its loading time
    assert [s["computed_seconds"] for s in rerun[:2]] == [s["seconds"] for s in records[:2]]
    assert not any("computed_environment" in s for s in rerun)  # computed here

    # computed elsewhere: the rerun names that environment; a cache without the record has no computed time
    cache = StageCache(str(tmp_path))
    cache.save_computed("first", "k", {"seconds": 7.5, "environment": {"torch": "0.0"}})
    import os
    os.remove(cache.path("second", "k", ".computed.json"))
    _, third = run()
    assert third[0]["computed_seconds"] == 7.5 and third[0]["computed_environment"] == {"torch": "0.0"}
    assert third[1]["computed_seconds"] is None

    env = environment()
    assert env["torch"] == torch.__version__ and env["numpy"] == np.__version__ and env["cpu_count"] == os.cpu_count()
    assert {"python", "pillow", "diffusers", "transformers", "cpu", "torch_cpu_capability"} <= set(env)
