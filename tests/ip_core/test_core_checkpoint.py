"""Adapter files: every container users have loads, round trips are exact, and nothing bad ever runs."""
import os
import pickle
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from ip_core import AdapterFileError, load_adapter, load_adapter_state_dict, save_adapter, save_adapter_state_dict
from ip_core.checkpoint import sniff_format


def _same(a, b):
    assert a.keys() == b.keys()
    for part in a:
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert a[part][k].dtype == b[part][k].dtype and torch.equal(a[part][k], b[part][k]), f"{part}.{k}"


@pytest.mark.parametrize("name", ["a.safetensors", "a.bin", "renamed.safetensors.bin", "no_extension"])
def test_save_then_load_is_exact(tmp_path, tiny_adapter, name):
    fmt = "bin" if name in ("a.bin", "no_extension") else "safetensors"
    sd = tiny_adapter.released_state_dict()
    path = save_adapter_state_dict(sd, tmp_path / name, format=fmt)
    _same(load_adapter_state_dict(path), sd)


def test_official_bin_layout_nested_dict(tmp_path, tiny_adapter):
    sd = tiny_adapter.released_state_dict()
    torch.save(sd, tmp_path / "official.bin")
    _same(load_adapter_state_dict(tmp_path / "official.bin"), sd)


def test_flat_safetensors_with_training_wrapper_prefixes(tmp_path, tiny_adapter):
    sd = tiny_adapter.released_state_dict()
    flat = {f"image_proj_model.{k}": v for k, v in sd["image_proj"].items()}
    flat.update({f"adapter_modules.{k}": v for k, v in sd["ip_adapter"].items()})
    save_file(flat, str(tmp_path / "third_party.safetensors"))
    _same(load_adapter_state_dict(tmp_path / "third_party.safetensors"), sd)


def test_flat_pickle_with_released_prefixes(tmp_path, tiny_adapter):
    sd = tiny_adapter.released_state_dict()
    flat = {f"{part}.{k}": v for part in sd for k, v in sd[part].items()}
    torch.save(flat, tmp_path / "flat.pt")
    _same(load_adapter_state_dict(tmp_path / "flat.pt"), sd)


def test_load_adapter_builds_the_module_in_the_requested_dtype(tmp_path, tiny_adapter):
    path = save_adapter(tiny_adapter, tmp_path / "x.safetensors")
    loaded = load_adapter(path, dtype=torch.float64)
    assert loaded.config == tiny_adapter.config
    assert all(p.dtype == torch.float64 for p in loaded.parameters())
    x = torch.randn(2, 24, dtype=torch.float64)
    torch.testing.assert_close(loaded.project(x), tiny_adapter.double().project(x), rtol=0, atol=0)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/ipa_pwned_marker",))


@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, legacy):
    marker = "/tmp/ipa_pwned_marker"
    if os.path.exists(marker):
        os.unlink(marker)
    path = tmp_path / "evil.bin"
    payload = {"image_proj": {"proj.weight": torch.zeros(2, 2)}, "ip_adapter": _RunsCode()}
    if legacy:
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(payload, path)
    with pytest.raises(AdapterFileError, match="evil.bin: refused to load.*nothing in it was executed"):
        load_adapter_state_dict(path)
    assert not os.path.exists(marker)


def test_raw_pickle_stream_is_refused(tmp_path):
    path = tmp_path / "raw.bin"
    path.write_bytes(pickle.dumps(_RunsCode(), protocol=2))
    with pytest.raises(AdapterFileError, match="raw.bin"):
        load_adapter_state_dict(path)
    assert not os.path.exists("/tmp/ipa_pwned_marker")


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_truncated_download_names_the_file_and_the_remedy(tmp_path, tiny_adapter, fmt):
    path = save_adapter(tiny_adapter, tmp_path / f"cut.{fmt}", format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AdapterFileError, match=r"cut\.\w+: .*(truncated|corrupt).*download it again"):
        load_adapter_state_dict(path)


def test_empty_missing_and_foreign_files(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(AdapterFileError, match="empty.safetensors: the file is empty"):
        load_adapter_state_dict(tmp_path / "empty.safetensors")
    with pytest.raises(AdapterFileError, match="no such file"):
        load_adapter_state_dict(tmp_path / "missing.bin")
    (tmp_path / "page.safetensors").write_text("<html>404 Not Found</html>")
    with pytest.raises(AdapterFileError, match="unrecognised file format"):
        load_adapter_state_dict(tmp_path / "page.safetensors")


def test_a_checkpoint_that_is_not_an_adapter_says_so(tmp_path):
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2)}, str(tmp_path / "sd15.safetensors"))
    with pytest.raises(AdapterFileError, match="sd15.safetensors: this file is a model checkpoint.*not an IP-Adapter"):
        load_adapter_state_dict(tmp_path / "sd15.safetensors")
    torch.save([1, 2, 3], tmp_path / "list.bin")
    with pytest.raises(AdapterFileError, match="holds a list"):
        load_adapter_state_dict(tmp_path / "list.bin")


def test_wrong_shapes_name_the_file_and_layout(tmp_path, tiny_adapter):
    sd = tiny_adapter.released_state_dict()
    sd["image_proj"]["norm.bias"] = torch.zeros(5)
    path = save_adapter_state_dict(sd, tmp_path / "bad_shapes.safetensors")
    with pytest.raises(AdapterFileError, match="bad_shapes.safetensors: weights do not fit"):
        load_adapter(path)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, tiny_adapter):
    save_adapter(tiny_adapter, tmp_path / "x.safetensors")
    save_adapter(tiny_adapter, tmp_path / "x.safetensors")  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]
    assert sniff_format(tmp_path / "x.safetensors") == "safetensors"


def test_bin_is_a_plain_zip_of_tensors(tmp_path, tiny_adapter):
    path = save_adapter(tiny_adapter, tmp_path / "x.bin")
    assert zipfile.is_zipfile(path) and sniff_format(path) == "torch-zip"
    assert torch.load(path, weights_only=True).keys() == {"image_proj", "ip_adapter"}
