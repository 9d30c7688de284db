"""Load IPAdapter: folder registration, file listing, detection shown to the user, clear errors."""
import os
import shutil

import pytest
import torch

from ip_core.errors import AdapterFileError, UnsupportedAdapterError
from nodes import host as host_mod
from nodes.common import LoadedAdapter
from nodes.nodes_load import IPAInspectAdapter, IPALoadAdapter


def _put(host, src, name):
    dst = os.path.join(host.models_dir, "ipadapter", name)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy(src, dst)
    return dst


def test_registers_models_ipadapter_with_adapter_extensions(host):
    host_mod.register_model_folder()
    paths, exts = host.folder_paths.folder_names_and_paths["ipadapter"]
    assert paths == [os.path.join(host.models_dir, "ipadapter")]
    assert exts == {".safetensors", ".bin", ".pt", ".pth"}


def test_creates_models_ipadapter_on_disk_at_registration(host):
    folder = os.path.join(host.models_dir, "ipadapter")
    os.rmdir(folder)  # a manual clone into a fresh ComfyUI: no install script made it
    host_mod.register_model_folder()  # what the pack does when ComfyUI loads it (nodes/registry.py)
    assert os.path.isdir(folder)


def test_a_folder_that_cannot_be_created_is_named_with_the_remedy(host, caplog):
    blocker = os.path.join(host.models_dir, "ipadapter")
    os.rmdir(blocker)
    with open(blocker, "w") as f:  # a file where the folder should be: makedirs fails, as on a read-only disk
        f.write("x")
    host_mod.register_model_folder()
    assert os.path.isfile(blocker)
    assert f"could not create {blocker}" in caplog.text and "extra_model_paths.yaml" in caplog.text


def test_keeps_extra_model_paths_entries_and_other_packs_extensions(host, tmp_path):
    # extra_model_paths.yaml is read before custom nodes: add_model_folder_path makes an entry with no extensions
    host.folder_paths.add_model_folder_path("ipadapter", str(tmp_path / "shared"))
    host_mod.register_model_folder()
    paths, exts = host.folder_paths.folder_names_and_paths["ipadapter"]
    assert paths[0] == str(tmp_path / "shared") and os.path.join(host.models_dir, "ipadapter") in paths
    assert ".safetensors" in exts
    # another pack registered it with the host's full list: we must not narrow it
    host.folder_paths.folder_names_and_paths["ipadapter"] = ([str(tmp_path / "x")], set(host.folder_paths.supported_pt_extensions))
    host_mod.register_model_folder()
    assert ".ckpt" in host.folder_paths.folder_names_and_paths["ipadapter"][1]


def test_lists_adapter_files_from_every_folder_any_name(host, adapter_files, tmp_path):
    _put(host, adapter_files["base"], "sub/whatever.safetensors")
    (tmp_path / "shared").mkdir()
    shutil.copy(adapter_files["plus"], tmp_path / "shared" / "other.bin")
    (tmp_path / "shared" / "notes.txt").write_text("not a model")
    host.folder_paths.add_model_folder_path("ipadapter", str(tmp_path / "shared"))
    files = IPALoadAdapter.INPUT_TYPES()["required"]["adapter_name"][0]
    assert files == ["other.bin", os.path.join("sub", "whatever.safetensors")]


def test_load_detects_variant_and_shows_it(host, adapter_files):
    _put(host, adapter_files["base"], "renamed-to-plus-but-is-base.safetensors")
    out = IPALoadAdapter().load("renamed-to-plus-but-is-base.safetensors")
    loaded = out["result"][0]
    assert isinstance(loaded, LoadedAdapter)
    assert loaded.config.variant == "base" and loaded.config.num_layers == 16
    assert "SD1.5 base" in out["ui"]["text"][0] and "ViT-H/14" in out["ui"]["text"][0]
    # for the web extension: hide Apply's FaceID / Kolors inputs on the nodes this output feeds
    assert out["ui"]["family"] == ["sd"]
    assert out["ui"]["unused_inputs"] == ["faceid_lora_strength", "weight_faceidv2", "weight_kolors"]
    assert "SD1.5 base" in repr(loaded)
    info = IPAInspectAdapter().inspect(loaded)["result"][0]
    assert "22,319,616 parameters" in info  # the paper's count for SD1.5 base


def test_load_bin_plus(host, adapter_files):
    _put(host, adapter_files["plus"], "plus.bin")
    loaded = IPALoadAdapter().load("plus.bin")["result"][0]
    assert loaded.config.variant == "plus" and loaded.config.num_tokens == 16
    assert loaded.adapter.image_proj.latents.dtype == torch.float32


def test_missing_file_names_the_folders(host):
    with pytest.raises(AdapterFileError, match="not found in the ipadapter folders.*extra_model_paths"):
        IPALoadAdapter().load("gone.safetensors")


def test_bad_files_give_clear_errors(host):
    p = os.path.join(host.models_dir, "ipadapter", "broken.safetensors")
    with open(p, "wb") as f:
        f.write(b"\x00" * 10)
    with pytest.raises(AdapterFileError, match="broken.safetensors"):
        IPALoadAdapter().load("broken.safetensors")
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + os.path.join(host.models_dir, "pwned"),))

    p = os.path.join(host.models_dir, "ipadapter", "evil.bin")
    with open(p, "wb") as f:
        pickle.dump({"image_proj": Evil()}, f)
    with pytest.raises((AdapterFileError, UnsupportedAdapterError)):
        IPALoadAdapter().load("evil.bin")
    assert not os.path.exists(os.path.join(host.models_dir, "pwned"))
