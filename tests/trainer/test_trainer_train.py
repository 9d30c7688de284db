"""The loop end to end on tiny generated models: CLI, exports, resume, corrupt data, NaN, cache, shards."""
import io
import json
import os
import tarfile

import pytest
import torch
from PIL import Image

import trainer.recipe as recipe_mod
import trainer.train as train_mod
from ip_core.families import load_adapter
from trainer.training_checkpoints import list_checkpoints
from trainer.cli import main as cli_main
from trainer.errors import TrainerConfigError, TrainingDivergedError
from trainer.train import train


def test_cli_end_to_end_exports_checkpoints_logs_and_samples(tiny_assets, tmp_path):
    out = tmp_path / "run"
    img = os.path.join(tiny_assets["images"], "img0.png")
    rc = cli_main([
        "train", "--pretrained_model_name_or_path", tiny_assets["sd"], "--image_encoder_path", tiny_assets["encoder"],
        "--data_json_file", tiny_assets["json"], "--data_root_path", tiny_assets["images"], "--output_dir", str(out),
        "--resolution", "16", "--train_batch_size", "4", "--max_train_steps", "3", "--save_steps", "2",
        "--validation_image", img, "--validation_prompt", "a cat", "--validation_steps", "2",
        "--validation_num_inference_steps", "2", "--export_format", "bin", "--logging_steps", "1",
    ])
    assert rc == 0
    assert [os.path.basename(p) for p in list_checkpoints(str(out))] == ["checkpoint-2", "checkpoint-3"]
    for name in ("checkpoint-2/ip_adapter.bin", "ip_adapter.bin", "config.json", "samples/step-0000002.png", "samples/step-0000003.png"):
        assert (out / name).is_file(), name
    assert any(f.startswith("events.out.tfevents") for _, _, fs in os.walk(out / "logs") for f in fs)
    adapter = load_adapter(out / "ip_adapter.bin")
    assert adapter.config.variant == "base" and adapter.config.num_tokens == 4 and adapter.config.context_dim == 32
    grid = Image.open(out / "samples/step-0000003.png")
    assert grid.size == (32, 16)  # reference + one sample, one row
    with open(out / "config.json") as fh:
        assert json.load(fh)["max_train_steps"] == 3


class _Killed(Exception):
    pass


def test_resume_after_kill_reproduces_the_uninterrupted_run(train_args, monkeypatch, tmp_path):
    # batch 3 over 8 images: 3 batches per epoch (the last one partial); 5 steps cross an epoch boundary
    kw = dict(train_batch_size=3, max_train_steps=5, save_steps=2, logging_steps=2)
    full = train(train_args(output_dir=str(tmp_path / "full"), **kw))
    assert len(full.losses) == 5 and all(l == l for l in full.losses)

    calls = {"n": 0}
    real = recipe_mod.diffusion_loss

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:  # killed in the middle of step 4 (after checkpoint-2)
            raise _Killed()
        return real(*a, **k)

    out = str(tmp_path / "cut")
    monkeypatch.setattr(recipe_mod, "diffusion_loss", dying)
    with pytest.raises(_Killed):
        train(train_args(output_dir=out, **kw))
    monkeypatch.setattr(recipe_mod, "diffusion_loss", real)
    os.makedirs(os.path.join(out, ".checkpoint-4.tmp"))  # a save that was killed half-way is ignored
    assert [os.path.basename(p) for p in list_checkpoints(out)] == ["checkpoint-2"]

    resumed = train(train_args(output_dir=out, resume_from_checkpoint="latest", **kw))
    assert resumed.resumed_from.endswith("checkpoint-2")
    assert resumed.losses == full.losses  # bit-exact on CPU
    a, b = load_adapter(full.export_path), load_adapter(resumed.export_path)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    # a resume with other recipe settings is refused, naming them
    with pytest.raises(Exception, match="--train_batch_size"):
        train(train_args(output_dir=out, resume_from_checkpoint="latest", **dict(kw, train_batch_size=2)))


def test_corrupt_images_are_skipped_and_counted(tiny_assets, train_args, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    items = json.loads(open(tiny_assets["json"]).read())[:4]
    for it in items:
        (root / it["image_file"]).write_bytes(open(os.path.join(tiny_assets["images"], it["image_file"]), "rb").read())
    good = (root / "img0.png").read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "notimage.png").write_text("hello")
    items += [{"image_file": "truncated.png", "text": "x"}, {"image_file": "notimage.png", "text": "y"}, {"image_file": "missing.png", "text": "z"}]
    (root / "data.json").write_text(json.dumps(items))
    res = train(train_args(data_json_file=str(root / "data.json"), data_root_path=str(root), max_train_steps=None,
                           num_train_epochs=1, train_batch_size=7, output_dir=str(tmp_path / "o"), dataloader_num_workers=2))
    assert res.skipped_images == 3 and res.global_step == 1 and res.samples_seen == 4


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(train_args, monkeypatch, tmp_path):
    real = recipe_mod.diffusion_loss
    calls = {"n": 0}

    def nan_after_two(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] >= 3 else loss

    monkeypatch.setattr(recipe_mod, "diffusion_loss", nan_after_two)
    out = tmp_path / "o"
    with pytest.raises(TrainingDivergedError, match="checkpoint-2") as e:
        train(train_args(output_dir=str(out), max_train_steps=6, save_steps=2, logging_steps=1))
    assert "step 3" in str(e.value)
    assert [os.path.basename(p) for p in list_checkpoints(str(out))] == ["checkpoint-2"]
    assert not (out / "ip_adapter.safetensors").exists()
    assert all(torch.isfinite(v).all() for v in load_adapter(out / "checkpoint-2" / "ip_adapter.safetensors").state_dict().values())


def test_cache_pass_trains_like_the_live_models(train_args, tmp_path):
    kw = dict(max_train_steps=3, train_batch_size=4)
    live = train(train_args(output_dir=str(tmp_path / "live"), **kw))
    cache = str(tmp_path / "cache")
    img = os.path.join(train_args().data_root_path, "img1.png")
    cached = train(train_args(output_dir=str(tmp_path / "cached"), cache_dir=cache, cache_dtype="float32",
                              validation_image=[img], validation_num_inference_steps=2, **kw))
    assert len(cached.sample_grids) == 1 and os.path.isfile(cached.sample_grids[0])
    torch.testing.assert_close(torch.tensor(cached.losses), torch.tensor(live.losses), rtol=1e-4, atol=1e-5)
    meta = os.path.join(cache, "meta.json")
    stamp = os.stat(meta).st_mtime_ns
    again = train(train_args(output_dir=str(tmp_path / "again"), cache_dir=cache, cache_dtype="float32", **kw))
    assert os.stat(meta).st_mtime_ns == stamp and again.losses == cached.losses  # reused, not rebuilt
    with pytest.raises(Exception, match="--cache_dir"):
        train(train_args(output_dir=str(tmp_path / "other"), cache_dir=cache, cache_dtype="float32", resolution=24, **kw))


def _write_shard(path, samples):
    with tarfile.open(path, "w") as tf:
        for key, img_bytes, caption in samples:
            for ext, data in (("png", img_bytes), ("txt", caption.encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


def test_webdataset_shards_and_plus_variant(tiny_assets, train_args, tmp_path):
    imgs = sorted(f for f in os.listdir(tiny_assets["images"]) if f.endswith(".png"))
    blobs = [open(os.path.join(tiny_assets["images"], f), "rb").read() for f in imgs]
    _write_shard(tmp_path / "s-000.tar", [(f"a{i}", b, f"caption {i}") for i, b in enumerate(blobs[:4])])
    _write_shard(tmp_path / "s-001.tar", [(f"b{i}", b, f"caption {i}") for i, b in enumerate(blobs[4:])] + [("bad", b"junk", "x")])
    res = train(train_args(data_json_file=None, train_shards=str(tmp_path / "s-{000..001}.tar"), variant="plus",
                           max_train_steps=None, num_train_epochs=1, train_batch_size=3, shuffle_buffer=4,
                           output_dir=str(tmp_path / "o")))
    assert res.skipped_images == 1 and res.samples_seen == 8 and res.global_step == 3
    adapter = load_adapter(res.export_path)
    assert adapter.config.variant == "plus" and adapter.config.num_tokens == 16


def test_start_from_pretrained_adapter_and_refuse_a_mismatch(train_args, tmp_path):
    first = train(train_args(output_dir=str(tmp_path / "a"), max_train_steps=1))
    second = train(train_args(output_dir=str(tmp_path / "b"), max_train_steps=1, pretrained_ip_adapter_path=first.export_path,
                              learning_rate=1e-12))
    a, b = load_adapter(first.export_path), load_adapter(second.export_path)
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v, rtol=0, atol=1e-6)
    from ip_core.errors import AdapterMismatchError

    with pytest.raises(AdapterMismatchError, match="--pretrained_ip_adapter_path"):
        train(train_args(output_dir=str(tmp_path / "c"), variant="plus", pretrained_ip_adapter_path=first.export_path))


def test_a_pretrained_adapter_or_encoder_that_does_not_fit_is_named_before_training(train_args, tiny_sdxl, tmp_path):
    """Another base model, another variant, another encoder width, an encoder whose image_embeds would be
    untrained: each refused before the first step, naming both sides."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

    from ip_core.adapter import save_adapter
    from ip_core.errors import AdapterMismatchError
    from trainer.frozen_models import load_sd
    from trainer.train import build_adapter

    steps = []
    real_step = train_mod.Trainer.step
    train_mod.Trainer.step = lambda self, *a, **k: steps.append(1) or real_step(self, *a, **k)
    try:
        sdxl_file = str(save_adapter(build_adapter(load_sd(tiny_sdxl).unet, 24, "base"), tmp_path / "sdxl_adapter"))
        with pytest.raises(AdapterMismatchError, match=r"made for .* layers, 64-wide text\) and --pretrained_model_name_or_path is .*32-wide text"):
            train(train_args(output_dir=str(tmp_path / "a"), pretrained_ip_adapter_path=sdxl_file))
        dims = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=224, patch_size=32)
        CLIPVisionModelWithProjection(CLIPVisionConfig(projection_dim=40, **dims)).save_pretrained(str(tmp_path / "enc40"))
        first = train(train_args(output_dir=str(tmp_path / "b"), max_train_steps=1))
        steps.clear()
        with pytest.raises(AdapterMismatchError, match="it takes image_embeds of width 24 and --image_encoder_path gives width 40"):
            train(train_args(output_dir=str(tmp_path / "c"), pretrained_ip_adapter_path=first.export_path,
                             image_encoder_path=str(tmp_path / "enc40")))
        with pytest.raises(AdapterMismatchError, match="it is a base adapter and --variant is plus"):
            train(train_args(output_dir=str(tmp_path / "d"), variant="plus", pretrained_ip_adapter_path=first.export_path))
        CLIPVisionModel(CLIPVisionConfig(projection_dim=24, **dims)).save_pretrained(str(tmp_path / "noproj"))
        with pytest.raises(TrainerConfigError, match="no visual_projection .* --variant plus"):
            train(train_args(output_dir=str(tmp_path / "e"), image_encoder_path=str(tmp_path / "noproj")))
        assert steps == []
        # plus reads the hidden states only: that encoder is fine for it
        assert train(train_args(output_dir=str(tmp_path / "f"), variant="plus", max_train_steps=1,
                                image_encoder_path=str(tmp_path / "noproj"))).global_step == 1
    finally:
        train_mod.Trainer.step = real_step


def test_openclip_checkpoint_file_as_image_encoder(train_args, tmp_path):
    from safetensors.torch import save_file

    from ip_core.encoders import build_openclip_visual

    arch = {"embed_dim": 24, "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "head_width": 8, "patch_size": 32}}
    (tmp_path / "tiny_openclip.json").write_text(json.dumps(arch))
    torch.manual_seed(0)
    visual = build_openclip_visual(arch)
    save_file({"visual." + k: v.contiguous() for k, v in visual.state_dict().items()}, str(tmp_path / "open_clip_model.safetensors"))
    res = train(train_args(image_encoder_path=str(tmp_path / "open_clip_model.safetensors"),
                           image_encoder_arch=str(tmp_path / "tiny_openclip.json"), max_train_steps=1, output_dir=str(tmp_path / "o")))
    assert load_adapter(res.export_path).config.encoder_width == 24
    with pytest.raises(Exception, match="--image_encoder_path"):  # a file of another architecture is named, not crashed on
        train(train_args(image_encoder_path=str(tmp_path / "open_clip_model.safetensors"), output_dir=str(tmp_path / "p")))


def test_sigterm_saves_a_checkpoint_and_stops(train_args, monkeypatch, tmp_path):
    import signal

    real = recipe_mod.diffusion_loss
    calls = {"n": 0}

    def preempted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of step 3
        return real(*a, **k)

    monkeypatch.setattr(recipe_mod, "diffusion_loss", preempted)
    out = str(tmp_path / "o")
    res = train(train_args(output_dir=out, max_train_steps=6, save_steps=100))
    assert res.interrupted and res.global_step == 3
    assert [os.path.basename(p) for p in list_checkpoints(out)] == ["checkpoint-3"]
    assert signal.getsignal(signal.SIGTERM) is not None  # handler restored
    monkeypatch.setattr(recipe_mod, "diffusion_loss", real)
    full = train(train_args(output_dir=str(tmp_path / "full"), max_train_steps=6, save_steps=100))
    resumed = train(train_args(output_dir=out, max_train_steps=6, save_steps=100, resume_from_checkpoint="latest"))
    assert resumed.losses == full.losses and not resumed.interrupted


def test_full_face_variant_trains_exports_and_matches_diffusers(train_args, tiny_models, tmp_path):
    """--variant full-face: the MLP projection over every hidden-state token (257 for ViT-H/14; the tiny
    encoder's 7x7 patches + CLS give 50), uncond = the encoder's output for an all-zero image (as plus).
    The export is the released full-face layout: ip_core detects it and diffusers predicts what we predict."""
    from diffusers import UNet2DConditionModel

    from ip_core.checkpoint import load_adapter_state_dict
    from ip_core.families import detect_config
    from ip_core.embeds import features_for

    res = train(train_args(variant="full-face", max_train_steps=2, output_dir=str(tmp_path / "o")))
    assert len(res.losses) == 2 and all(l == l for l in res.losses)
    sd = load_adapter_state_dict(res.export_path)
    assert sorted(sd["image_proj"]) == ["proj.0.bias", "proj.0.weight", "proj.2.bias", "proj.2.weight", "proj.3.bias", "proj.3.weight"]
    assert detect_config(sd).variant == "full-face"
    adapter = load_adapter(res.export_path)
    assert adapter.config.variant == "full-face" and adapter.config.encoder_output == "penultimate_hidden_states"

    from trainer.ip_unet import IPAdapterUNet

    unet = UNet2DConditionModel.from_pretrained(tiny_models["unet_path"])
    ours_model = IPAdapterUNet(unet, adapter, init_from_unet=False)
    g = torch.Generator().manual_seed(0)
    lat, t, text = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([10, 700]), torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        feats = features_for(adapter.config, tiny_models["encoder"].encode(torch.randn(2, 3, 224, 224, generator=g)))
        assert adapter.project(feats).shape == (2, 50, 32)
        ours = ours_model(lat, t, text, feats)
        dunet = UNet2DConditionModel.from_pretrained(tiny_models["unet_path"])
        dunet._load_ip_adapter_weights([sd])
        theirs = dunet(lat, t, text, added_cond_kwargs={"image_embeds": [feats.unsqueeze(1)]}).sample
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception, match="--num_tokens 257"):
        train(train_args(variant="full-face", num_tokens=257, max_train_steps=1, output_dir=str(tmp_path / "p")))
