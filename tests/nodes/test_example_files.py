"""The example workflows run with only the files the README lists: each names its files in a Note, its
reference images ship with the host (example.png) or with the pack (example_inputs/, copied to the host's
input folder at the first start), and its adapter choices are files the README names."""
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from example_notes import HOST_IMAGE, SHIPPED_IMAGES, note_text
from nodes import host as host_mod
from nodes.nodes_load import IPALoadAdapter

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "example_workflows").glob("*.json"))
INPUTS = ROOT / "example_inputs"
USERS_OWN = {"face.png", "example_embeds.safetensors"}  # a face photo; embeds the toolkit example saves first
IMAGE_LOADERS = ("LoadImage", "LoadImageMask", "IPALoadEmbeds")


def _load(path):
    return json.loads(path.read_text())


def _draw_module():
    sys.path.insert(0, str(INPUTS))
    try:
        import make_images
    finally:
        sys.path.remove(str(INPUTS))
    return make_images


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_each_example_has_one_note_naming_its_files_as_they_are(path):
    wf = _load(path)
    notes = [n for n in wf["nodes"] if n["type"] == "Note"]
    assert len(notes) == 1, path.name
    assert notes[0]["widgets_values"] == [note_text(wf)], "run: python tests/nodes/example_notes.py"
    for n in wf["nodes"]:
        if n["type"] in IMAGE_LOADERS + ("IPALoadAdapter", "CLIPVisionLoader", "CheckpointLoaderSimple"):
            assert n["widgets_values"][0] in notes[0]["widgets_values"][0]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_input_file_ships_with_the_host_or_the_pack_or_is_named_as_the_users(path):
    names = {n["widgets_values"][0] for n in _load(path)["nodes"] if n["type"] in IMAGE_LOADERS}
    unknown = names - {HOST_IMAGE} - set(SHIPPED_IMAGES) - USERS_OWN
    assert not unknown, f"{path.name} loads {sorted(unknown)}: ship it in example_inputs/ or name it in USERS_OWN"


def test_the_shipped_images_are_the_ones_the_project_script_draws():
    draw = _draw_module()
    assert sorted(draw.IMAGES) == sorted(SHIPPED_IMAGES) == sorted(p.name for p in INPUTS.glob("*.png"))
    for name, make in draw.IMAGES.items():
        shipped = np.asarray(Image.open(INPUTS / name).convert("RGB"))
        assert np.array_equal(shipped, np.asarray(make())), f"{name}: run python example_inputs/make_images.py"
        assert (INPUTS / name).stat().st_size < 20_000  # small enough to ship in the repository


def test_the_pack_copies_its_images_to_the_input_folder_and_keeps_the_users(host):
    in_dir = host.folder_paths.get_input_directory()
    os.makedirs(in_dir, exist_ok=True)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(os.path.join(in_dir, "style_reference.png"))  # the user's own
    written = host_mod.provide_example_inputs()
    assert sorted(os.path.basename(p) for p in written) == sorted(set(SHIPPED_IMAGES) - {"style_reference.png"})
    assert np.asarray(Image.open(os.path.join(in_dir, "style_reference.png")))[0, 0].tolist() == [1, 2, 3]
    assert host_mod.provide_example_inputs() == []  # a second start writes nothing


def test_examples_validate_with_only_the_readme_files_and_shipped_images(host):
    """Models folder: only the adapter names the README's tables list; input folder: what ComfyUI ships
    (example.png) and what the pack copies. Every adapter choice and image of every example is then there,
    except the user's own files the notes name."""
    readme = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"`([\w.\-]+\.(?:safetensors|bin))`", readme))
    ip_dir = os.path.join(host.models_dir, "ipadapter")
    for name in listed:
        open(os.path.join(ip_dir, name), "wb").close()  # the listing reads names only
    in_dir = host.folder_paths.get_input_directory()
    os.makedirs(in_dir, exist_ok=True)
    Image.new("RGB", (8, 8)).save(os.path.join(in_dir, HOST_IMAGE))
    host_mod.provide_example_inputs()
    choices = IPALoadAdapter.INPUT_TYPES()["required"]["adapter_name"][0]
    for path in WORKFLOWS:
        for n in _load(path)["nodes"]:
            value = (n.get("widgets_values") or [None])[0]
            if n["type"] == "IPALoadAdapter":
                assert value in choices, (path.name, value)
            elif n["type"] in IMAGE_LOADERS and value not in USERS_OWN:
                assert os.path.isfile(os.path.join(in_dir, value)), (path.name, value)
