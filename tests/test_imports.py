"""The layout's import rules, read from the source with ``ast``: no import cycle among the modules
of ``slowfast/`` and ``visuals/``, and the library (``slowfast/`` outside ``slowfast/commands/``)
never imports the command wing, the views or the app. Every import counts: at module level,
inside a function, under ``if TYPE_CHECKING:``; importing ``a.b.c`` also runs the packages
``a`` and ``a.b``, so those count too (except a module's own packages, which always run first).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = "slowfast.commands"
FORBIDDEN = ("visuals", "app", "explorer", COMMANDS)  # what the library never imports

# The ``python -m`` doors kept outside the command wing: their ``if __name__ == "__main__":`` block
# hands over to a command. It runs only when the file is executed, never when it is imported, so
# it makes no dependency of the library and no cycle.
DOORS = {"slowfast.snapshot": "slowfast.commands.snapshot", "slowfast.harness": "slowfast.commands.lmeval"}

# Known exceptions, each to go when its file's owner moves it (an exception that no longer occurs
# fails ``test_every_known_exception_still_occurs``, so this list only shrinks):
KNOWN_EDGES = {
    # Function-local imports that break a cycle in files other changes own now:
    ("slowfast.params", "slowfast.samplers"): "params.py reads the samplers' parameters; the samplers declare "
                                              "them with params.Param",
    ("slowfast.trace_format", "slowfast.engine"): "trace_format.py rebuilds a trace's GenerationSettings; the "
                                                  "engine imports trace.py, which imports trace_format.py",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for top in ("slowfast", "visuals") for p in sorted((ROOT / top).rglob("*.py"))}
OUTSIDE = ("app", "explorer")  # not parsed, but named when imported


def known(name: str) -> Optional[str]:
    """The module of ours ``name`` is (or is inside), or the outside name it starts with."""
    while name:
        if name in MODULES or name in OUTSIDE:
            return name
        name = name.rpartition(".")[0]
    return None


def in_main_block(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"):
            return True
    return False


def in_function(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return True
    return False


def imports(module: str) -> Iterator[tuple[str, int, bool, bool]]:
    """(imported module, line, in a function, in the ``__main__`` block) for every import of ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            target = known(name)
            if target is None or target == module:
                continue
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # the packages it runs on the way, then the module
                step = ".".join(parts[:i])
                if step in MODULES and step != module and not module.startswith(step + "."):
                    yield step, node.lineno, in_function(node, parents), in_main_block(node, parents)
                elif step in OUTSIDE:
                    yield step, node.lineno, in_function(node, parents), in_main_block(node, parents)


EDGES = {m: list(imports(m)) for m in MODULES}


def is_library(module: str) -> bool:
    return module.startswith("slowfast") and not (module == COMMANDS or module.startswith(COMMANDS + ".")
                                                  or module == "slowfast.__main__")


def graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: line}, without the doors' ``__main__`` blocks and the known exceptions."""
    out: dict[str, dict[str, int]] = {m: {} for m in MODULES}
    for m, edges in EDGES.items():
        for target, line, _, main_block in edges:
            if target in MODULES and not (main_block and m in DOORS) and (m, target) not in KNOWN_EDGES:
                out[m].setdefault(target, line)
    return out


def cycles(g: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in g:
        if v not in index:
            visit(v)
    return found


def test_the_parser_sees_the_imports_it_must():
    edges = {t for t, *_ in EDGES["slowfast.commands.cli"]}
    assert {"slowfast.commands.common", "slowfast.commands.bench", "slowfast.commands.sweep"} <= edges
    assert "slowfast.commands" not in edges  # its own package runs first anyway
    # importing slowfast.commands.train.card runs the package slowfast.commands.train on the way
    assert {"slowfast.commands.train", "slowfast.commands.train.card"} <= {
        t for t, *_ in EDGES["slowfast.commands.evaluate.command"]}
    assert "slowfast.cache" in {t for t, *_ in EDGES["slowfast.models.transformer"]}
    assert ("slowfast.engine", True) in {(t, f) for t, _, f, _ in EDGES["slowfast.trace_format"]}  # function-local
    assert {"slowfast.commands.snapshot"} <= {t for t, _, _, main in EDGES["slowfast.snapshot"] if main}


def test_no_import_cycle():
    g = graph()
    found = cycles(g)
    described = ["  " + " ".join(f"{m} (-> {', '.join(f'{t}:{line}' for t, line in g[m].items() if t in c)})"
                                 for m in c) for c in found]
    assert not found, "import cycles:\n" + "\n".join(described)


def test_the_library_never_imports_the_commands_the_views_or_the_app():
    bad = []
    for m, edges in EDGES.items():
        if not is_library(m):
            continue
        for target, line, _, main_block in edges:
            if main_block and m in DOORS and (DOORS[m] + ".").startswith(target + "."):
                continue  # the door's command (and the packages it runs on the way)
            if any(target == f or target.startswith(f + ".") for f in FORBIDDEN) and (m, target) not in KNOWN_EDGES:
                bad.append(f"{MODULES[m].relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "\n".join(bad)


def test_every_known_exception_still_occurs():
    present = {(m, t) for m, edges in EDGES.items() for t, *_ in edges}
    gone = [edge for edge in KNOWN_EDGES if edge not in present]
    assert not gone, f"no longer imported; drop them from KNOWN_EDGES: {gone}"


OWNED = [m for m in MODULES if m.startswith(COMMANDS)] + [
    "slowfast.problems", "slowfast.distributed", "slowfast.harness", "slowfast.snapshot", "slowfast.sweep",
    "slowfast.cache", "slowfast.tasks", "slowfast.tasks.registry", "slowfast.tasks.verdict"]


@pytest.mark.parametrize("module", OWNED)
def test_a_function_local_import_in_the_command_wing_says_why(module):
    """Only a deferred dependency (torch.distributed, lm_eval, plotly ...) is imported inside a
    function, with a comment on its line saying why."""
    path = MODULES[module]
    lines = path.read_text(encoding="utf-8").splitlines()
    tree = ast.parse("\n".join(lines))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    silent = [f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}"
              for node in ast.walk(tree)
              if isinstance(node, (ast.Import, ast.ImportFrom)) and in_function(node, parents)
              and not any("#" in lines[i - 1] for i in (node.lineno, node.lineno - 1))]  # on it, or just above
    assert not silent, "function-local imports without a comment:\n" + "\n".join(silent)


def test_the_cache_drives_a_protocol_that_the_transformer_block_satisfies():
    import torch

    from slowfast import cache
    from slowfast.models.transformer import Block, ModelConfig

    assert "slowfast.models.transformer" not in {t for t, *_ in EDGES["slowfast.cache"]}
    block = Block(ModelConfig(d_model=16, n_heads=2, n_layers=1, mlp_hidden_size=32, vocab_size=8))
    assert isinstance(block, cache.Block)
    assert torch.is_tensor(block.attn_norm(torch.zeros(1, 2, 16)))


# Every Python file outside tests/: the app, the explorer, the views, the library and the command wing.
CODE = sorted([*ROOT.glob("*.py"),
               *(p for top in ("explorer", "visuals", "slowfast") for p in (ROOT / top).rglob("*.py"))])


def test_the_line_rule_sees_every_part():
    parts = {p.relative_to(ROOT).parts[0] for p in CODE}
    assert {"app.py", "explorer", "visuals", "slowfast"} <= parts and "tests" not in parts


@pytest.mark.parametrize("path", CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_function_over_60_lines(path):
    """No function (or method, or function inside one) longer than 60 lines, outside tests."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    long = [f"{node.name} (line {node.lineno}): {node.end_lineno - node.lineno + 1} lines" for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60]
    assert not long, f"{path.relative_to(ROOT)}: {', '.join(long)}"
