"""SDXL training: detected from the model folder, conditioned as tutorial_train_sdxl.py (two text encoders'
penultimate states concatenated, pooled text embedding, size/crop time ids), exported in the released SDXL layout."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ip_core.families import load_adapter
from ip_core.checkpoint import load_adapter_state_dict
from ip_core.families import detect_config
from ip_core.embeds import features_for
from trainer.errors import TrainerConfigError
from trainer.frozen_models import detect_sdxl, encode_text, load_sd
from trainer.train import train


@pytest.fixture
def sdxl_args(train_args, tiny_sdxl):
    def make(**over):
        over.setdefault("pretrained_model_name_or_path", tiny_sdxl)
        over.setdefault("train_batch_size", 2)
        over.setdefault("max_train_steps", 2)
        return train_args(**over)

    return make


def _sdxl_inputs(seed=0, batch=2):
    g = torch.Generator().manual_seed(seed)
    lat, t, text = torch.randn(batch, 4, 8, 8, generator=g), torch.tensor([10, 700][:batch]), torch.randn(batch, 77, 64, generator=g)
    pooled = torch.randn(batch, 32, generator=g)
    time_ids = torch.tensor([[1024.0, 768.0, 0.0, 128.0, 1024.0, 1024.0], [512.0, 512.0, 0.0, 0.0, 1024.0, 1024.0]][:batch])
    return lat, t, text, pooled, time_ids, g


@pytest.mark.parametrize("variant", ["base", "plus"])
def test_sdxl_trains_and_export_matches_diffusers(variant, sdxl_args, tiny_sdxl, tiny_models, tmp_path):
    """A few steps on the tiny SDXL model: finite losses; the export loads in ip_core and diffusers' SDXL pipeline
    (load_ip_adapter) predicts what our model predicts, with the pooled text and time ids."""
    from diffusers import StableDiffusionXLPipeline

    from trainer.ip_unet import IPAdapterUNet

    res = train(sdxl_args(variant=variant, output_dir=str(tmp_path / "o")))
    assert len(res.losses) == 2 and all(np.isfinite(res.losses))
    assert json.load(open(tmp_path / "o" / "config.json"))["resolution"] == 16
    sd = load_adapter_state_dict(res.export_path)
    adapter = load_adapter(res.export_path)
    assert detect_config(sd).signature == adapter.config.signature and adapter.config.variant == variant
    assert adapter.config.context_dim == 64

    m = load_sd(tiny_sdxl)
    ours_model = IPAdapterUNet(m.unet, adapter, init_from_unet=False)
    lat, t, text, pooled, time_ids, g = _sdxl_inputs()
    cond = {"text_embeds": pooled, "time_ids": time_ids}
    with torch.no_grad():
        feats = features_for(adapter.config, tiny_models["encoder"].encode(torch.randn(2, 3, 224, 224, generator=g)))
        ours = ours_model(lat, t, text, feats, added_cond=cond)
        plain = ours_model(lat, t, text, feats, scale=0.0, added_cond=cond)
        m2 = load_sd(tiny_sdxl)
        pipe = StableDiffusionXLPipeline(
            vae=m2.vae, text_encoder=m2.text_encoder, text_encoder_2=m2.text_encoder_2, tokenizer=m2.tokenizer,
            tokenizer_2=m2.tokenizer_2, unet=m2.unet, scheduler=m2.scheduler, image_encoder=None, feature_extractor=None,
        )
        pipe.load_ip_adapter(str(tmp_path / "o"), subfolder="", weight_name="ip_adapter.safetensors", image_encoder_folder=None)
        # diffusers takes one [B, images, D] (base) / [B, images, T, D] (plus) tensor per adapter
        theirs = pipe.unet(lat, t, text, added_cond_kwargs={**cond, "image_embeds": [feats.unsqueeze(1)]}).sample
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)
    assert (ours - plain).abs().max() > 1e-4  # the adapter does act


def test_sdxl_text_and_time_ids_follow_the_official_script(tiny_sdxl):
    """encode_text: penultimate states of both encoders concatenated + text_encoder_2's projected pooled output;
    a sample's time ids are (original h, w, crop top, left, target h, w) with the official transforms and delta // 2."""
    from torchvision import transforms

    from trainer.datasets import ClipPreprocessor, make_sample, tokenize

    m = load_sd(tiny_sdxl)
    assert m.sdxl and detect_sdxl(tiny_sdxl)
    ids, ids_2 = tokenize(m.tokenizer, ["a dog", ""]), tokenize(m.tokenizer_2, ["a dog", ""])
    with torch.no_grad():
        text, pooled = encode_text(m, ids, ids_2)
        o1 = m.text_encoder(ids, output_hidden_states=True)
        o2 = m.text_encoder_2(ids_2, output_hidden_states=True)
    assert torch.equal(text, torch.cat([o1.hidden_states[-2], o2.hidden_states[-2]], -1)) and text.shape == (2, 77, 64)
    assert torch.equal(pooled, o2.text_embeds) and pooled.shape == (2, 32)

    rng = np.random.default_rng(0)
    for w, h in ((30, 20), (19, 33), (16, 16)):
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        s = make_sample(img, "a dog", 0, m.tokenizer, 16, ClipPreprocessor(), m.tokenizer_2)
        # tutorial_train_sdxl.py's MyDataset, center_crop=True
        full = transforms.Compose([transforms.Resize(16, interpolation=transforms.InterpolationMode.BILINEAR),
                                   transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])(img)
        top, left = (full.shape[1] - 16) // 2, (full.shape[2] - 16) // 2
        torch.testing.assert_close(s["image"], transforms.functional.crop(full, top, left, 16, 16), rtol=0, atol=1e-6)
        assert s["time_ids"].tolist() == [h, w, top, left, 16, 16]
        assert torch.equal(s["input_ids_2"], tokenize(m.tokenizer_2, "a dog")[0])
    assert make_sample(img, "x", 0, m.tokenizer, 16, ClipPreprocessor()).keys() == {"image", "clip_image", "input_ids", "index"}


def test_sdxl_dropped_text_is_the_empty_prompt_for_both_encoders():
    """Text dropped: the cross-attention text and the pooled embedding both become the empty prompt's; time ids stay."""
    from trainer.recipe import DropRecipe, recipe_loss

    seen = {}

    def model(noisy, t, text, feats, scale=1.0, added_cond=None):
        seen.update(text=text, added=added_cond)
        return torch.zeros_like(noisy)

    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000)
    empty, empty_pooled = torch.full((1, 77, 64), 7.0), torch.full((1, 32), 3.0)
    recipe = DropRecipe(empty, None, i_drop_rate=0.0, t_drop_rate=1.0, ti_drop_rate=0.0, empty_pooled=empty_pooled)
    lat, t, text, pooled, time_ids, g = _sdxl_inputs()
    recipe_loss(model, sched, lat, text, torch.randn(2, 24), recipe, g, g, pooled=pooled, time_ids=time_ids)
    assert torch.equal(seen["text"], empty.expand(2, -1, -1)) and torch.equal(seen["added"]["text_embeds"], empty_pooled.expand(2, -1))
    assert torch.equal(seen["added"]["time_ids"], time_ids)
    recipe.t_drop_rate = 0.0  # nothing dropped: the batch's own pooled embedding
    recipe_loss(model, sched, lat, text, torch.randn(2, 24), recipe, g, g, pooled=pooled, time_ids=time_ids)
    assert torch.equal(seen["added"]["text_embeds"], pooled) and torch.equal(seen["text"], text)


def test_sdxl_default_resolution_is_1024(sdxl_args, tmp_path):
    """No --resolution: 1024 px for SDXL (tutorial_train_sdxl.py), 512 for SD1.5 (tutorial_train.py)."""
    from trainer.train import Trainer
    from trainer.train_config import for_model, validate

    t = Trainer.setup(validate(sdxl_args(resolution=None, output_dir=str(tmp_path / "o"))))
    assert t.sdxl and t.cfg.resolution == 1024
    s = t.dataset[0]
    assert s["image"].shape == (3, 1024, 1024) and s["time_ids"][-2:].tolist() == [1024, 1024]
    assert json.load(open(tmp_path / "o" / "config.json"))["resolution"] == 1024
    sd15 = validate(sdxl_args(resolution=None, pretrained_model_name_or_path=t.cfg.pretrained_model_name_or_path))
    assert for_model(sd15, False).resolution == 512 and for_model(sd15, True).resolution == 1024
    assert for_model(validate(sdxl_args(resolution=64)), True).resolution == 64

    # tutorial_train_sdxl.py: the VAE stays fp32 under mixed precision; UNet and text encoders take the mixed dtype
    t = Trainer.setup(validate(sdxl_args(mixed_precision="bf16", output_dir=str(tmp_path / "bf16"))))
    assert t.models.vae.dtype == torch.float32
    assert t.models.unet.dtype == t.models.text_encoder.dtype == t.models.text_encoder_2.dtype == torch.bfloat16
    from trainer.datasets import collate
    from trainer.recipe import sample_latents

    batch = collate([t.dataset[0], t.dataset[1]])
    t.step_gen.manual_seed(5)
    with t.accelerator.autocast():  # as train_batch calls it
        latents, text, feats, extras = t.encode(batch)
    with torch.no_grad():
        dist = t.models.vae.encode(batch["image"]).latent_dist  # plain fp32
    want = sample_latents(dist.mean, dist.logvar, torch.Generator().manual_seed(5), t.models.vae.config.scaling_factor)
    torch.testing.assert_close(latents, want, rtol=1e-6, atol=1e-6)
    assert text.dtype == torch.bfloat16 and extras["pooled"].shape == (2, 32) and extras["time_ids"].shape == (2, 6)


def test_sdxl_mismatches_are_refused_before_training(sdxl_args, tiny_sdxl, tiny_assets, tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModel

    # an SDXL UNet without the second text encoder, and an SD1.5 folder with one: the folder mixes models
    half = tmp_path / "half"
    shutil.copytree(tiny_sdxl, half)
    shutil.rmtree(half / "text_encoder_2")
    with pytest.raises(TrainerConfigError, match="text_encoder_2"):
        train(sdxl_args(pretrained_model_name_or_path=str(half), output_dir=str(tmp_path / "a")))
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_assets["sd"], mixed)
    shutil.copytree(f"{tiny_sdxl}/text_encoder_2", mixed / "text_encoder_2")
    shutil.copytree(f"{tiny_sdxl}/tokenizer_2", mixed / "tokenizer_2")
    with pytest.raises(TrainerConfigError, match="mixes two models"):
        train(sdxl_args(pretrained_model_name_or_path=str(mixed), output_dir=str(tmp_path / "b")))
    # text encoders whose widths do not add up to the UNet's cross_attention_dim
    wrong = tmp_path / "wrong"
    shutil.copytree(tiny_sdxl, wrong)
    old = CLIPTextConfig.from_pretrained(str(wrong / "text_encoder")).to_dict()
    CLIPTextModel(CLIPTextConfig(**{**old, "hidden_size": 16})).save_pretrained(str(wrong / "text_encoder"))  # 16 + 32 != 64
    with pytest.raises(TrainerConfigError, match=r"16 \+ 32 = 48 channels but the UNet's cross_attention_dim is 64"):
        load_sd(str(wrong))
    # choices SDXL training does not offer fail before any weight is loaded
    for over, flag in ((dict(variant="full-face"), "--variant"), (dict(cache_dir=str(tmp_path / "c")), "--cache_dir"),
                       (dict(validation_image=[f"{tiny_assets['images']}/img0.png"]), "--validation_image")):
        with pytest.raises(TrainerConfigError, match=flag):
            train(sdxl_args(output_dir=str(tmp_path / "d"), **over))
    assert not (tmp_path / "c").exists()


def test_sdxl_shaped_unet_gets_the_released_layout():
    """A full SDXL UNet (meta device: shapes only): 70 layers numbered 1, 3, ..., 139 (layer_specs("sdxl")),
    context 2048; base ViT-H / ViT-bigG and plus ViT-H adapters have the released files' parameter counts."""
    from diffusers import UNet2DConditionModel

    from ip_core.layers import layer_specs
    from trainer.train import build_adapter

    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2, transformer_layers_per_block=(1, 2, 10),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(5, 10, 20),
            cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
        )
        base_h = build_adapter(unet, 1024, "base")
        base_g = build_adapter(unet, 1280, "base")
        plus_h = build_adapter(unet, 1280, "plus")
    # 70 layers: 10 at 640 wide, 60 at 1280; K'/V' are 2048 -> width each; projection Linear(D, 4*2048) + LayerNorm
    ip = 2 * 2048 * (10 * 640 + 60 * 1280)
    assert base_h.num_parameters() == ip + 1024 * 8192 + 8192 + 2 * 2048 == 349_188_096  # ip-adapter_sdxl_vit-h
    assert base_g.num_parameters() == ip + 1280 * 8192 + 8192 + 2 * 2048 == 351_285_248  # ip-adapter_sdxl (bigG)
    r = plus_h.config.resampler
    assert (plus_h.config.num_tokens, r.dim, r.heads, r.dim_head, r.depth, r.embedding_dim, r.output_dim) == (16, 1280, 20, 64, 4, 1280, 2048)
    for adapter in (base_h, base_g, plus_h):
        assert adapter.config.base_model == "sdxl" and adapter.config.context_dim == 2048
        assert list(adapter.layers) == list(layer_specs("sdxl"))
        assert [s.key_number for s in adapter.layers] == list(range(1, 140, 2))
        sd = adapter.released_state_dict()
        assert set(sd["ip_adapter"]) == {f"{n}.to_{kv}_ip.weight" for n in range(1, 140, 2) for kv in "kv"}
        assert detect_config(sd).signature == adapter.config.signature
