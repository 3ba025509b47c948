"""The layout shows the architecture: no import cycles between packages, and a domain without a web framework.

Imports are read with `ast` (nothing is imported). A "package" is a top-level name under `callserver/`
(`callserver/calls/…` is `calls`, `callserver/hours.py` is `hours`); imports inside
`if TYPE_CHECKING:` count too, since a cycle there is still a cycle in the design.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "callserver"
# The domain: what a call, a chat, an operator, a site and an order are. Transport and media adapt to it.
DOMAIN = {"calls", "chats", "operators", "sites", "conversations", "orders"}
FRAMEWORKS = {"aiohttp", "aiortc"}


def _unit(module: str) -> str | None:
    """`callserver.calls.switchboard` → `calls`; None for anything outside callserver."""
    parts = module.split(".")
    return parts[1] if parts[0] == "callserver" and len(parts) > 1 else None


def _module_of(path: Path) -> str:
    relative = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> Iterator[str]:
    """Every module `path` imports, as absolute names (`from callserver import sites`: `callserver.sites`)."""
    module = _module_of(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            yield source
            yield from (f"{source}.{alias.name}" for alias in node.names)


def _sources() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "migrations" not in p.parts)


def _exists(unit: str) -> bool:
    """Whether `unit` is a package or module of callserver (not a name imported from `callserver`)."""
    return (ROOT / unit).is_dir() or (ROOT / f"{unit}.py").exists()


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in _sources():
        unit = _unit(_module_of(path))
        if unit is None:
            continue
        edges = graph.setdefault(unit, set())
        for imported in _imports(path):
            target = _unit(imported)
            if target is not None and target != unit and _exists(target):
                edges.add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_finder_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_packages() -> None:
    graph = package_graph()
    assert {"calls", "sites", "operators", "web", "signaling"} <= graph.keys()  # the reader works
    found = cycles(graph)
    detail = {" ↔ ".join(c): {u: sorted(graph[u] & set(c)) for u in c} for c in found}
    assert not found, f"packages that import each other: {detail}"


def test_the_domain_imports_neither_aiohttp_nor_aiortc() -> None:
    offenders = []
    for path in _sources():
        if _unit(_module_of(path)) in DOMAIN:
            for imported in _imports(path):
                if imported.split(".")[0] in FRAMEWORKS:
                    offenders.append(f"{path.relative_to(ROOT.parent)}: {imported}")
    assert not offenders, offenders
