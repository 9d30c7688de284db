"""Flags: official names and defaults, config files, and clear errors before any model is loaded."""
import pytest

from trainer.cli import main as cli_main
from trainer.train_config import TrainConfig, TrainerConfigError, for_model, parse_train_args, validate

OFFICIAL_DEFAULTS = {  # tutorial_train.py's argparse defaults
    "pretrained_ip_adapter_path": None, "output_dir": "sd-ip_adapter", "logging_dir": "logs",
    "learning_rate": 1e-4, "weight_decay": 1e-2, "num_train_epochs": 100, "train_batch_size": 8,
    "dataloader_num_workers": 0, "save_steps": 2000, "mixed_precision": None, "report_to": "tensorboard", "local_rank": -1,
}


def test_official_flags_and_defaults():
    cfg = parse_train_args(["--pretrained_model_name_or_path", "m", "--data_json_file", "d.json", "--data_root_path", "r", "--image_encoder_path", "e"])
    for k, v in OFFICIAL_DEFAULTS.items():
        assert getattr(cfg, k) == v, k
    assert cfg.variant == "base" and cfg.tokens() == 4
    # --resolution: 512 (tutorial_train.py) once the model is known to be SD1.5; SDXL: tests/trainer/test_trainer_sdxl.py
    assert cfg.resolution is None and for_model(cfg, sdxl=False).resolution == 512
    assert TrainConfig(variant="plus").tokens() == 16
    cfg = parse_train_args(["--pretrained_model_name_or_path", "m", "--num_tokens", "8", "--mixed_precision", "bf16",
                            "--save_steps", "5", "--learning_rate", "3e-5", "--validation_image", "a.png", "b.png"])
    assert cfg.num_tokens == 8 and cfg.mixed_precision == "bf16" and cfg.save_steps == 5 and cfg.learning_rate == 3e-5
    assert cfg.validation_image == ["a.png", "b.png"]


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_config_file_and_flags_win(tmp_path, suffix):
    f = tmp_path / f"c{suffix}"
    if suffix == ".yaml":
        f.write_text("train_batch_size: 3\nlearning_rate: 2.0e-4\nvalidation_prompt: a cat\nvariant: plus\n")
    else:
        f.write_text('train_batch_size = 3\nlearning_rate = 2e-4\nvalidation_prompt = "a cat"\nvariant = "plus"\n')
    cfg = parse_train_args(["--config", str(f), "--train_batch_size", "5"])
    assert cfg.train_batch_size == 5 and cfg.learning_rate == 2e-4 and cfg.validation_prompt == ["a cat"] and cfg.variant == "plus"


def test_config_file_errors(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("train_batch_sise: 3\n")
    with pytest.raises(TrainerConfigError, match="train_batch_sise"):
        parse_train_args(["--config", str(bad)])
    with pytest.raises(TrainerConfigError, match="--config"):
        parse_train_args(["--config", str(tmp_path / "missing.yaml")])
    broken = tmp_path / "b.toml"
    broken.write_text("x = [\n")
    with pytest.raises(TrainerConfigError, match="cannot parse"):
        parse_train_args(["--config", str(broken)])


@pytest.mark.parametrize(
    "override, flag",
    [
        (dict(pretrained_model_name_or_path="/nope/model"), "--pretrained_model_name_or_path"),
        (dict(image_encoder_path="/nope/enc"), "--image_encoder_path"),
        (dict(data_json_file="/nope/data.json"), "--data_json_file"),
        (dict(data_root_path="/nope/root"), "--data_root_path"),
        (dict(resolution=20), "--resolution"),
        (dict(learning_rate=0.0), "--learning_rate"),
        (dict(train_batch_size=0), "--train_batch_size"),
        (dict(variant="huge"), "--variant"),
        (dict(resume_from_checkpoint="/nope/ckpt"), "--resume_from_checkpoint"),
        (dict(pretrained_ip_adapter_path="/nope/a.bin"), "--pretrained_ip_adapter_path"),
        (dict(validation_image=["/nope/x.png"]), "--validation_image"),
        (dict(report_to="myboard"), "--report_to"),
        (dict(data_json_file=None), "--data_json_file"),
        (dict(train_shards="/nope/{000..002}.tar", data_json_file=None), "--train_shards"),
    ],
)
def test_bad_settings_name_the_flag(train_args, override, flag):
    with pytest.raises(TrainerConfigError) as e:
        validate(train_args(**override))
    assert flag in str(e.value)


def test_pickled_single_file_refused(train_args, tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x")
    with pytest.raises(TrainerConfigError, match="pickled"):
        validate(train_args(pretrained_model_name_or_path=str(ckpt)))


def test_single_file_without_configs_gives_the_remedy(train_args, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    f = tmp_path / "sd15.safetensors"
    from safetensors.torch import save_file
    import torch

    save_file({"x": torch.zeros(1)}, str(f))
    from trainer.frozen_models import load_sd

    with pytest.raises(TrainerConfigError, match="--single_file_config"):
        load_sd(str(f))


def test_cli_reports_errors_without_traceback(train_args, capsys, tiny_assets):
    rc = cli_main(["train", "--pretrained_model_name_or_path", tiny_assets["sd"], "--image_encoder_path", "/nope/enc",
                   "--data_json_file", tiny_assets["json"], "--data_root_path", tiny_assets["images"]])
    assert rc == 1  # an expected failure (ip_core.errors.EXIT_FAILED)
    err = capsys.readouterr().err
    assert "--image_encoder_path" in err and "Traceback" not in err
    assert cli_main([]) == 2 and cli_main(["frobnicate"]) == 2  # usage


def test_malformed_data_file_fails_before_models_load(train_args, tmp_path, monkeypatch):
    import trainer.train as train_mod
    from trainer.train import train

    bad = tmp_path / "data.json"
    bad.write_text('[{"image_file": "a.png"}]')

    def boom(*a, **k):
        raise AssertionError("models were loaded")

    monkeypatch.setattr(train_mod, "load_sd", boom)
    with pytest.raises(TrainerConfigError, match="--data_json_file"):
        train(train_args(data_json_file=str(bad), output_dir=str(tmp_path / "o")))
