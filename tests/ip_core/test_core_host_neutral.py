"""ip_core and the trainer speak about files, adapters and image encoders, never about ComfyUI's nodes or
folders: their messages reach trainer users too. nodes/ appends the ComfyUI advice (tests/nodes/test_nodes_advice.py)."""
import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Advice that only makes sense inside ComfyUI: its folders, its nodes, its UI.
UI_ADVICE = re.compile(
    r"models/|\b(a|the|this|that|which) node\b|\bconnect\b|press R|refresh|Load (IPAdapter|Image|CLIP|Checkpoint|LoRA)|"
    r"Encode Image Prompt|"
    r"Apply IPAdapter|ComfyUI's",
    re.IGNORECASE,
)


def _message_strings(path: Path):
    """Every string literal of a module except docstrings (messages, hints, f-string parts)."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


@pytest.mark.parametrize("package", ["ip_core", "trainer"])
def test_messages_carry_no_comfyui_advice(package):
    found = [f"{path.relative_to(REPO)}:{line}: {text!r}"
             for path in sorted((REPO / package).rglob("*.py"))
             for line, text in _message_strings(path) if UI_ADVICE.search(text)]
    assert not found, "host-specific advice belongs in nodes/:\n" + "\n".join(found)


def test_the_scan_sees_f_string_parts(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('def f(x):\n    """Docstrings may say ComfyUI."""\n    raise ValueError(f"{x}: connect a Load Image node")\n')
    assert [t for _, t in _message_strings(probe) if UI_ADVICE.search(t)] == [": connect a Load Image node"]
