"""install.py only creates models/ipadapter inside a ComfyUI folder, and never touches anything else."""
import os
import subprocess
import sys
from pathlib import Path

INSTALL = Path(__file__).resolve().parents[2] / "install.py"


def run(comfy):
    return subprocess.run([sys.executable, str(INSTALL)], env=dict(os.environ, COMFYUI_PATH=str(comfy)), capture_output=True, text=True)


def test_creates_the_ipadapter_model_folder(tmp_path):
    (tmp_path / "models").mkdir()
    res = run(tmp_path)
    assert res.returncode == 0 and (tmp_path / "models" / "ipadapter").is_dir()
    assert run(tmp_path).returncode == 0  # idempotent


def test_leaves_a_non_comfyui_folder_alone(tmp_path):
    res = run(tmp_path)
    assert res.returncode == 0 and list(tmp_path.iterdir()) == []
    assert "does not look like a ComfyUI folder" in res.stdout
