"""Hostile adapter files: every reader refuses or loads, within a memory budget, and never runs code.

Issue 9's reader examples are the named tests; the property tests generate malformed files of each kind.
"""
import io
import json
import os
import pickle
import struct
import zipfile

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file

from hostile_support import HOSTILE, MARKER, RunsCode, assert_clear, load_in_subprocess, outcome, tiny_sd
from ip_core import load_adapter, load_adapter_state_dict, save_adapter_state_dict
from ip_core.__main__ import inspect_file, main
from ip_core.checkpoint import MAX_PICKLE_OPS
from ip_core.errors import AdapterFileError, IPAdapterError

MB = 1024**2


def _mod(sd, part, key, value=None, drop=False):
    sd = {p: dict(d) for p, d in sd.items()}
    if drop:
        del sd[part][key]
    else:
        sd[part][key] = value
    return sd


def deflate_bomb(path, numel=64 * MB):
    """A torch zip whose one storage (numel float32 zeros, 256 MB) is deflate-compressed to ~250 KB.
    Built by streaming: the test never holds the 256 MB either."""
    src_path = path.with_suffix(".src")
    torch.save({"image_proj": {"proj.weight": torch.empty(numel)}, "ip_adapter": {}}, src_path)  # untouched pages
    with zipfile.ZipFile(src_path) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            out = zipfile.ZipInfo(info.filename)
            out.compress_type = zipfile.ZIP_DEFLATED
            with src.open(info) as fin, dst.open(out, "w", force_zip64=True) as fout:
                while chunk := fin.read(4 * MB):
                    fout.write(chunk if info.filename.endswith(".pkl") else bytes(len(chunk)))  # zeros, whatever empty() held
    src_path.unlink()
    return path


def legacy_huge_storage(path):
    """A legacy torch file whose one storage declares 2**31 - 1 floats (8 GB) but holds 3."""
    buf = io.BytesIO()
    torch.save({"image_proj": {"proj.weight": torch.zeros(3)}}, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    at = data.index(b"K\x03N")  # the element count, BININT1 3, right before NONE, TUPLE, BINPERSID
    path.write_bytes(data[:at] + b"J" + struct.pack("<i", 2**31 - 1) + data[at + 2:])
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    return deflate_bomb(tmp_path_factory.mktemp("bomb") / "bomb.bin")


# ------------------------------------------------------------------ issue 9 examples, one test each


def test_deflate_bomb_is_refused_before_unpacking(bomb):
    assert bomb.stat().st_size < 400_000
    with pytest.raises(AdapterFileError, match=r"declares [\d,]+ bytes uncompressed.*refused before unpacking") as e:
        load_adapter_state_dict(bomb)
    assert_clear(e.value)
    # Its memory (before: +257 MB for a 262 KB file) is measured in test_hostile_files_stay_within_the_memory_budget.


def test_legacy_pickle_declaring_huge_storage_is_refused_before_allocating(tmp_path):
    with pytest.raises(AdapterFileError, match="declares [\\d,]+ bytes of tensor data but holds only"):
        load_adapter_state_dict(legacy_huge_storage(tmp_path / "huge.bin"))


def test_stride_tricks_cannot_claim_more_memory_than_the_file(tmp_path):
    torch.save({"image_proj": {"proj.weight": torch.zeros(1).expand(10**9)}, "ip_adapter": {}}, tmp_path / "view.bin")
    with pytest.raises(AdapterFileError, match="would take [\\d,]+ bytes in memory"):
        load_adapter_state_dict(tmp_path / "view.bin")


def test_a_pickle_with_too_many_operations_is_refused(tmp_path):
    ops = b"\x80\x02" + b"N0" * (MAX_PICKLE_OPS // 2 + 10) + b"N."  # NONE, POP ... : cheap bytes, many operations
    buf = io.BytesIO()
    torch.save({}, buf, _use_new_zipfile_serialization=False)
    legacy = buf.getvalue()
    # magic, protocol and sys_info pickles as torch writes them, then the long one
    head_end = 0
    import pickletools
    f = io.BytesIO(legacy)
    for _ in range(3):
        for op, _, _ in pickletools.genops(f):
            pass
    head_end = f.tell()
    (tmp_path / "ops.bin").write_bytes(legacy[:head_end] + ops)
    with pytest.raises(AdapterFileError, match="more than [\\d,]+ pickle operations"):
        load_adapter_state_dict(tmp_path / "ops.bin")


@pytest.mark.parametrize("legacy", [False, True])
def test_torch_file_renamed_to_safetensors_loads(tmp_path, legacy):
    sd = tiny_sd()
    path = tmp_path / "renamed.safetensors"
    torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
    got = load_adapter_state_dict(path)
    assert all(torch.equal(got[p][k], sd[p][k]) for p in sd for k in sd[p])
    assert load_adapter(path).config.variant == "base"


@pytest.mark.parametrize("name, make, match", [
    ("zero_norm", lambda sd: _mod(sd, "image_proj", "norm.weight", torch.zeros(0)), r"norm.weight has shape \[0\]"),
    ("scalar_weight", lambda sd: _mod(sd, "image_proj", "proj.weight", torch.tensor(1.0)), r"proj.weight has shape \[\]"),
    ("1d_weight", lambda sd: _mod(sd, "image_proj", "proj.weight", torch.zeros(5)), r"proj.weight has shape \[5\]"),
    ("1d_ip_weight", lambda sd: _mod(sd, "ip_adapter", "3.to_k_ip.weight", torch.zeros(5)), r"3.to_k_ip.weight has shape \[5\]"),
    ("plus_missing_layer", lambda sd: {"image_proj": {k: v for k, v in sd["image_proj"].items() if not k.startswith("layers.1.")},
                                       "ip_adapter": sd["ip_adapter"]}, "tensors missing.*layers.1"),
    ("plus_missing_first_layer", lambda sd: {"image_proj": {k: v for k, v in sd["image_proj"].items() if not k.startswith("layers.0.")},
                                             "ip_adapter": sd["ip_adapter"]}, "layers.0.0.to_q.weight is missing"),
    ("list_image_proj", lambda sd: {"image_proj": list(sd["image_proj"].values()), "ip_adapter": sd["ip_adapter"]}, "image_proj is a list"),
    ("int_keys_top", lambda sd: {0: torch.zeros(2)}, "key 0 of type int"),
    ("int_keys_nested", lambda sd: {"image_proj": {0: torch.zeros(2)}, "ip_adapter": sd["ip_adapter"]}, "image_proj has a key 0 of type int"),
])
def test_malformed_layouts_give_clear_errors(tmp_path, name, make, match):
    sd = make(tiny_sd("plus" if name.startswith("plus") else "base"))
    path = tmp_path / f"{name}.bin"
    torch.save(sd, path)
    with pytest.raises(IPAdapterError, match=match) as e:
        load_adapter(path)
    assert_clear(e.value)
    info = inspect_file(path)  # inspect reports it the same way
    assert info["ok"] is False and name in info["error"]


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool, torch.complex64, torch.float8_e4m3fn])
def test_non_float_weights_are_refused_naming_the_tensor(tmp_path, dtype):
    sd = tiny_sd()
    sd["image_proj"]["proj.weight"] = sd["image_proj"]["proj.weight"].to(dtype)
    path = save_adapter_state_dict(sd, tmp_path / "q.safetensors")
    with pytest.raises(AdapterFileError, match=rf"image_proj.proj.weight holds {str(dtype)[6:]} values; weights must be float16"):
        load_adapter(path)
    assert inspect_file(path)["ok"] is False  # no longer reported loadable


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, value):
    sd = tiny_sd()
    sd["ip_adapter"]["3.to_k_ip.weight"][0, 0] = value
    path = save_adapter_state_dict(sd, tmp_path / "nan.bin", format="bin")
    with pytest.raises(AdapterFileError, match="ip_adapter.3.to_k_ip.weight contains NaN or infinite values"):
        load_adapter(path)


def test_inspect_reports_every_file_and_continues(tmp_path, capsys, monkeypatch):
    good = save_adapter_state_dict(tiny_sd(), tmp_path / "good.safetensors")
    bad = tmp_path / "zero_norm.bin"
    torch.save(_mod(tiny_sd(), "image_proj", "norm.weight", torch.zeros(0)), bad)
    good2 = save_adapter_state_dict(tiny_sd("plus"), tmp_path / "good2.bin", format="bin")
    assert main(["inspect", "--json", str(good), str(bad), str(tmp_path / "missing.bin"), str(good2)]) == 1
    infos = json.loads(capsys.readouterr().out)
    assert [i["ok"] for i in infos] == [True, False, False, True]
    assert infos[0]["variant"] == "base" and infos[3]["variant"] == "plus"

    # An unexpected bug on one file: reported with the log's path, the others still inspected.
    import ip_core.__main__ as cli
    real = cli.detect_config
    monkeypatch.setenv("IPADAPTER_LOG_DIR", str(tmp_path))
    monkeypatch.setattr(cli, "detect_config", lambda sd: 1 / 0 if "norm.weight" in sd["image_proj"] else real(sd))
    assert main(["inspect", "--json", str(good), str(good2)]) == 1
    infos = json.loads(capsys.readouterr().out)
    assert infos[0]["ok"] is False and "unexpected internal error (ZeroDivisionError" in infos[0]["error"]
    assert str(tmp_path / "ipadapter-errors.log") in infos[0]["error"] and infos[1]["ok"] is True
    assert "ZeroDivisionError" in (tmp_path / "ipadapter-errors.log").read_text()


def test_cli_boundary_expected_and_unexpected(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    assert main(["example", str(tmp_path / "file" / "sub")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write the example files") and "writable folder" in err
    import ip_core.__main__ as cli
    monkeypatch.setenv("IPADAPTER_LOG_DIR", str(tmp_path))
    monkeypatch.setattr(cli, "write_examples", lambda d: [][1])
    assert main(["example", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert "unexpected internal error (IndexError" in err and "Traceback" not in err
    assert "IndexError" in (tmp_path / "ipadapter-errors.log").read_text()


# ------------------------------------------------------------------ generated files


def _no_code_ran():
    assert not MARKER.exists(), "a pickle ran code"


def _load_outcome(path):
    r = outcome(load_adapter, path)
    info = inspect_file(path)
    # inspect stops after detection, so it may pass a file whose weights then fail to load, never the reverse
    assert info["ok"] or isinstance(r, IPAdapterError), f"inspect refused a file that loads: {info.get('error')}"
    assert "unexpected internal error" not in info.get("error", ""), info["error"]
    _no_code_ran()
    return r


_header_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=12)
    | st.sampled_from(["F32", "F16", "BF16", "I8", "BOOL", "C64", "F8_E4M3", "U8", "F64", "weird"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@HOSTILE
@given(
    entries=st.dictionaries(
        st.sampled_from(["image_proj.proj.weight", "image_proj.norm.weight", "image_proj.norm.bias", "image_proj.proj.bias",
                         "ip_adapter.1.to_k_ip.weight", "ip_adapter.1.to_v_ip.weight", "__metadata__", "x", ""]),
        st.fixed_dictionaries({"dtype": _header_values, "shape": _header_values, "data_offsets": _header_values}) | _header_values,
        max_size=6),
    declared=st.none() | st.integers(0, 2**64 - 1),
    payload=st.binary(max_size=256),
)
def test_generated_safetensors_headers(tmp_path_factory, entries, declared, payload):
    header = json.dumps(entries).encode()
    n = len(header) if declared is None else declared
    path = tmp_path_factory.mktemp("st") / "gen.safetensors"
    path.write_bytes(struct.pack("<Q", n) + header + payload)
    _load_outcome(path)


@HOSTILE
@given(
    fmt=st.sampled_from(["safetensors", "zip", "legacy"]),
    variant=st.sampled_from(["base", "plus"]),
    edits=st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "zero"]), st.floats(0, 1), st.integers(0, 255)),
                   min_size=1, max_size=4),
)
def test_corrupted_real_files(tmp_path_factory, fmt, variant, edits):
    path = tmp_path_factory.mktemp("cut") / "adapter.bin"
    sd = tiny_sd(variant)
    if fmt == "safetensors":
        save_adapter_state_dict(sd, path, format="safetensors")
    else:
        torch.save(sd, path, _use_new_zipfile_serialization=fmt == "zip")
    data = bytearray(path.read_bytes())
    for kind, where, byte in edits:
        at = int(where * (len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << (byte % 8)
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = bytes([byte]) * 8
        else:
            data[at:at + 64] = bytes(len(data[at:at + 64]))
        if not data:
            data = bytearray(b"\x00")
    path.write_bytes(bytes(data))
    _load_outcome(path)


_plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.builds(lambda shape, dt: torch.zeros(shape, dtype=dt),
                st.lists(st.integers(0, 3), max_size=3), st.sampled_from([torch.float32, torch.float16, torch.int64, torch.bool])),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=4),
    max_leaves=10)


@HOSTILE
@given(
    obj=_plain | st.builds(lambda a, b: {"image_proj": a, "ip_adapter": b}, _plain, _plain),
    evil=st.booleans(),
    legacy=st.booleans(),
)
def test_generated_pickles_never_run_code(tmp_path_factory, obj, evil, legacy):
    path = tmp_path_factory.mktemp("pk") / "gen.pt"
    if evil:
        obj = {"image_proj": obj, "ip_adapter": RunsCode()}
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    r = _load_outcome(path)
    if evil:
        assert isinstance(r, AdapterFileError) and "nothing in it was executed" in str(r)


@HOSTILE
@given(
    raw=st.binary(max_size=64),
    protocol=st.integers(0, 5),
)
def test_raw_pickle_streams(tmp_path_factory, raw, protocol):
    path = tmp_path_factory.mktemp("raw") / "raw.bin"
    path.write_bytes(pickle.dumps(RunsCode(), protocol=protocol) if not raw else b"\x80" + raw)
    r = _load_outcome(path)
    assert isinstance(r, IPAdapterError)


@pytest.mark.filterwarnings("ignore:Duplicate name")
@HOSTILE
@given(
    names=st.lists(st.sampled_from(["archive/data.pkl", "archive/data/0", "archive/version", "data.pkl", "../x", "a/b/c"]),
                   min_size=1, max_size=4),
    sizes=st.lists(st.integers(0, 5000), min_size=4, max_size=4),
    compress=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
    pickled=st.booleans(),
)
def test_generated_zips(tmp_path_factory, names, sizes, compress, pickled):
    path = tmp_path_factory.mktemp("zip") / "gen.bin"
    with zipfile.ZipFile(path, "w", compress) as z:
        for name, size in zip(names, sizes):
            if name.endswith("data.pkl") and pickled:
                z.writestr(name, pickle.dumps({"image_proj": RunsCode()}, protocol=2))
            else:
                z.writestr(name, bytes(size))
    r = _load_outcome(path)
    assert isinstance(r, IPAdapterError)


_KEYS = {
    "image_proj": ["proj.weight", "proj.bias", "norm.weight", "norm.bias", "latents", "proj_in.weight", "proj_in.bias",
                   "proj_out.weight", "layers.0.0.to_q.weight", "layers.0.1.1.weight", "proj.0.weight", "proj.2.weight",
                   "proj.3.weight", "junk"],
    "ip_adapter": ["1.to_k_ip.weight", "1.to_v_ip.weight", "3.to_k_ip.weight", "x.to_k_ip.weight", "1.lora.weight"],
}


@HOSTILE
@given(
    base=st.sampled_from(["base", "plus", "empty"]),
    changes=st.lists(st.tuples(
        st.sampled_from(["image_proj", "ip_adapter"]),
        st.integers(0, 13),
        st.lists(st.integers(0, 40), max_size=4),
        st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.bool,
                         torch.complex64, torch.float8_e5m2, torch.uint8]),
        st.sampled_from([0.0, float("nan"), float("inf"), 1e30]),
    ), max_size=4),
    fmt=st.sampled_from(["safetensors", "bin"]),
)
def test_generated_layouts_and_dtypes(tmp_path_factory, base, changes, fmt):
    sd = tiny_sd(base) if base != "empty" else {"image_proj": {}, "ip_adapter": {}}
    for part, i, shape, dtype, value in changes:
        key = _KEYS[part][i % len(_KEYS[part])]
        t = torch.full(shape, value) if dtype.is_floating_point or dtype.is_complex else torch.zeros(shape)
        sd[part][key] = t.to(dtype)
    path = tmp_path_factory.mktemp("lay") / f"gen.{fmt}"
    try:
        save_adapter_state_dict(sd, path, format=fmt)
    except Exception:  # a state dict safetensors cannot even write (e.g. empty): nothing to load
        return
    r = _load_outcome(path)
    if not isinstance(r, IPAdapterError):  # what loads, runs
        tokens = r.project(torch.zeros(1, r.config.encoder_width) if r.config.variant == "base"
                           else torch.zeros(1, 3, r.config.encoder_width))
        assert torch.isfinite(tokens).all()


def test_hostile_files_stay_within_the_memory_budget(tmp_path, bomb):
    """Peak memory of reading a set of hostile files in a fresh process: a few times the largest file, plus a constant."""
    files = [bomb, legacy_huge_storage(tmp_path / "huge.bin")]
    torch.save({"image_proj": {"proj.weight": torch.zeros(1).expand(4 * 10**8)}, "ip_adapter": {}}, tmp_path / "view.bin")
    files.append(tmp_path / "view.bin")
    header = json.dumps({"image_proj.proj.weight": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4 * 10**12]}}).encode()
    (tmp_path / "claims.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(64))
    files.append(tmp_path / "claims.safetensors")
    (tmp_path / "hdr.safetensors").write_bytes(struct.pack("<Q", 99_000_000) + b"{" + bytes(100))
    files.append(tmp_path / "hdr.safetensors")
    files.append(save_adapter_state_dict(tiny_sd("plus"), tmp_path / "good.safetensors"))
    report = load_in_subprocess(files)
    assert [r["ok"] for r in report["results"]] == [False, False, False, False, False, True], report
    largest = max(os.path.getsize(f) for f in files)
    assert report["extra_bytes"] < 4 * largest + 48 * MB, report
    _no_code_ran()


def test_clip_vision_reader_has_the_same_rules(tmp_path):
    from ip_core.encoders import load_openclip_visual_state_dict

    save_file({"visual.conv1.weight": torch.full((2, 3, 14, 14), float("nan"))}, str(tmp_path / "v.safetensors"))
    with pytest.raises(AdapterFileError, match="conv1.weight contains NaN or infinite values"):
        load_openclip_visual_state_dict(tmp_path / "v.safetensors")
    torch.save({1: torch.zeros(1)}, tmp_path / "k.safetensors")  # a torch file under a safetensors name, int keys
    with pytest.raises(AdapterFileError, match="weight names must be strings"):
        load_openclip_visual_state_dict(tmp_path / "k.safetensors")
    with pytest.raises(AdapterFileError, match="refused before unpacking"):
        load_openclip_visual_state_dict(deflate_bomb(tmp_path / "bomb.bin", numel=4 * MB))


def _dit_sd(family):
    """Small state dicts of the DiT layouts (SD3.5 InstantX, Flux XLabs / InstantX), released key names."""
    from ip_core.families.flux import FluxIPAdapter, make_flux_config
    from ip_core.families.sd3 import SD3IPAdapter, make_sd3_config

    torch.manual_seed(0)
    if family == "sd3":
        return SD3IPAdapter(make_sd3_config(2, 128, 24, 4, resampler_dim=64, depth=1, heads=1, timestep_in_dim=8)).released_state_dict()
    variant, single = ("flux-xlabs", 0) if family == "flux-xlabs" else ("flux-instantx", 2)
    return FluxIPAdapter(make_flux_config(variant, 1, single, 128, 16, 24, 2)).released_state_dict()


@HOSTILE
@given(
    family=st.sampled_from(["sd3", "flux-xlabs", "flux-instantx"]),
    changes=st.lists(st.tuples(
        st.sampled_from(["image_proj", "ip_adapter"]),
        st.integers(0, 10_000),
        st.sampled_from(["drop", "reshape", "dtype", "nan", "rename"]),
        st.lists(st.integers(0, 40), max_size=3),
    ), max_size=3),
    fmt=st.sampled_from(["safetensors", "bin"]),
)
def test_generated_dit_layouts(tmp_path_factory, family, changes, fmt):
    """SD3.5 / Flux files with keys dropped, renamed, reshaped or of other dtypes: each loads and runs, or stops with
    one of the project's errors saying what to do."""
    sd = _dit_sd(family)
    for part, i, kind, shape in changes:
        if not sd[part]:
            continue
        key = sorted(sd[part])[i % len(sd[part])]
        if kind == "drop":
            del sd[part][key]
        elif kind == "rename":
            sd[part]["9" + key] = sd[part].pop(key)
        elif kind == "reshape":
            sd[part][key] = torch.zeros(shape)
        elif kind == "dtype":
            sd[part][key] = sd[part][key].to(torch.int8)
        else:
            sd[part][key] = torch.full_like(sd[part][key], float("nan"))
    path = tmp_path_factory.mktemp("dit") / f"gen.{fmt}"
    try:
        save_adapter_state_dict(sd, path, format=fmt)
    except Exception:  # a state dict safetensors cannot even write: nothing to load
        return
    r = _load_outcome(path)
    if isinstance(r, IPAdapterError):
        return
    c = r.config
    with torch.no_grad():
        if c.base_model == "sd3":
            tokens, t_emb = r.step_tokens(torch.zeros(1, 5, c.encoder_width), torch.tensor([500.0]))
            k, v = r.layer_kv(0, tokens, t_emb)
        else:
            tokens = r.project(torch.zeros(1, c.encoder_width))
            k, v = r.layer_kv(0, tokens)
    assert torch.isfinite(k).all() and torch.isfinite(v).all()
