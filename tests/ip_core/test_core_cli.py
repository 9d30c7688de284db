"""`python -m ip_core inspect` tells users what a file is, or exactly why it cannot be used."""
import json
import os
import subprocess
import sys
from pathlib import Path


from ip_core import save_adapter_state_dict
from ip_core.__main__ import main

from ipa_factories import released_sd

ROOT = Path(__file__).resolve().parents[2]


def test_inspect_json_reports_variant_tokens_params_encoder_and_safety(tmp_path, capsys):
    sd = released_sd("plus", "sd15", 768, 1280, device="cpu")
    path = save_adapter_state_dict(sd, tmp_path / "renamed_to_anything.bin", format="bin")
    assert main(["inspect", str(path), "--json"]) == 0
    (info,) = json.loads(capsys.readouterr().out)
    assert info["variant"] == "plus" and info["base_model"] == "SD1.5" and info["tokens"] == 16
    assert info["encoder"] == "ViT-H/14" and info["encoder_output"] == "penultimate_hidden_states"
    assert info["parameters"] == sum(t.numel() for p in sd.values() for t in p.values())
    assert info["safe_to_load"].startswith("yes")


def test_inspect_text_and_failure_exit_code(tmp_path, capsys):
    good = save_adapter_state_dict(released_sd("base", "sd15", 768, 1024, device="cpu"), tmp_path / "a.safetensors")
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    assert main(["inspect", str(good), str(bad)]) == 1
    text = capsys.readouterr().out
    assert "SD1.5 base (linear projection), 4 tokens, 16 layers" in text
    assert "22,319,616" in text
    assert "broken.safetensors" in text and "ERROR" in text


def test_example_files_and_module_entry_point(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "ip_core", "example", str(tmp_path)], check=True, env=env, capture_output=True)
    files = sorted(str(p) for p in tmp_path.iterdir())
    assert len(files) == 3
    res = subprocess.run([sys.executable, "-m", "ip_core", "inspect", "--json", *files], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert sorted(i["variant"] for i in json.loads(res.stdout)) == ["base", "full-face", "plus"]
