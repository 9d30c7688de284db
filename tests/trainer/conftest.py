"""Tiny generated models and data for the trainer tests (no network, no real weights).

`tiny_sd` : a diffusers SD folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/) with cross_attention_dim 32
`tiny_image_encoder` : a transformers CLIPVisionModelWithProjection folder (hidden 32, projection 32, 224 px)
`tiny_data` : 8 images + captions in the official JSON format
`train_args(tmp_path, **overrides)` : a TrainConfig for them, fast settings
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

TINY_RES = 16


def _bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tiny_tokenizer(folder: Path, max_length: int = 77):
    """A byte-level CLIP BPE tokenizer with single-character tokens only (a handful of merges)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    vocab = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    merges = ["#version: 0.2", "a t</w>", "o g</w>", "d og</w>"]
    for m in merges[1:]:
        vocab["".join(m.split())] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("\n".join(merges) + "\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)
    tok.save_pretrained(str(folder))
    return tok, len(vocab)


def build_tiny_sd(root: Path, seed: int = 0) -> Path:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=4,
    )
    unet.save_pretrained(str(root / "unet"))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 16), latent_channels=4,
        norm_num_groups=4, sample_size=TINY_RES,
    )
    vae.save_pretrained(str(root / "vae"))
    tok, vocab_size = write_tiny_tokenizer(root / "tokenizer")
    te = CLIPTextModel(CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=vocab_size,
        max_position_embeddings=77, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
    ))
    te.save_pretrained(str(root / "text_encoder"))
    DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, steps_offset=1).save_pretrained(str(root / "scheduler"))
    return root


def build_tiny_image_encoder(folder: Path, seed: int = 0) -> Path:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, projection_dim=24, num_hidden_layers=2, num_attention_heads=4,
        image_size=224, patch_size=32,
    ))
    model.save_pretrained(str(folder))
    return folder


CAPTIONS = ["a red cat", "a dog", "green at dusk", "a blue dog", "cat and dog", "sky", "orange", "a purple thing"]


def write_images(folder: Path, n: int = 8, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        h, w = int(rng.integers(18, 30)), int(rng.integers(18, 30))
        base = rng.integers(0, 255, size=3)
        arr = np.clip(base + rng.normal(0, 25, size=(h, w, 3)), 0, 255).astype(np.uint8)
        name = f"img{i}.png"
        Image.fromarray(arr).save(folder / name)
        items.append({"image_file": name, "text": CAPTIONS[i % len(CAPTIONS)]})
    return items


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_assets")
    sd = build_tiny_sd(root / "sd")
    enc = build_tiny_image_encoder(root / "image_encoder")
    items = write_images(root / "images")
    (root / "data.json").write_text(json.dumps(items))
    return {"sd": str(sd), "encoder": str(enc), "json": str(root / "data.json"), "images": str(root / "images"), "root": root}


@pytest.fixture
def train_args(tiny_assets, tmp_path):
    from trainer.train_config import TrainConfig

    def make(**over):
        kw = dict(
            pretrained_model_name_or_path=tiny_assets["sd"], image_encoder_path=tiny_assets["encoder"],
            data_json_file=tiny_assets["json"], data_root_path=tiny_assets["images"], output_dir=str(tmp_path / "out"),
            resolution=TINY_RES, train_batch_size=4, max_train_steps=4, save_steps=1000, report_to="none",
            logging_steps=1, seed=0, dataloader_num_workers=0,
        )
        kw.update(over)
        return TrainConfig(**kw)

    return make


@pytest.fixture(scope="session")
def tiny_models(tiny_assets):
    """Loaded tiny UNet / encoder for unit tests that do not run the loop."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from ip_core.encoders import TransformersCLIPEncoder

    return {
        "unet_path": os.path.join(tiny_assets["sd"], "unet"),
        "load_unet": lambda: UNet2DConditionModel.from_pretrained(os.path.join(tiny_assets["sd"], "unet")),
        "scheduler": DDPMScheduler.from_pretrained(tiny_assets["sd"], subfolder="scheduler"),
        "encoder": TransformersCLIPEncoder.from_pretrained(tiny_assets["encoder"]),
    }



def build_tiny_sdxl(root: Path, seed: int = 0) -> Path:
    """A diffusers SDXL-shaped folder: UNet with addition_embed_type "text_time" (pooled text + 6 time ids), two
    text encoders (CLIPTextModel 32 + CLIPTextModelWithProjection 32 = cross_attention_dim 64, so diffusers'
    Resampler loader, which assumes 64-wide heads, reads the plus export), tokenizer_2."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    build_tiny_sd(root, seed)  # vae/, scheduler/, tokenizer/; unet/ and text_encoder/ are replaced below
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2), cross_attention_dim=64, attention_head_dim=(2, 4), norm_num_groups=4,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 6 * 8,
    )
    unet.save_pretrained(str(root / "unet"))
    _, vocab_size = write_tiny_tokenizer(root / "tokenizer_2")
    kw = dict(intermediate_size=37, num_attention_heads=4, num_hidden_layers=3, vocab_size=vocab_size, max_position_embeddings=77,
              bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    CLIPTextModel(CLIPTextConfig(hidden_size=32, **kw)).save_pretrained(str(root / "text_encoder"))
    CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=32, projection_dim=32, **kw)).save_pretrained(str(root / "text_encoder_2"))
    return root


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory):
    return str(build_tiny_sdxl(tmp_path_factory.mktemp("tiny_sdxl") / "sdxl"))
