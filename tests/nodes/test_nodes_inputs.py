"""The nodes' own input checks: whole numbers within a bound (a linked value skips the host's widget check), the
host's refusals of a typed name passed on as the user's error, file names kept inside their folder."""
import math
import os

import numpy as np
import pytest
import torch

from ip_core.errors import IPAdapterError
from nodes import host as host_mod
from nodes.common import check_int, error_boundary


@pytest.mark.parametrize("value, expected", [(0, 0), (16, 16), (3.0, 3), (np.int64(5), 5), (torch.tensor(7), 7)])
def test_check_int_takes_whole_numbers_in_range(value, expected):
    got = check_int(value, "enhance_tiles", 0, 16)
    assert got == expected and type(got) is int


@pytest.mark.parametrize("value", [17, -1, 10 ** 9, 2.5, math.nan, math.inf, -math.inf, "3", None, True,
                                   torch.tensor([1, 2]), torch.tensor(1.5)])
def test_check_int_refuses_the_rest_naming_the_range(value):
    with pytest.raises(IPAdapterError, match="enhance_tiles .*0.*16"):
        check_int(value, "enhance_tiles", 0, 16)


class _Node:
    @error_boundary
    def run(self, exc):
        with host_mod.refusals("filename_prefix 'x'", "Give another prefix."):
            raise exc


@pytest.mark.parametrize("exc, words", [
    (Exception("**** ERROR: Saving image outside the output folder is not allowed."), "ERROR: Saving image outside"),
    (FileNotFoundError(2, "No such file or directory"), "No such file or directory"),
    (PermissionError(13, "Permission denied"), "Permission denied"),
    (ValueError("embedded null byte"), "embedded null byte"),
])
def test_the_hosts_refusals_are_input_errors_in_its_words(exc, words):
    with pytest.raises(host_mod.InputRefusedError) as e:
        _Node().run(exc)
    text = str(e.value)
    assert text.startswith("filename_prefix 'x' was refused: ") and words in text and text.endswith("Give another prefix.")
    assert "This is a bug" not in str(e.value) and "*" not in str(e.value)


@pytest.mark.parametrize("exc", [TypeError("unsupported operand"), KeyError("x"), RuntimeError("boom")])
def test_other_failures_stay_bugs(exc, tmp_path, monkeypatch):
    monkeypatch.setenv("IPADAPTER_LOG_DIR", str(tmp_path))
    with pytest.raises(IPAdapterError, match=f"unexpected internal error \\({type(exc).__name__}"):
        _Node().run(exc)


def test_annotated_names_stay_inside_their_folder(host, tmp_path, monkeypatch):
    folders = {"input": str(tmp_path / "in"), "output": str(tmp_path / "out")}
    fp = host.folder_paths
    fp.get_input_directory = lambda: folders["input"]

    def annotated_filepath(name):
        return (name[:-9], folders["output"]) if name.endswith(" [output]") else (name, None)

    fp.annotated_filepath = annotated_filepath
    fp.get_annotated_filepath = lambda name: os.path.join(annotated_filepath(name)[1] or folders["input"], annotated_filepath(name)[0])
    assert host_mod.annotated_input_path("a/b.safetensors") == os.path.join(folders["input"], "a/b.safetensors")
    assert host_mod.annotated_input_path("b.safetensors [output]") == os.path.join(folders["output"], "b.safetensors")
    for name in ("../in2/x.safetensors", "/etc/passwd", "a/../../x", "../x [output]"):
        with pytest.raises(host_mod.InputRefusedError, match="points outside its folder"):
            host_mod.annotated_input_path(name)
