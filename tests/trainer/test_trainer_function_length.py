"""No function in trainer/ is longer than 120 lines: a longer one is split (the demo's stages are a table of
short functions run by one helper), so each reads on one screen."""
import ast
import pathlib
import textwrap

LIMIT = 120
TRAINER = pathlib.Path(__file__).resolve().parents[2] / "trainer"


def long_functions(source: str, filename: str = "<source>", limit: int = LIMIT) -> list:
    """-> "file:line name (N lines)" for every function or method (nested ones too) longer than `limit` lines."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            length = node.end_lineno - start + 1
            if length > limit:
                found.append(f"{filename}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_in_trainer_is_longer_than_120_lines():
    files = sorted(TRAINER.rglob("*.py"))
    assert len(files) > 20  # the package itself, not an empty folder
    offenders = [f for p in files for f in long_functions(p.read_text(encoding="utf-8"), str(p.relative_to(TRAINER.parent)))]
    assert not offenders, f"functions longer than {LIMIT} lines (split them): {offenders}"


def test_the_length_check_names_the_offender():
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))  # def line + 120 body lines = 121
    source = "def fine():\n    return 1\n\nclass C:\n    def too_long(self):\n" + textwrap.indent(body, "    ") + "\n"
    assert long_functions(source, "m.py") == [f"m.py:5 too_long ({LIMIT + 1} lines)"]
    nested = "def outer():\n" + textwrap.indent(f"def inner():\n{body}\n", "    ")
    assert [f.split()[1] for f in long_functions(nested, "n.py")] == ["outer", "inner"]
    assert long_functions(f"def ok():\n{body[: body.rindex(chr(10))]}\n") == []  # exactly 120 lines passes
