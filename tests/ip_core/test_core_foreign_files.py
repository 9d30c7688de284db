"""Other model files where an adapter was expected are named for what they are (host-neutral words)."""
import pytest
import torch
from safetensors.torch import save_file

from ip_core import AdapterFileError, load_adapter_state_dict
from ip_core.checkpoint import FOREIGN_KINDS, foreign_kind
from ip_core.errors import ForeignFileError

# A few real key names of each kind (SD1.5 / SDXL files, kohya and diffusers LoRAs, OpenCLIP and transformers CLIP).
KEYS = {
    "checkpoint": ["model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.decoder.conv_in.weight",
                   "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"],
    "lora": ["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha"],
    "controlnet": ["control_model.input_hint_block.0.weight", "control_model.zero_convs.0.0.bias"],
    "clip_vision": ["vision_model.embeddings.patch_embedding.weight", "visual_projection.weight"],
    "vae": ["encoder.conv_in.weight", "decoder.up.0.block.0.conv1.weight"],
    "diffusion_model": ["input_blocks.0.0.weight", "middle_block.1.proj_in.weight", "out.2.weight"],
    "text_encoder": ["text_model.embeddings.position_embedding.weight", "text_model.final_layer_norm.weight"],
}


def test_every_kind_has_examples():
    assert set(KEYS) == set(FOREIGN_KINDS)


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_foreign_file_is_named_for_what_it_is(tmp_path, kind):
    path = tmp_path / f"renamed_{kind}.safetensors"
    save_file({k: torch.zeros(2) for k in KEYS[kind]}, str(path))
    with pytest.raises(ForeignFileError) as info:
        load_adapter_state_dict(path)
    assert info.value.kind == kind
    message = str(info.value)
    assert message.startswith(f"renamed_{kind}.safetensors: this file is {FOREIGN_KINDS[kind][0]}, not an IP-Adapter")
    assert "models/" not in message and "node" not in message  # the host adds its own advice


def test_more_layouts_of_the_same_kinds():
    assert foreign_kind(["unet.down_blocks.0.attentions.0.proj_in.lora_A.weight"]) == "lora"  # diffusers / peft LoRA
    assert foreign_kind(["visual.conv1.weight", "transformer.resblocks.0.ln_1.weight"]) == "clip_vision"  # full OpenCLIP
    assert foreign_kind(["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"]) == "checkpoint"  # SDXL
    assert foreign_kind(["down_blocks.0.resnets.0.conv1.weight", "conv_in.weight"]) == "diffusion_model"  # diffusers UNet
    assert foreign_kind(["something.else"]) is None


def test_pickled_training_checkpoint_is_looked_into(tmp_path):
    torch.save({"state_dict": {k: torch.zeros(1) for k in KEYS["checkpoint"]}, "epoch": 3}, tmp_path / "model.ckpt")
    with pytest.raises(ForeignFileError, match="model checkpoint") as info:
        load_adapter_state_dict(tmp_path / "model.ckpt")
    assert info.value.kind == "checkpoint"


def test_unknown_keys_and_half_adapters_are_not_guessed(tmp_path):
    save_file({"weird.weight": torch.zeros(1)}, str(tmp_path / "weird.safetensors"))
    with pytest.raises(AdapterFileError, match="not an IP-Adapter file: 1 of 1 keys") as info:
        load_adapter_state_dict(tmp_path / "weird.safetensors")
    assert not isinstance(info.value, ForeignFileError)
    # an adapter with an extra stray LoRA-like key is a broken adapter, not a LoRA
    save_file({"image_proj.proj.weight": torch.zeros(1), "lora_unet_x.lora_down.weight": torch.zeros(1)}, str(tmp_path / "mixed.safetensors"))
    with pytest.raises(AdapterFileError) as info:
        load_adapter_state_dict(tmp_path / "mixed.safetensors")
    assert not isinstance(info.value, ForeignFileError)
