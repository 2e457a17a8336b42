"""The house rules, read from the code itself (docs/design.md draws the same picture).

Every import counts: at module level, under `TYPE_CHECKING` and inside functions. The rules:
no import circle; layers import downward only; the two applications never import each other;
providers know neither the engine nor the store; no module over 600 lines; no code reaches
into another object's private attributes (`other._x`: only `self._x` and `cls._x`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import fanout

SRC = Path(fanout.__file__).parent
MAX_LINES = 600

#: top to bottom: a module may import modules of its own layer and of the layers below
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("public API and front ends", ("fanout", "fanout.__main__", "fanout.cli", "fanout.server",
                                   "fanout.service", "fanout.sim_server", "fanout.sim_wire")),
    ("applications", ("fanout.batch", "fanout.canvas", "fanout.report")),
    ("launch", ("fanout.launch", "fanout.api", "fanout.executor")),
    ("configuration", ("fanout.config",)),
    ("engine", ("fanout.engine", "fanout.backends")),
    ("store, providers, agents", ("fanout.store", "fanout.providers", "fanout.agents")),
    ("plain data", ("fanout.tasks", "fanout.errors", "fanout.paths", "fanout.prompts",
                    "fanout.yamlcheck")),
]  # fmt: skip

#: pairs that may not import each other even where the layers would allow it
APART = [
    ("fanout.batch", "fanout.canvas"),
    ("fanout.canvas", "fanout.batch"),
    ("fanout.providers", "fanout.store"),
    ("fanout.store", "fanout.providers"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def imports_of(name: str) -> Iterator[tuple[str, int]]:
    """(imported fanout module, line) for every import in module `name`."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "fanout":
                    yield _known(alias.name), node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[: len(up) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            if base.split(".")[0] != "fanout":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub if sub in MODULES else _known(base)), node.lineno


def _known(name: str) -> str:
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


GRAPH: dict[str, set[str]] = {
    m: {dep for dep, _ in imports_of(m) if dep != m} for m in MODULES
}  # fmt: skip


def layer_of(name: str) -> int:
    best: tuple[int, int] | None = None  # (prefix length, layer): the longest prefix wins
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            matches = name == p or (p != "fanout" and name.startswith(p + "."))
            if matches and (best is None or len(p) > best[0]):
                best = (len(p), i)
    if best is None:
        raise AssertionError(f"{name} is in no layer: add it to LAYERS in {__file__}")
    return best[1]


def test_every_module_has_a_layer() -> None:
    for name in MODULES:
        layer_of(name)


def find_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

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
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def wrong_imports(name: str, deps: list[tuple[str, int]]) -> list[str]:
    """The imports of module `name` that go up a layer or join two modules kept apart."""
    out = []
    mine = layer_of(name)
    for dep, line in deps:
        if dep == name:
            continue
        theirs = layer_of(dep)
        if theirs < mine:
            out.append(f"{name}:{line} ({LAYERS[mine][0]}) imports {dep} ({LAYERS[theirs][0]})")
        for a, b in APART:
            if _under(name, a) and _under(dep, b):
                out.append(f"{name}:{line}: {a} may not import {b}")
    return out


def test_no_import_circle() -> None:
    assert find_circles(GRAPH) == []


def test_layers_import_downward_only() -> None:
    assert [w for name in MODULES for w in wrong_imports(name, list(imports_of(name)))] == []


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_small(name: str) -> None:
    lines = MODULES[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{name}: {lines} lines; split it along a seam"


def test_no_reaching_into_another_objects_private_attributes() -> None:
    found = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                found.append(f"{path.relative_to(SRC.parent)}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def test_the_rules_catch_what_they_forbid() -> None:
    """The checks can fail: a made-up circle, upward import and crossing are found."""
    assert find_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_circles({"a": {"b"}, "b": set()}) == []
    assert wrong_imports("fanout.engine.plan", [("fanout.cli.app", 3)]) == [
        "fanout.engine.plan:3 (engine) imports fanout.cli.app (public API and front ends)"
    ]
    assert wrong_imports("fanout.providers.sim", [("fanout.store.base", 7)]) == [
        "fanout.providers.sim:7: fanout.providers may not import fanout.store"
    ]
    assert wrong_imports("fanout.cli.app", [("fanout.engine.plan", 3)]) == []
