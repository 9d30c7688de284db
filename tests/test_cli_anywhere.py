"""The README's command lines run from any folder, as a user types them from the ComfyUI folder.

Each test runs `python <pack>/ipadapter.py ...` in a fresh temp folder that stands in for the ComfyUI folder:
it holds a `nodes.py` that fails when imported (ComfyUI's own nodes.py needs the host and a GPU driver), so a
tool that picked up the wrong `nodes` stops the test. Nothing of the pack is importable from there otherwise.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "nodes"))  # the self-made workflows of the widely used pack
from pack_workflows import pack_workflow  # noqa: E402

LAUNCHER = ROOT / "ipadapter.py"


@pytest.fixture
def comfy_folder(tmp_path):
    (tmp_path / "nodes.py").write_text("raise SystemExit(\"the host's nodes.py was imported\")\n")
    (tmp_path / "models" / "ipadapter").mkdir(parents=True)
    return tmp_path


def run(folder, *args):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only what a user's shell has
    return subprocess.run([sys.executable, str(LAUNCHER), *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)


def test_inspect_and_example_from_another_folder(comfy_folder):
    made = run(comfy_folder, "example", "models/ipadapter")
    assert made.returncode == 0, made.stderr
    files = sorted(p.name for p in (comfy_folder / "models" / "ipadapter").iterdir())
    assert "ip-adapter_sd15.safetensors" in files
    out = run(comfy_folder, "inspect", "models/ipadapter/ip-adapter_sd15.safetensors")
    assert out.returncode == 0, out.stderr
    assert "SD1.5 base (linear projection), 4 tokens" in out.stdout
    as_json = run(comfy_folder, "inspect", "--json", *(f"models/ipadapter/{f}" for f in files))
    assert as_json.returncode == 0, as_json.stderr
    assert len(json.loads(as_json.stdout)) == len(files)


def test_inspect_of_a_missing_file_is_an_expected_failure(comfy_folder):
    out = run(comfy_folder, "inspect", "models/ipadapter/nothing.safetensors")
    assert out.returncode == 1
    said = out.stdout + out.stderr
    assert "nothing.safetensors: no such file" in said and "Traceback" not in said


def test_migrate_from_another_folder(comfy_folder):
    (comfy_folder / "old.json").write_text(json.dumps(pack_workflow("IPAdapterAdvanced")))
    out = run(comfy_folder, "migrate", "old.json", "-o", "new.json")
    assert out.returncode == 0, out.stderr
    new = json.loads((comfy_folder / "new.json").read_text())
    types = {n["type"] for n in new["nodes"]}
    assert {"IPAEncodeImagePrompt", "IPAApplyAdapter"} <= types and "IPAdapterAdvanced" not in types


@pytest.mark.parametrize("command, usage", [("train", "python -m trainer train"), ("demo", "python -m trainer demo")])
def test_trainer_commands_from_another_folder(comfy_folder, command, usage):
    out = run(comfy_folder, command, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: {usage}")


def test_unknown_or_missing_command_is_a_usage_error(comfy_folder):
    assert run(comfy_folder).returncode == 2
    out = run(comfy_folder, "convert", "x.json")
    assert out.returncode == 2 and "unknown command 'convert'" in out.stderr
    assert "migrate IN" in run(comfy_folder, "--help").stdout
