"""`python -m trainer demo --sd15 ... --image-encoder ... --ip-adapter ...` with tiny generated stand-ins
(conftest's tiny diffusers SD folder and CLIP vision folder; an adapter and an OpenCLIP checkpoint made here)."""
import json
import os

import torch


def _tiny_adapter(sd_folder, encoder_width, path, seed=0):
    from diffusers import UNet2DConditionModel

    from ip_core.adapter import IPAdapter, save_adapter
    from ip_core.config import make_config
    from ip_core.layers import layer_specs_from_unet

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(os.path.join(sd_folder, "unet"))
    layers = layer_specs_from_unet(unet)
    adapter = IPAdapter.from_config(make_config("base", layers, unet.config.cross_attention_dim, encoder_width), layers)
    for p in adapter.parameters():  # strong enough that lambda visibly matters
        p.data.normal_(0, 0.5)
    save_adapter(adapter, path)
    return path


def test_real_weights_path_generates(tiny_assets, tmp_path):
    from trainer.demo import main

    adapter = _tiny_adapter(tiny_assets["sd"], 24, tmp_path / "ip.safetensors")
    out = tmp_path / "out"
    rc = main(["--sd15", tiny_assets["sd"], "--image-encoder", tiny_assets["encoder"], "--ip-adapter", str(adapter),
               "--prompt", "a red cat", "--steps", "3", "--output-dir", str(out), "--scale", "0", "--scale", "1"])
    assert rc == 0
    files = sorted(os.listdir(out))
    assert "real_grid_ref0.png" in files and "real_ref0_lambda0_0.png" in files and "real_ref0_lambda1_0.png" in files
    from PIL import Image

    import numpy as np

    a = np.asarray(Image.open(out / "real_ref0_lambda0_0.png"), dtype=np.float32)
    b = np.asarray(Image.open(out / "real_ref0_lambda1_0.png"), dtype=np.float32)
    assert np.abs(a - b).mean() > 0.5  # the image prompt changes the result


def test_real_weights_openclip_checkpoint_and_reference(tiny_assets, tmp_path):
    """A single-file OpenCLIP tower (arch given as a JSON model config) and a user reference image."""
    from PIL import Image
    from safetensors.torch import save_file

    from ip_core.encoders import build_openclip_visual
    from trainer.demo import main

    arch = {"embed_dim": 24, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8}}
    torch.manual_seed(0)
    visual = build_openclip_visual(arch)
    save_file({f"visual.{k}": v.contiguous() for k, v in visual.state_dict().items()}, str(tmp_path / "tower.safetensors"))
    (tmp_path / "arch.json").write_text(json.dumps(arch))
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "ref.png")
    adapter = _tiny_adapter(tiny_assets["sd"], 24, tmp_path / "ip.safetensors")
    out = tmp_path / "out"
    rc = main(["--sd15", tiny_assets["sd"], "--image-encoder", str(tmp_path / "tower.safetensors"),
               "--image-encoder-arch", str(tmp_path / "arch.json"), "--ip-adapter", str(adapter),
               "--reference", str(tmp_path / "ref.png"), "--steps", "2", "--scale", "0.5", "--output-dir", str(out)])
    assert rc == 0
    assert (out / "real_ref0_lambda0.5_0.png").exists()


def test_real_weights_mismatch_is_a_clear_error(tiny_assets, tmp_path, capsys):
    from trainer.demo import main

    adapter = _tiny_adapter(tiny_assets["sd"], 48, tmp_path / "wrong.safetensors")  # encoder gives 24
    rc = main(["--sd15", tiny_assets["sd"], "--image-encoder", tiny_assets["encoder"], "--ip-adapter", str(adapter),
               "--steps", "2", "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and "mismatch" in err and "48" in err and "24" in err


def test_real_weights_needs_all_three_paths(tiny_assets, tmp_path, capsys):
    from trainer.demo import main

    assert main(["--sd15", tiny_assets["sd"], "--output-dir", str(tmp_path)]) == 2  # usage: the other two are missing
    assert "needs all of --sd15, --image-encoder and --ip-adapter" in capsys.readouterr().err
    rc = main(["--sd15", str(tmp_path / "nope"), "--image-encoder", tiny_assets["encoder"], "--ip-adapter", str(tmp_path / "x"),
               "--output-dir", str(tmp_path)])
    assert rc == 1 and "no such file" in capsys.readouterr().err
