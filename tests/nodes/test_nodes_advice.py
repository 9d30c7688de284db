"""The nodes add ComfyUI advice (which node, which folder) to ip_core's host-neutral errors."""
import os

import pytest
import torch
from safetensors.torch import save_file

from comfy_standin import make_model
from conftest import random_adapter
from ip_core.checkpoint import FOREIGN_KINDS, load_adapter_state_dict
from ip_core.embeds import build_image_prompt, check_embeds_fit
from ip_core.errors import AdapterMismatchError, ForeignFileError, IPAdapterError
from nodes.common import LoadedAdapter, check_images, with_advice
from nodes.nodes_apply import IPAApplyAdapter
from nodes.nodes_load import FOLDER_FOR_KIND, IPALoadAdapter

FILES = {
    "clip_vision": ("CLIP-ViT-H-14.safetensors", ["vision_model.embeddings.patch_embedding.weight", "visual_projection.weight"],
                    "this file is a CLIP vision model (an image encoder), not an IP-Adapter", "models/clip_vision", "Load CLIP Vision"),
    "checkpoint": ("v1-5-pruned.safetensors", ["model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.encoder.conv_in.weight"],
                   "this file is a model checkpoint", "models/checkpoints", "Load Checkpoint"),
    "lora": ("style.safetensors", ["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"],
             "this file is a LoRA, not an IP-Adapter", "models/loras", "Load LoRA"),
}


def test_every_foreign_kind_has_a_folder():
    assert set(FOLDER_FOR_KIND) == set(FOREIGN_KINDS)


@pytest.mark.parametrize("kind", sorted(FILES))
def test_file_in_the_wrong_folder_says_what_it_is_and_where_it_goes(host, kind):
    name, keys, what, folder, loader = FILES[kind]
    path = os.path.join(host.models_dir, "ipadapter", name)
    save_file({k: torch.zeros(2) for k in keys}, path)
    with pytest.raises(ForeignFileError) as info:
        IPALoadAdapter().load(name)
    message = str(info.value)
    assert message.startswith(f"{name}: {what}") and f"Move it to {folder}" in message and loader in message
    assert info.value.kind == kind
    # ip_core alone (what the trainer and the CLI show) names the kind but gives no ComfyUI advice
    with pytest.raises(ForeignFileError) as core:
        load_adapter_state_dict(path)
    assert what in str(core.value) and "models/" not in str(core.value) and loader not in str(core.value)


def test_embeds_of_another_adapter_name_the_nodes_to_connect(host):
    base = LoadedAdapter(random_adapter("base", seed=1), "base.safetensors")
    other = random_adapter("base", seed=7)
    cond = torch.randn(1, 1024, generator=torch.Generator().manual_seed(0))
    embeds = build_image_prompt(other, cond, torch.zeros_like(cond))
    with pytest.raises(AdapterMismatchError, match="Connect the same Load IPAdapter output to Encode Image Prompt and to Apply IPAdapter"):
        IPAApplyAdapter().apply(make_model("sd15"), base, embeds, 1.0, 0.0, 1.0)
    with pytest.raises(AdapterMismatchError) as core:
        check_embeds_fit(base.adapter, embeds)
    assert "Load IPAdapter" not in str(core.value) and "same adapter you apply" in str(core.value)


def test_rgba_image_names_the_mask_output():
    with pytest.raises(IPAdapterError, match="4 channels.*Load Image outputs RGB and the alpha as a separate MASK"):
        check_images(torch.zeros(1, 8, 8, 4), "image")


def test_with_advice_keeps_class_and_attributes():
    e = ForeignFileError("x.bin: this file is a LoRA, not an IP-Adapter.", "lora")
    advised = with_advice(e, "Move it.")
    assert type(advised) is ForeignFileError and advised.kind == "lora" and str(advised) == f"{e} Move it."
