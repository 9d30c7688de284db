"""Hostile and careless inputs to the trainer (issue 9, item 4): every one a clear error naming the setting,
the value and the remedy, before any model is loaded where possible; nothing non-finite ever saved or called
good; checkpoint re-saves that a kill cannot lose; files created with the user's umask."""
import json
import os
import stat

import pytest
import torch

import trainer.recipe as recipe_mod
import trainer.train as train_mod
import trainer.training_checkpoints as ck
from ip_core.families import load_adapter
from trainer.cli import main as cli_main
from trainer.datasets import EAGER_CHECK
from trainer.errors import TrainerConfigError, TrainingDivergedError
from trainer.train import train
from trainer.train_config import parse_train_args, validate


@pytest.fixture
def no_models(monkeypatch):
    """Fail the test if the frozen models are loaded: the error must come first."""

    def boom(*a, **k):
        raise AssertionError("models were loaded before the error")

    monkeypatch.setattr(train_mod, "load_sd", boom)


# ---------------------------------------------------------------------------------------------- typed config

@pytest.mark.parametrize(
    "override, flag, words",
    [
        (dict(train_batch_size=2.9), "--train_batch_size", "whole number"),
        (dict(train_batch_size="2.9"), "--train_batch_size", "whole number"),
        (dict(train_batch_size=True), "--train_batch_size", "whole number"),
        (dict(output_dir=123), "--output_dir", "quote it"),
        (dict(validation_image=5), "--validation_image", "not a text"),
        (dict(validation_image=[5]), "--validation_image", "not a text"),
        (dict(learning_rate=float("inf")), "--learning_rate", "finite"),
        (dict(learning_rate=float("nan")), "--learning_rate", "finite"),
        (dict(learning_rate="fast"), "--learning_rate", "not a number"),
        (dict(i_drop_rate=float("nan")), "--i_drop_rate", "finite"),
        (dict(t_drop_rate=float("inf")), "--t_drop_rate", "finite"),
        (dict(ti_drop_rate=float("-inf")), "--ti_drop_rate", "finite"),
        (dict(i_drop_rate=0.9, t_drop_rate=0.9), "--i_drop_rate", "sum to <= 1"),
        (dict(gradient_checkpointing="maybe"), "--gradient_checkpointing", "true or false"),
        (dict(variant=["base"]), "--variant", "not text"),
        (dict(num_validation_images=0), "--num_validation_images", ">= 1"),
    ],
)
def test_every_value_is_typed_never_truncated(train_args, override, flag, words):
    with pytest.raises(TrainerConfigError) as e:
        validate(train_args(**override))
    assert flag in str(e.value) and words in str(e.value)


def test_integral_floats_and_numeric_text_are_accepted_exactly(train_args):
    cfg = validate(train_args(train_batch_size=2.0, learning_rate="3e-5", gradient_checkpointing="false", validation_prompt=None))
    assert cfg.train_batch_size == 2 and type(cfg.train_batch_size) is int
    assert cfg.learning_rate == 3e-5 and cfg.gradient_checkpointing is False and cfg.validation_prompt == []


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_config_files_are_typed_like_flags(tmp_path, suffix):
    f = tmp_path / f"c{suffix}"
    f.write_text("train_batch_size: 2.9\n" if suffix == ".yaml" else "train_batch_size = 2.9\n")
    with pytest.raises(TrainerConfigError, match="--train_batch_size: 2.9 is not a whole number"):
        parse_train_args(["--config", str(f)])
    f.write_text("output_dir: 123\n" if suffix == ".yaml" else "output_dir = 123\n")
    with pytest.raises(TrainerConfigError, match="--output_dir: 123"):
        parse_train_args(["--config", str(f)])
    f.write_text("validation_image: 5\n" if suffix == ".yaml" else "validation_image = 5\n")
    with pytest.raises(TrainerConfigError, match="--validation_image"):
        parse_train_args(["--config", str(f)])
    f.write_text("learning_rate: .inf\n" if suffix == ".yaml" else "learning_rate = inf\n")
    with pytest.raises(TrainerConfigError, match="--learning_rate"):
        parse_train_args(["--config", str(f)])


def test_flags_inf_and_nan_refused(capsys):
    for value in ("inf", "nan", "-inf"):
        with pytest.raises(TrainerConfigError, match="--learning_rate"):
            parse_train_args([f"--learning_rate={value}"])


def test_output_dir_that_is_a_file(train_args, tmp_path, no_models):
    f = tmp_path / "out"
    f.write_text("not a folder")
    with pytest.raises(TrainerConfigError, match="--output_dir.*not a folder"):
        train(train_args(output_dir=str(f)))


def test_validation_image_that_is_not_an_image(train_args, tmp_path, no_models):
    f = tmp_path / "ref.png"
    f.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(TrainerConfigError, match="--validation_image.*not a readable image"):
        train(train_args(validation_image=[str(f)]))


# ---------------------------------------------------------------------------------------------- data files

def test_data_file_bad_utf8(train_args, tmp_path, no_models):
    f = tmp_path / "data.json"
    f.write_bytes(b'[{"image_file": "a.png", "text": "caf\xe9"}]')
    with pytest.raises(TrainerConfigError, match="--data_json_file.*not UTF-8.*byte 37"):
        train(train_args(data_json_file=str(f), output_dir=str(tmp_path / "o")))


def test_data_file_deep_nesting(train_args, tmp_path, no_models):
    f = tmp_path / "data.json"
    f.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(TrainerConfigError, match="--data_json_file.*nested too deeply"):
        train(train_args(data_json_file=str(f), output_dir=str(tmp_path / "o")))


def test_data_entry_with_a_wrong_type_is_named_by_index(train_args, tmp_path, no_models):
    f = tmp_path / "data.json"
    f.write_text(json.dumps([{"image_file": "a.png", "text": "x"}, {"image_file": 7, "text": "y"}]))
    with pytest.raises(TrainerConfigError, match="entry 1 of .* has a int as 'image_file'"):
        train(train_args(data_json_file=str(f), output_dir=str(tmp_path / "o")))


def _late_bad_entry_data(tiny_assets, tmp_path):
    items = json.loads(open(tiny_assets["json"]).read())
    data = [items[i % len(items)] for i in range(EAGER_CHECK + 7)]
    data[EAGER_CHECK + 5] = {"image_file": "img0.png"}  # past the eagerly checked part, no "text"
    f = tmp_path / "big.json"
    f.write_text(json.dumps(data))
    return str(f), EAGER_CHECK + 5


@pytest.mark.parametrize("workers", [0, 2])
def test_entry_past_the_first_thousand_lacking_text_is_a_clear_error(train_args, tiny_assets, tmp_path, capsys, workers):
    path, bad = _late_bad_entry_data(tiny_assets, tmp_path)
    # lazily: the run starts (nothing reads 1000+ entries up front) and stops at the batch holding that entry,
    # with the entry's index, in the main process (no worker traceback)
    with pytest.raises(TrainerConfigError, match=f"entry {bad} of .* lacks 'text'"):
        train(train_args(data_json_file=path, output_dir=str(tmp_path / "o"), max_train_steps=None, num_train_epochs=1,
                         train_batch_size=64, dataloader_num_workers=workers))
    rc = cli_main(["train", "--pretrained_model_name_or_path", tiny_assets["sd"], "--image_encoder_path", tiny_assets["encoder"],
                   "--data_json_file", path, "--data_root_path", tiny_assets["images"], "--output_dir", str(tmp_path / "c"),
                   "--resolution", "16", "--train_batch_size", "64", "--num_train_epochs", "1", "--report_to", "none",
                   "--dataloader_num_workers", str(workers)])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # (progress bars of the model loading come before it)
    assert rc == 1 and last.startswith(f"error: --data_json_file: entry {bad}") and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- finite weights

def test_infinite_learning_rate_in_code_never_writes_a_checkpoint(train_args, tmp_path, monkeypatch):
    """A non-finite step (here: an AdamW lr of inf set behind the config's back) is caught before a
    checkpoint or export is written, and no message calls a bad checkpoint good."""
    real = train_mod.make_optimizer
    monkeypatch.setattr(train_mod, "make_optimizer", lambda params, lr, weight_decay, **kw: real(params, lr=float("inf"), weight_decay=weight_decay, **kw))
    out = tmp_path / "o"
    with pytest.raises(TrainingDivergedError) as e:
        train(train_args(output_dir=str(out), max_train_steps=3, save_steps=1, logging_steps=1))
    assert "NaN/inf" in str(e.value) and "none (no checkpoint was written yet)" in str(e.value)
    assert ck.list_checkpoints(str(out)) == [] and not (out / "ip_adapter.safetensors").exists()


def test_weights_going_bad_after_a_good_checkpoint_name_that_checkpoint(train_args, tmp_path, monkeypatch):
    """Step 3's update makes the weights non-finite while every loss so far was finite: the final save refuses
    them and the message names checkpoint-2, whose weights were checked."""
    made = {}
    real_opt, real_loss = train_mod.make_optimizer, recipe_mod.diffusion_loss
    monkeypatch.setattr(train_mod, "make_optimizer", lambda *a, **k: made.setdefault("opt", real_opt(*a, **k)))
    calls = {"n": 0}

    def lr_blows_up_at_step_3(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            for g in made["opt"].param_groups:
                g["lr"] = float("inf")
        return real_loss(*a, **k)

    monkeypatch.setattr(recipe_mod, "diffusion_loss", lr_blows_up_at_step_3)
    out = tmp_path / "o"
    with pytest.raises(TrainingDivergedError, match="checkpoint-2") as e:
        train(train_args(output_dir=str(out), max_train_steps=3, save_steps=2, logging_steps=1))
    assert "NaN/inf by step 3" in str(e.value)
    assert [os.path.basename(p) for p in ck.list_checkpoints(str(out))] == ["checkpoint-2"]
    assert not (out / "ip_adapter.safetensors").exists()
    assert all(torch.isfinite(v).all() for v in load_adapter(out / "checkpoint-2" / "ip_adapter.safetensors").state_dict().values())


# ---------------------------------------------------------------------------------------------- resume state

def _one_checkpoint(train_args, tmp_path):
    out = tmp_path / "o"
    train(train_args(output_dir=str(out), max_train_steps=1, save_steps=1))
    return out, out / "checkpoint-1"


def test_corrupt_rng_file_fails_before_models_load(train_args, tmp_path, monkeypatch):
    out, ckpt = _one_checkpoint(train_args, tmp_path)
    monkeypatch.setattr(train_mod, "load_sd", lambda *a, **k: (_ for _ in ()).throw(AssertionError("models loaded")))
    (ckpt / "rng_rank0.pt").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(TrainerConfigError, match="rng_rank0.pt.*damaged.*older checkpoint"):
        train(train_args(output_dir=str(out), max_train_steps=2, resume_from_checkpoint="latest"))
    torch.save({"torch": torch.zeros(3)}, ckpt / "rng_rank0.pt")  # readable, wrong content
    with pytest.raises(TrainerConfigError, match="rng_rank0.pt.*not a random state"):
        train(train_args(output_dir=str(out), max_train_steps=2, resume_from_checkpoint="latest"))


def test_state_without_its_config_fails_before_models_load(train_args, tmp_path, monkeypatch):
    out, ckpt = _one_checkpoint(train_args, tmp_path)
    monkeypatch.setattr(train_mod, "load_sd", lambda *a, **k: (_ for _ in ()).throw(AssertionError("models loaded")))
    state = torch.load(ckpt / "state.pt", weights_only=True)
    del state["config"]
    torch.save(state, ckpt / "state.pt")
    with pytest.raises(TrainerConfigError, match=r"state.pt.*lacks \['config'\]"):
        train(train_args(output_dir=str(out), max_train_steps=2, resume_from_checkpoint="latest"))
    (ckpt / "state.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(TrainerConfigError, match="state.pt.*damaged"):
        train(train_args(output_dir=str(out), max_train_steps=2, resume_from_checkpoint="latest"))


# ---------------------------------------------------------------------------------------------- atomic re-save

def test_kill_between_the_renames_of_a_resave_keeps_the_step(tmp_path, monkeypatch):
    out = str(tmp_path)
    tmp = ck.begin(out, 5)
    ck.commit(tmp, out, 5, {"v": 1})
    renames = []
    real = os.replace

    def killed_after_first(a, b):
        renames.append((a, b))
        if len(renames) == 2:
            raise KeyboardInterrupt  # the process dies between moving the old folder aside and the new one in
        return real(a, b)

    tmp = ck.begin(out, 5)
    monkeypatch.setattr(ck.os, "replace", killed_after_first)
    with pytest.raises(KeyboardInterrupt):
        ck.commit(tmp, out, 5, {"v": 2})
    monkeypatch.setattr(ck.os, "replace", real)
    found = ck.list_checkpoints(out)
    assert len(found) == 1 and found[0].endswith("checkpoint-5.old")  # step 5 is still there
    assert ck.resolve_resume("latest", out) == found[0]
    assert torch.load(os.path.join(found[0], ck.STATE_FILE), weights_only=True) == {"v": 1}
    # the next save of that step completes and leaves one folder
    ck.commit(ck.begin(out, 5), out, 5, {"v": 3})
    assert [os.path.basename(p) for p in ck.list_checkpoints(out)] == ["checkpoint-5"]
    assert sorted(os.listdir(out)) == ["checkpoint-5"]


def test_resave_in_a_run_replaces_the_step(train_args, tmp_path):
    out = tmp_path / "o"
    train(train_args(output_dir=str(out), max_train_steps=2, save_steps=2))
    first = torch.load(out / "checkpoint-2" / "state.pt", weights_only=True)["losses"]
    train(train_args(output_dir=str(out), max_train_steps=2, save_steps=2, seed=0))  # same step written again
    assert sorted(p for p in os.listdir(out) if p.startswith("checkpoint")) == ["checkpoint-2"]
    assert torch.load(out / "checkpoint-2" / "state.pt", weights_only=True)["losses"] == first


# ---------------------------------------------------------------------------------------------- file modes

def test_exports_follow_the_umask(train_args, tmp_path):
    old = os.umask(0o027)
    try:
        res = train(train_args(output_dir=str(tmp_path / "o"), max_train_steps=1, save_steps=1))
    finally:
        os.umask(old)
    for p in (res.export_path, os.path.join(res.checkpoint_path, "ip_adapter.safetensors"), os.path.join(res.checkpoint_path, "state.pt")):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o640, p


# ---------------------------------------------------------------------------------------------- the CLI boundary

def test_cli_one_line_for_expected_errors_and_a_log_for_unexpected(tiny_assets, tmp_path, capsys, monkeypatch):
    base = ["train", "--pretrained_model_name_or_path", tiny_assets["sd"], "--image_encoder_path", tiny_assets["encoder"],
            "--data_json_file", tiny_assets["json"], "--data_root_path", tiny_assets["images"], "--resolution", "16",
            "--report_to", "none", "--max_train_steps", "1"]
    assert cli_main(base + ["--output_dir", str(tmp_path / "a"), "--learning_rate", "inf"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --learning_rate") and "Traceback" not in err and len(err.strip().splitlines()) == 1  # before any loading

    def bug(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(train_mod, "make_optimizer", bug)
    out = tmp_path / "b"
    assert cli_main(base + ["--output_dir", str(out)]) == 3
    err = capsys.readouterr().err
    assert "unexpected internal error (ZeroDivisionError: a bug)" in err and "Traceback" not in err
    log = out / "ipadapter-errors.log"  # ip_core.errors.log_unexpected, the CLIs' and nodes' one log
    assert str(log) in err and "Traceback" in log.read_text() and "ZeroDivisionError" in log.read_text()
