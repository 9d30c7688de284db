"""Hostile input on the toolkit nodes: generated embeds files (widths, counts, dtypes, NaN) meet the adapter as a clear
error or as embeds a model runs with; the host's refusals of a save prefix or file name are input errors; every
INT / FLOAT input is bounded by the node itself (a linked value skips the host's check); BOM-marked text reads."""
import json
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from hostile_support import HOSTILE, ROOT, assert_clear, outcome
from ip_core.adapter import IPAdapter
from ip_core.config import make_config
from ip_core.embeds import build_image_prompt
from ip_core.embeds_file import FORMAT, FORMAT_VERSION
from ip_core.errors import IPAdapterError
from ip_core.frames import MAX_SCHEDULE_FRAMES
from ip_core.layers import layer_specs

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "nodes"))
import comfy_standin  # noqa: E402
from nodes import host as host_mod  # noqa: E402
from nodes import dropin, pack_interface, registry  # noqa: E402
from nodes.common import LoadedAdapter  # noqa: E402
from nodes.nodes_apply import IPAApplyAdapter  # noqa: E402
from nodes.nodes_toolkit import IPALoadEmbeds, IPASaveEmbeds  # noqa: E402


@pytest.fixture(scope="module")
def sd15_base():
    torch.manual_seed(0)
    return LoadedAdapter(IPAdapter.from_config(make_config("base", layer_specs("sd15"), 768, 1024)).eval(), "base.safetensors")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfy")
    for d in ("input", "output", "temp", "models/ipadapter"):
        (root / d).mkdir(parents=True)
    return root


@pytest.fixture
def host(monkeypatch, dirs):
    """The stand-in host with input / output folders and folder_paths' annotated paths and save path: its refusal of
    a prefix outside the output folder is a plain Exception, as folder_paths.get_save_image_path raises it."""
    h = comfy_standin.install(monkeypatch, str(dirs / "models"))
    fp = h.folder_paths
    folders = {"input": str(dirs / "input"), "output": str(dirs / "output"), "temp": str(dirs / "temp")}
    fp.get_input_directory, fp.get_output_directory = lambda: folders["input"], lambda: folders["output"]

    def annotated_filepath(name):
        for kind, folder in folders.items():
            if name.endswith(f" [{kind}]"):
                return name[:-len(kind) - 3], folder
        return name, None

    def get_annotated_filepath(name, default_dir=None):
        name, base = annotated_filepath(name)
        return os.path.join(base or default_dir or folders["input"], name)

    def get_save_image_path(prefix, output_dir):
        sub, name = os.path.dirname(os.path.normpath(prefix)), os.path.basename(os.path.normpath(prefix))
        full = os.path.join(output_dir, sub)
        if os.path.commonpath((output_dir, os.path.abspath(full))) != output_dir:
            raise Exception("**** ERROR: Saving image outside the output folder is not allowed.\n full_output_folder: " + full)
        os.makedirs(full, exist_ok=True)
        return full, name, 1, sub, prefix

    fp.annotated_filepath, fp.get_annotated_filepath, fp.get_save_image_path = annotated_filepath, get_annotated_filepath, get_save_image_path
    h.dirs = dirs
    return h


def _embeds(adapter):
    return build_image_prompt(adapter.adapter, torch.randn(2, 1024, generator=torch.Generator().manual_seed(1)),
                              torch.zeros(2, 1024))


# ------------------------------------------------------------------ generated embeds files

_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.uint8, torch.int32, torch.bool]


def _write_embeds_file(path, adapter, tensors: dict):
    from safetensors.torch import save_file

    c = adapter.config
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "note": "", "signature": c.signature,
            "description": c.description, "encoder_name": "ViT-H/14", "adapter_fingerprint": ""}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)


@HOSTILE
@given(
    refs=st.integers(1, 3), tokens=st.sampled_from([4, 8, 3, 5, 1]), width=st.sampled_from([768, 769, 767, 1024]),
    token_dtype=st.sampled_from(_DTYPES), feature_width=st.sampled_from([None, 1024, 1027, 1280]),
    feature_rows=st.sampled_from([0, 1, -1]), feature_dtype=st.sampled_from(_DTYPES),
    poison=st.sampled_from([None, "cond", "uncond", "cond_features", "uncond_features"]),
    bad=st.sampled_from([float("nan"), float("inf"), -float("inf")]),
)
def test_generated_embeds_files_fit_the_adapter_or_are_refused(host, sd15_base, refs, tokens, width, token_dtype,
                                                               feature_width, feature_rows, feature_dtype, poison, bad):
    """The spec: a file loads (with the adapter given or at Apply) exactly when its tensors are what this adapter
    makes (float, finite, tokens 768 wide in fours, features 1024 wide, one row per four tokens); then a model runs
    with it. Anything else is one clear error before any matmul, never "mat1 and mat2 shapes cannot be multiplied"."""
    gen = torch.Generator().manual_seed(refs * 31 + tokens)
    t = {"cond": torch.randn(refs, tokens, width, generator=gen), "uncond": torch.randn(refs, tokens, width, generator=gen)}
    rows = refs * tokens // 4 + feature_rows
    if feature_width is not None:
        t["cond_features"] = torch.randn(max(rows, 1), feature_width, generator=gen)
        t["uncond_features"] = torch.zeros(max(rows, 1), feature_width)
    if poison in t:
        t[poison] = t[poison].clone()
        t[poison].view(-1)[0] = bad
    for k in t:
        t[k] = t[k].to(token_dtype if k in ("cond", "uncond") else feature_dtype)
    _write_embeds_file(host.dirs / "input" / "generated.safetensors", sd15_base, t)
    floats = token_dtype.is_floating_point and (feature_width is None or feature_dtype.is_floating_point)
    finite = all(bool(torch.isfinite(v.float()).all()) for v in t.values())
    fits = (width == 768 and tokens % 4 == 0
            and (feature_width is None or (feature_width == 1024 and feature_rows == 0 and rows >= 1)))
    valid = floats and finite and fits

    loaded = outcome(IPALoadEmbeds().load, "generated.safetensors", ipadapter=sd15_base)
    assert isinstance(loaded, IPAdapterError) != valid, (loaded, valid)
    unchecked = outcome(IPALoadEmbeds().load, "generated.safetensors")  # no adapter: Apply checks it
    if isinstance(unchecked, IPAdapterError):
        assert not valid
        return
    embeds = unchecked["result"][0]
    assert embeds.cond.dtype == torch.float32
    patched = outcome(IPAApplyAdapter().apply, comfy_standin.make_model("sd15"), sd15_base, embeds, 1.0, 0.0, 1.0)
    assert isinstance(patched, IPAdapterError) != valid, (patched, valid)
    if valid:
        x, ctx = torch.randn(refs, 4, 8, 8, generator=gen), torch.randn(refs, 77, 768, generator=gen)  # a row per item
        assert torch.isfinite(comfy_standin.run_model(patched[0], x, 5.0, ctx, ctx)).all()


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.update(cond=torch.randn(1, 4, 769), uncond=torch.randn(1, 4, 769)), r"tokens \[1, 4, 769\].*width 768"),
    (lambda t: t.update(cond=t["cond"].to(torch.int8), uncond=t["uncond"].to(torch.int8)), "cond holds int8 .*float"),
    (lambda t: t.update(cond=t["cond"] > 0, uncond=t["uncond"] > 0), "cond holds bool"),
    (lambda t: t.update(cond_features=torch.randn(2, 1027), uncond_features=torch.zeros(2, 1027)),
     r"encoder features \[2, 1027\].*image_embeds of width 1024"),
    (lambda t: t.update(cond=torch.full((1, 8, 768), float("nan"))), "NaN or infinite"),
])
def test_the_reported_embeds_files_are_refused_naming_both_sides(host, sd15_base, edit, match):
    """The cases held back: 769-wide tokens, int8 / bool tokens, 1027-wide features; each names the file's side and
    the adapter's, at Load with the adapter connected and at Apply."""
    t = dict(_embeds(sd15_base).state_dict())
    edit(t)
    _write_embeds_file(host.dirs / "input" / "edited.safetensors", sd15_base, t)
    with pytest.raises(IPAdapterError, match=match) as e:
        IPALoadEmbeds().load("edited.safetensors", ipadapter=sd15_base)
    assert_clear(e.value)
    assert "edited.safetensors" in str(e.value) and "This is a bug" not in str(e.value)
    loaded = outcome(IPALoadEmbeds().load, "edited.safetensors")
    if not isinstance(loaded, IPAdapterError):  # float but the wrong shape: Apply refuses it, naming the adapter
        with pytest.raises(IPAdapterError, match=match) as e:
            IPAApplyAdapter().apply(comfy_standin.make_model("sd15"), sd15_base, loaded["result"][0], 1.0, 0.0, 1.0)
        assert "SD1.5 base" in str(e.value)


# ------------------------------------------------------------------ the host's refusals


@pytest.mark.parametrize("prefix", ["../../../escape/x", "/tmp/ipa-escape/x", "ipadapter/../../x"])
def test_a_save_prefix_outside_the_output_folder_is_the_users_error(host, sd15_base, prefix):
    with pytest.raises(IPAdapterError, match="filename_prefix .* was refused: ERROR: Saving image outside the output "
                                             "folder is not allowed.*relative prefix inside the output folder") as e:
        IPASaveEmbeds().save(_embeds(sd15_base), prefix)
    assert_clear(e.value)
    assert "This is a bug" not in str(e.value)
    assert not os.path.exists("/tmp/ipa-escape") and not (host.dirs.parent / "escape").exists()


def test_names_the_operating_system_refuses_are_the_users_error(host, sd15_base):
    (host.dirs / "output" / "a_file").write_text("x")
    for prefix, words in (("a_file/x", "File exists"), ("a_file/x/y", "Not a directory"), ("x" * 300, "File name too long"),
                          ("a\0b", "null")):
        with pytest.raises(IPAdapterError, match="was refused") as e:
            IPASaveEmbeds().save(_embeds(sd15_base), prefix)
        assert words.lower() in str(e.value).lower() and "This is a bug" not in str(e.value)


def test_a_host_failure_of_another_kind_is_still_a_bug(host, sd15_base, monkeypatch, tmp_path):
    """Only the host's refusals (a plain Exception, OSError, ValueError) are the user's; a TypeError is ours to fix."""
    monkeypatch.setenv("IPADAPTER_LOG_DIR", str(tmp_path))
    monkeypatch.setattr(host.folder_paths, "get_save_image_path", lambda *a: None + 1)
    with pytest.raises(IPAdapterError, match="unexpected internal error \\(TypeError"):
        IPASaveEmbeds().save(_embeds(sd15_base), "ipadapter/x")


@pytest.mark.parametrize("name", ["../escape.safetensors", "../../etc/x.safetensors", "/etc/x.safetensors",
                                  "sub/../../x.safetensors [output]"])
def test_an_embeds_file_name_outside_its_folder_is_refused(host, name):
    with pytest.raises(IPAdapterError, match="points outside its folder") as e:
        IPALoadEmbeds().load(name)
    assert_clear(e.value)


def test_missing_embeds_files_are_the_users_error(host):
    for name in ("missing.safetensors", "missing.safetensors [output]"):
        with pytest.raises(IPAdapterError, match="no such embeds file") as e:
            IPALoadEmbeds().load(name)
        assert_clear(e.value)


def test_saved_then_loaded_from_the_output_folder(host, sd15_base):
    r = IPASaveEmbeds().save(_embeds(sd15_base), "ipadapter/round")
    assert "ipadapter/round_00001_.safetensors" in r["ui"]["text"][0]
    out = IPALoadEmbeds().load("ipadapter/round_00001_.safetensors [output]", ipadapter=sd15_base)
    assert torch.equal(out["result"][0].cond, _embeds(sd15_base).cond)


# ------------------------------------------------------------------ every INT / FLOAT input bounded by the node

_OUT_OF_RANGE = [float("nan"), float("inf"), -float("inf"), 10 ** 20, -10 ** 20, None]
_NOT_WHOLE = [2.5, "3"]


def _calls(adapter):
    """node id -> {input: a call of the node with that input set to v}: every INT and FLOAT input of the registry."""
    from nodes.nodes_animation import IPACombineFrameWeights, IPAFrameWeights, IPAFrameWeightsFromStrategy
    from nodes.nodes_encode import IPAEncodeImagePrompt
    from nodes.nodes_toolkit import IPAApplyRegions, IPANoise, IPARegion

    model, embeds, mask = comfy_standin.make_model("sd15"), _embeds(adapter), torch.ones(8, 8)
    cv, img = comfy_standin.ClipVisionModel(1280, 1024), torch.rand(1, 64, 64, 3)
    apply_defaults = dict(model=model, ipadapter=adapter, embeds=embeds, weight=1.0, start_at=0.0, end_at=1.0)
    frames = dict(weights="0, 1", timing="linear", frames=4, start_frame=0, end_frame=9999, add_starting_frames=0,
                  add_ending_frames=0, method="full batch", seed=0)
    (regions,) = IPARegion().add(embeds, mask, 1.0)

    def apply(name):
        return lambda v: IPAApplyAdapter().apply(**dict(apply_defaults, **{name: v}))

    def frame(name):
        return lambda v: IPAFrameWeights().schedule(**dict(frames, **{name: v}), image=torch.rand(3, 8, 8, 3))

    def strategy(name):
        return lambda v: IPAFrameWeightsFromStrategy().schedule(dict(frames, images=0, **{name: v}))

    return {
        "IPAApplyAdapter": {n: apply(n) for n in ("weight", "start_at", "end_at", "weight_composition", "style_boost",
                                                  "composition_boost", "faceid_lora_strength", "weight_faceidv2",
                                                  "weight_kolors", "frame_weights")},
        "IPAEncodeImagePrompt": {
            "enhance_tiles": lambda v: IPAEncodeImagePrompt().encode(adapter, cv, img, tiles="enhance", enhance_tiles=v),
            "enhance_ratio": lambda v: IPAEncodeImagePrompt().encode(adapter, cv, img, tiles="enhance", enhance_ratio=v),
            "tile_sharpening": lambda v: IPAEncodeImagePrompt().encode(adapter, cv, img, tiles="tiled", tile_sharpening=v)},
        "IPANoise": {"strength": lambda v: IPANoise().make("fade", v, 0),
                     "blur": lambda v: IPANoise().make("fade", 0.5, v),
                     "seed_override": lambda v: IPANoise().make("fade", 0.5, 0, seed_override=v)},
        "IPARegion": {"weight": lambda v: IPARegion().add(embeds, mask, v)},
        "IPAApplyRegions": {"start_at": lambda v: IPAApplyRegions().apply(model, adapter, regions, v, 1.0),
                            "end_at": lambda v: IPAApplyRegions().apply(model, adapter, regions, 0.0, v)},
        "IPAFrameWeights": {n: frame(n) for n in ("frames", "start_frame", "end_frame", "add_starting_frames",
                                                  "add_ending_frames", "seed")},
        "IPAFrameWeightsFromStrategy": {"weights_strategy": strategy("frames")},
        "IPACombineFrameWeights": {"weights_1": lambda v: IPACombineFrameWeights().combine(v, 0.5),
                                   "weights_2": lambda v: IPACombineFrameWeights().combine([0.5], [0.1, v])},
    }


def _number_inputs():
    found = set()
    for node_id, cls in _own_nodes():
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, (kind, *options) in spec.get(section, {}).items():
                if kind in ("INT", "FLOAT"):
                    found.add((node_id, name))
    return found


def test_every_number_input_of_every_node_is_covered_here(host, sd15_base):
    covered = {(n, i) for n, inputs in _calls(sd15_base).items() for i in inputs if n != "IPAFrameWeightsFromStrategy"}
    assert covered == _number_inputs(), "a new INT / FLOAT input needs its hostile case in _calls"


def _own_nodes():
    """This pack's own nodes (the other pack's ids served here are checked from its interface table, below)."""
    return [(node_id, registry.NODE_CLASS_MAPPINGS[node_id]) for node_id in registry.OWN_IDS]


def test_every_int_input_states_its_range_in_the_tooltip():
    for node_id, cls in _own_nodes():
        for section in ("required", "optional"):
            for name, (kind, *options) in cls.INPUT_TYPES().get(section, {}).items():
                if kind == "INT":
                    o = options[0]
                    assert "min" in o and "max" in o and str(o["max"]) in o["tooltip"], (node_id, name)


def test_every_number_input_refuses_what_is_out_of_its_range(host, sd15_base):
    """NaN, infinities, 10**20, a fractional or text INT, None: each node input gives one clear error, whatever the
    host checked (ComfyUI checks min / max only for typed-in values; a linked one reaches the node as it is)."""
    kinds = {}
    for node_id, cls in _own_nodes():
        for section in ("required", "optional"):
            for name, (kind, *_) in cls.INPUT_TYPES().get(section, {}).items():
                kinds[node_id, name] = kind
    for node_id, inputs in _calls(sd15_base).items():
        for name, call in inputs.items():
            values = _OUT_OF_RANGE + (_NOT_WHOLE if kinds.get((node_id, name), "INT") == "INT" else [])
            if name == "frame_weights":  # any finite weights (they multiply weight); None = disconnected
                values = _OUT_OF_RANGE[:3]
            if node_id == "IPACombineFrameWeights":  # weight lists for frame_weights: any finite numbers
                values = _OUT_OF_RANGE[:3] + [None]
            for v in values:
                r = outcome(call, v)
                assert isinstance(r, IPAdapterError), (node_id, name, v)
                assert "This is a bug" not in str(r), (node_id, name, v, r)


def test_every_number_input_of_the_other_packs_ids_refuses_what_is_out_of_its_range(host):
    """The widely used pack's ids served here (nodes/dropin): every INT / FLOAT input, linked in with NaN, an
    infinity, 10**20 or (INT) a fraction, gives one clear error naming the input before any work is done."""
    classes, _ = dropin.registrations()
    checked = 0
    for node_id, spec in pack_interface.NODES.items():
        for item in (*spec["required"], *spec["optional"]):
            if item[1] not in ("INT", "FLOAT"):
                continue
            valid = {i[0]: i[2]["default"] for i in (*spec["required"], *spec["optional"])
                     if i[1] in ("INT", "FLOAT")}
            values = [v for v in _OUT_OF_RANGE if v is not None] + (_NOT_WHOLE if item[1] == "INT" else [])
            for v in values:
                r = outcome(lambda: getattr(classes[node_id](), classes[node_id].FUNCTION)(**{**valid, item[0]: v}))
                assert isinstance(r, IPAdapterError), (node_id, item[0], v, r)
                assert item[0] in str(r) and "This is a bug" not in str(r), (node_id, item[0], v, r)
                checked += 1
    assert checked > 100


_FRAMES_MEMORY = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
from ip_core.errors import IPAdapterError
from ip_core.frames import frame_schedule
frame_schedule("0, 1", "linear", 8)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
refused = 0
for kwargs in json.loads(sys.stdin.read()):
    try:
        frame_schedule(**kwargs)
    except IPAdapterError:
        refused += 1
print(refused, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
"""


def test_huge_frame_counts_are_refused_before_any_memory_is_used():
    """Before: frames = 10**9 (linked, so unchecked by the host) grew past 3 GB. Now each case is refused at once."""
    cases = [dict(frames=10 ** 9), dict(frames=9999, start_frame=10 ** 9), dict(frames=9999, add_ending_frames=10 ** 9, images=2),
             dict(frames=9999, images=100_000), dict(frames=9999, images=100_000, method="alternate batches"),
             dict(weights=",".join(["1"] * (MAX_SCHEDULE_FRAMES + 1)), timing="custom")]
    res = subprocess.run([sys.executable, "-c", _FRAMES_MEMORY, str(ROOT)], input=json.dumps(cases), capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-2000:]
    refused, extra = map(int, res.stdout.split())
    assert refused == len(cases) and extra < 64 * 1024 ** 2, (refused, f"{extra / 1024 ** 2:.0f} MB")


@HOSTILE
@given(
    frames=st.one_of(st.integers(-3, 10 ** 10), st.sampled_from([float("nan"), float("inf"), 3.0, 3.5, "4", None])),
    start=st.integers(0, 20), end=st.integers(0, 10 ** 6), adds=st.integers(0, 10 ** 6),
    images=st.integers(0, 5), method=st.sampled_from(["full batch", "shift batches", "alternate batches"]),
    timing=st.sampled_from(["linear", "custom", "random", "ease_in"]),
)
def test_generated_frame_inputs(host, frames, start, end, adds, images, method, timing):
    """A schedule within the bounds, or a clear error: never a bug, never more than the bound's frames."""
    from nodes.nodes_animation import IPAFrameWeights

    image = torch.rand(images, 4, 4, 3) if images else None
    r = outcome(IPAFrameWeights().schedule, "0, 0.5, 1", timing, frames, start, end, adds, adds, method, image)
    if not isinstance(r, IPAdapterError):
        weights, _, total, image_1, _, strategy = r
        assert total == len(weights) <= MAX_SCHEDULE_FRAMES
        assert image_1 is None or image_1.shape[0] == total
        assert strategy["frames"] == frames and isinstance(strategy["frames"], int)
    else:
        assert "This is a bug" not in str(r)
