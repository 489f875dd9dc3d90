"""The house's layering, read from the code's own imports (ast, nothing is imported or run).

Each module may import modules of its own layer or of a lower one, never a higher one, and no set
of modules may import each other in a circle: a lower layer can then be read, tested and changed
without the ones above it. The agent runs on devices without the host code, so it imports nothing
of edgekit outside edgekit.agent. Lazy imports inside functions count too: they are the same arrow,
only later.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "edgekit"

# Ground first. A module is placed by the longest entry its dotted name starts with; a new module
# that matches none fails the test until it is given its floor here.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("edgekit", "edgekit.errors", "edgekit.settings", "edgekit.graph"),  # `edgekit`: the package face
    ("edgekit.records",),
    ("edgekit.agent",),  # runs on the device: imports nothing of edgekit outside edgekit.agent
    ("edgekit.transport", "edgekit.model", "edgekit.documents", "edgekit.bundle", "edgekit.examples"),
    ("edgekit.compress",),
    ("edgekit.config", "edgekit.results", "edgekit.agent_session", "edgekit.device", "edgekit.rounds"),
    ("edgekit.select",),
    ("edgekit.pipeline",),
    ("edgekit.report",),
    ("edgekit.cli_options",),  # shared click options and the error wrapper
    ("edgekit.cli", "edgekit.__main__"),
)
SELF_CONTAINED = "edgekit.agent"


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under `root` (a package named after its folder)."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = (root.name, *f.relative_to(root).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imports(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports, anywhere in its body."""
    files = module_files(root)
    graph: dict[str, set[str]] = {}
    for name, f in files.items():
        package = name if f.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base_name = ".".join(base + ([node.module] if node.module else []))
                else:
                    base_name = node.module or ""
                # `from . import x` names a submodule when x is one, else a name in the package
                subs = {f"{base_name}.{a.name}" for a in node.names} & set(files)
                found |= subs or {base_name}
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def layer(module: str) -> int:
    best = None
    for floor, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + ".") and prefix != "edgekit":
                if best is None or len(prefix) > len(best[1]):
                    best = (floor, prefix)
    if best is None:
        raise AssertionError(f"{module} has no layer: add it to LAYERS in tests/test_layers.py")
    return best[0]


def on_device(module: str) -> bool:
    return module == SELF_CONTAINED or module.startswith(SELF_CONTAINED + ".")


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Every arrow into a higher layer, and every agent import of host code."""
    bad = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if layer(target) > layer(module):
                bad.append(f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})")
            if on_device(module) and not on_device(target):
                bad.append(f"{module} runs on the device but imports host module {target}")
    return bad


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected sets of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                members.append(w)
                if w == v:
                    break
            if len(members) > 1:
                found.append(sorted(members))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    assert circles(imports(ROOT)) == []


def test_every_module_has_a_layer_and_imports_none_above_it():
    graph = imports(ROOT)
    for module in graph:
        layer(module)
    assert upward(graph) == []


def test_the_check_finds_a_circle_an_upward_arrow_and_an_agent_importing_host_code(tmp_path):
    """The check itself, on a small package built to break every rule once."""
    pkg = tmp_path / "edgekit"
    (pkg / "agent").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "errors.py": "from .cli import main\n",  # ground imports the top
        "select.py": "from . import pipeline\n",
        "pipeline.py": "def f():\n    from .select import choose\n",  # lazily, still a circle
        "cli.py": "from .pipeline import f\n",
        "agent/__init__.py": "",
        "agent/bench.py": "from ..errors import DeviceError\nfrom . import files\n",
        "agent/files.py": "",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    graph = imports(pkg)
    assert graph["edgekit.agent.bench"] == {"edgekit.errors", "edgekit.agent.files"}
    assert circles(graph) == [["edgekit.pipeline", "edgekit.select"]]
    assert upward(graph) == [
        "edgekit.agent.bench runs on the device but imports host module edgekit.errors",
        f"edgekit.errors (layer 0) imports edgekit.cli (layer {len(LAYERS) - 1})",
        "edgekit.select (layer 6) imports edgekit.pipeline (layer 7)",
    ]
    (pkg / "newthing.py").write_text("")
    with pytest.raises(AssertionError, match="edgekit.newthing has no layer"):
        layer("edgekit.newthing")
