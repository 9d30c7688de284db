"""The host-symbol table (nodes/host_symbols.py) cannot fall behind the code: every use of a host module in
nodes/ (imports, attributes of imported host modules, module names looked up by string) is an entry of it.
Each entry is checked against every tested host by tests/integration/test_integration_host.py."""
import ast
from pathlib import Path

from nodes.host_symbols import HOST_MODULES, HOST_SYMBOLS

NODES = Path(__file__).resolve().parents[2] / "nodes"


def _is_host(module: str) -> bool:
    return module.split(".")[0] in HOST_MODULES


def _chain(node):
    """a.b.c -> ["a", "b", "c"]; None when the chain does not start at a name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id] + parts[::-1] if isinstance(node, ast.Name) else None


def host_uses(source: str) -> set:
    """{(module, attribute or "")} of one file: `from M import A`, `M.A` through `import M [as x]`, and module
    names given as strings (sys.modules.get("M"), importlib.import_module over a table of names)."""
    tree = ast.parse(source)
    aliases, imported, uses = {}, set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if _is_host(a.name):
                    imported.add(a.name)
                    uses.add((a.name, ""))
                    if a.asname:
                        aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and _is_host(node.module):
            uses.update((node.module, a.name) for a in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _is_host(node.value) \
                and all(p.isidentifier() for p in node.value.split(".")) and "." in node.value:
            uses.add((node.value, ""))
    for node in ast.walk(tree):
        chain = _chain(node) if isinstance(node, ast.Attribute) else None
        if not chain or isinstance(getattr(node, "ctx", None), ast.Del):
            continue
        if chain[0] in aliases:
            uses.add((aliases[chain[0]], chain[1]))
        elif chain[0] in HOST_MODULES:
            # the longest imported module the chain names, then its attribute
            for n in range(len(chain) - 1, 0, -1):
                module = ".".join(chain[:n])
                if module in imported or (n == 1 and module in imported):
                    uses.add((module, chain[n]))
                    break
    return uses


def _covered(module: str, attr: str) -> bool:
    return any(module in e.modules and (not attr or e.name == attr or e.name.startswith(attr + "."))
               for e in HOST_SYMBOLS) or (not attr and any(module in e.modules for e in HOST_SYMBOLS))


def test_every_host_symbol_used_in_nodes_is_in_the_table():
    missing = {}
    for path in sorted(NODES.rglob("*.py")):
        for module, attr in sorted(host_uses(path.read_text())):
            if not _covered(module, attr):
                missing.setdefault(str(path.relative_to(NODES.parent)), []).append(f"{module}.{attr}".rstrip("."))
    assert missing == {}, f"host symbols used but not in nodes/host_symbols.HOST_SYMBOLS: {missing}"


def test_the_reader_finds_each_kind_of_use():
    """The reader above, on code of each form the nodes use (so the check above is no empty loop)."""
    source = '''
import folder_paths
import comfy.clip_vision
import comfy.model_management as mm
from comfy.weight_adapter.lora import LoRAAdapter
MODULES = ("comfy.clip_model",)
def f():
    folder_paths.get_full_path("x", "y")
    comfy.clip_vision.load("p")
    mm.load_models_gpu([])
    sys.modules.get("comfy.ldm.modules.attention")
'''
    assert host_uses(source) == {
        ("folder_paths", ""), ("comfy.clip_vision", ""), ("comfy.model_management", ""), ("comfy.clip_model", ""),
        ("comfy.ldm.modules.attention", ""), ("comfy.weight_adapter.lora", "LoRAAdapter"),
        ("folder_paths", "get_full_path"), ("comfy.clip_vision", "load"), ("comfy.model_management", "load_models_gpu")}
    assert not _covered("comfy.model_management", "load_model_gpu")  # the old name: not what the nodes rely on
    assert not _covered("comfy.sd", "load_checkpoint_guess_config")  # a host function the nodes never call


def test_entries_name_host_modules_and_where_the_nodes_use_them():
    assert len(HOST_SYMBOLS) > 40
    for e in HOST_SYMBOLS:
        assert e.modules and all(_is_host(m) for m in e.modules), e
        assert e.used_by and e.name is not None, e
