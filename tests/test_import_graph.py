"""The package's import graph has no cycles, at the top level or at any level.

Every module under ``src/safetydrift`` is parsed with ``ast``. An edge A → B means A imports B anywhere:
at the top, inside a function, or in a class body (a function-local import is still a dependency, just a
deferred one); only imports under ``if TYPE_CHECKING:`` are left out, since they never run. Importing
``a.b.c`` also runs ``a`` and ``a.b``, so those are edges too. Registry lookups (``registry.guards.get``)
import by name at run time and are not edges, except where a test adds them on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

import safetydrift

Graph = dict[str, set[str]]
SRC = Path(safetydrift.__file__).resolve().parent


# ------------------------------------------------------------------------------------- the graph
def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imported_names(source: str, module: str, is_package: bool, *, top_level_only: bool) -> set[str]:
    """Dotted names a module imports (``from m import x`` gives ``m`` and ``m.x``: x may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()

    def visit(stmts: list[ast.stmt], top: bool) -> None:
        for node in stmts:
            if isinstance(node, ast.If) and _is_type_checking(node):
                visit(node.orelse, top)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if not top_level_only:
                    visit(node.body, False)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                names.add(target)
                names.update(f"{target}.{a.name}" for a in node.names)
            else:  # class bodies, if/try/with/for blocks at this level
                for field in ("body", "orelse", "finalbody", "handlers"):
                    inner = getattr(node, field, None)
                    if isinstance(inner, list):
                        visit([s for s in inner if isinstance(s, ast.stmt)], top)
                        for h in inner:
                            if isinstance(h, ast.ExceptHandler):
                                visit(h.body, top)

    visit(ast.parse(source).body, True)
    return names


def build_graph(root: Path, *, top_level_only: bool) -> Graph:
    """Module → the package's modules it imports (with their parent packages), from the source files."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: Graph = {}
    for mod, path in files.items():
        deps: set[str] = set()
        for name in imported_names(path.read_text(encoding="utf-8"), mod, path.name == "__init__.py",
                                   top_level_only=top_level_only):
            while name and name not in files:  # ``from m import function`` → m
                name = name.rpartition(".")[0]
            while name:  # importing a.b.c runs a and a.b too
                deps.add(name)
                name = name.rpartition(".")[0]
        deps.discard(mod)
        deps -= {p for p in deps if mod.startswith(p + ".")}  # a module's own parents ran before it
        graph[mod] = deps
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or None. Iterative DFS, nodes in sorted order (stable)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph.get(start, ())))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def path_between(graph: Graph, start: str, goal: str) -> list[str] | None:
    """A shortest import path start → … → goal (breadth first), or None."""
    prev: dict[str, str | None] = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        if node == goal:
            out = [node]
            while (p := prev[out[-1]]) is not None:
                out.append(p)
            return out[::-1]
        for nxt in sorted(graph.get(node, ())):
            if nxt not in prev:
                prev[nxt] = node
                queue.append(nxt)
    return None


def on_cycles(graph: Graph) -> set[str]:
    """Every module that lies on some import cycle."""
    return {m for m in graph if any(path_between(graph, nxt, m) for nxt in graph[m])}


def with_guard_registry(graph: Graph) -> Graph:
    """The graph plus the imports the guard registry makes at run time: the guarded backend and the
    guard spec parser load every registered filter's module."""
    from safetydrift import registry

    g = {k: set(v) for k, v in graph.items()}
    modules = {registry.guards.target(n).split(":")[0] for n in registry.guards.names() if registry.guards.target(n)}
    assert modules, "registry.guards lists no built-in filter modules"
    for loader in ("safetydrift.guards.backend", "safetydrift.guards.spec"):
        g[loader] |= modules
    return g


# ------------------------------------------------------------------------------- the detector itself
def test_find_cycle_on_synthetic_graphs():
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"a"}, "a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert path_between({"a": {"b"}, "b": {"c"}, "c": set()}, "a", "c") == ["a", "b", "c"]
    assert path_between({"a": {"b"}, "b": set(), "c": {"a"}}, "a", "c") is None
    assert on_cycles({"x": {"a"}, "a": {"b"}, "b": {"a", "c"}, "c": set()}) == {"a", "b"}


def test_parser_counts_deferred_imports_and_skips_type_checking(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for name in ("__init__", "b", "c", "d", "e", "f", "g"):
        (pkg / f"{name}.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "h.py").write_text("")
    (pkg / "a.py").write_text(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "from pkg import b\n"
        "from .sub.h import thing\n"
        "if TYPE_CHECKING:\n    from pkg.d import D\n"
        "def f():\n    import pkg.c\n    from . import e\n"
        "class K:\n    def m(self):\n        from pkg.f import x\n"
        "try:\n    import pkg.g\nexcept ImportError:\n    pass\n"
    )
    top = build_graph(pkg, top_level_only=True)
    every = build_graph(pkg, top_level_only=False)
    assert top["pkg.a"] == {"pkg.b", "pkg.sub", "pkg.sub.h", "pkg.g"}  # its own parent "pkg" ran first
    assert every["pkg.a"] == top["pkg.a"] | {"pkg.c", "pkg.e", "pkg.f"}  # never pkg.d (TYPE_CHECKING)
    assert find_cycle(every) is None
    (pkg / "e.py").write_text("def late():\n    from pkg.a import f\n")  # a cycle through two deferred imports
    cycle = find_cycle(build_graph(pkg, top_level_only=False))
    assert cycle is not None and set(cycle) == {"pkg.a", "pkg.e"}
    assert find_cycle(build_graph(pkg, top_level_only=True)) is None


def test_an_injected_cycle_in_the_real_graph_is_found():
    graph = build_graph(SRC, top_level_only=False)
    assert "safetydrift.errors" not in on_cycles(graph)
    graph["safetydrift.errors"] = graph["safetydrift.errors"] | {"safetydrift.spec"}  # spec imports errors
    assert {"safetydrift.errors", "safetydrift.spec"} <= on_cycles(graph)
    assert find_cycle(graph) is not None


# ------------------------------------------------------------------------------------ the package
def test_top_level_import_graph_has_no_cycle():
    cycle = find_cycle(build_graph(SRC, top_level_only=True))
    assert cycle is None, "top-level import cycle: " + " -> ".join(cycle or [])


def test_import_graph_has_no_cycle_at_any_level():
    cycle = find_cycle(build_graph(SRC, top_level_only=False))
    assert cycle is None, "import cycle (deferred imports included): " + " -> ".join(cycle or [])


def test_context_backends_guards_judges_cycle_is_gone():
    """The old cycle context → backends → (guard) → judges → context, even counting the filter modules the
    guard registry loads at run time: no judge module the guards use may lead back to the context."""
    graph = with_guard_registry(build_graph(SRC, top_level_only=False))
    # the premises, so this test cannot pass vacuously
    assert path_between(graph, "safetydrift.context", "safetydrift.guards.backend") is not None
    used = {m for m in graph if m.startswith("safetydrift.judges")
            and any(path_between(graph, g, m) for g in graph if g.startswith("safetydrift.guards"))}
    assert "safetydrift.judges.keyword" in used and "safetydrift.judges.classifier" in used
    for judge in sorted(used):
        back = path_between(graph, judge, "safetydrift.context")
        assert back is None, "judge module used by a guard leads back to context: " + " -> ".join(back or [])


def test_guards_never_reach_context():
    """The guards take a ``Context`` as an argument; no guard module should need to import it."""
    graph = with_guard_registry(build_graph(SRC, top_level_only=False))
    for mod in sorted(m for m in graph if m.startswith("safetydrift.guards")):
        path = path_between(graph, mod, "safetydrift.context")
        assert path is None, " -> ".join(path or [])
