"""install.py only creates models/ipadapter inside a ComfyUI folder, and never touches anything else."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

INSTALL = Path(__file__).resolve().parents[1] / "install.py"


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


ROOT = INSTALL.parent
HOST_IMPORT = __import__("re").compile(r"^\s*(import|from)\s+(comfy|comfy_extras|folder_paths|node_helpers|nodes|execution|server)\b", __import__("re").M)


def test_ip_core_and_trainer_never_import_the_host():
    offenders = [str(p.relative_to(ROOT)) for pkg in ("ip_core", "trainer") for p in (ROOT / pkg).rglob("*.py")
                 if HOST_IMPORT.search(p.read_text())]
    assert offenders == []


def test_no_eval_or_exec_in_shipped_code():
    import re

    pattern = re.compile(r"(^|[^.\w])(eval|exec)\(")
    shipped = [p for pkg in ("ip_core", "nodes", "trainer") for p in (ROOT / pkg).rglob("*.py")] + [ROOT / "__init__.py", INSTALL]
    assert [str(p.relative_to(ROOT)) for p in shipped if pattern.search(p.read_text())] == []


def test_pyproject_declares_the_comfy_registry_entry():
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert {"PublisherId", "DisplayName"} <= set(meta["tool"]["comfy"])


def test_every_command_line_uses_the_one_exit_code_table(tmp_path, monkeypatch):
    """python -m ip_core and python -m trainer return the codes scripts rely on: 0 ok, 1 an expected failure,
    2 a bad command line, 3 a bug, 130 interrupted (the shell's 128 + SIGINT). Each observed, not read off the table."""
    import ip_core.__main__ as core_cli
    import trainer.cli as trainer_cli

    core, trainer = core_cli.main, trainer_cli.main
    monkeypatch.setenv("IPADAPTER_LOG_DIR", str(tmp_path))  # where the "a bug" case logs its traceback
    assert core(["example", str(tmp_path / "examples")]) == 0
    assert core(["inspect", str(next((tmp_path / "examples").iterdir()))]) == 0
    assert trainer(["--help"]) == 0
    assert core(["inspect", "/nonexistent/adapter.safetensors"]) == 1
    assert trainer(["train", "--pretrained_model_name_or_path", "/nonexistent"]) == 1
    assert trainer(["frobnicate"]) == 2 and trainer([]) == 2
    with pytest.raises(SystemExit) as usage:
        core(["frobnicate"])
    assert usage.value.code == 2

    def raises(exc):
        def run(*args, **kwargs):
            raise exc
        return run

    for exc, code in ((ZeroDivisionError("a bug"), 3), (KeyboardInterrupt(), 130)):
        with monkeypatch.context() as m:
            m.setattr(core_cli, "_run", raises(exc))
            m.setattr(trainer_cli, "parse_train_args", raises(exc))
            assert core(["inspect", "x.safetensors"]) == code, exc
            assert trainer(["train"]) == code, exc
