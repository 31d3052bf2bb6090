"""Least privilege visible in the tree: relay/ and station/ never import each other,
core/ stays pure (no sockets, files, databases or servers), and no import cycle
(between modules, or between folders such as ledger/ and poller/)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mailbridge"
CORE_FORBIDDEN = {"socket", "sqlalchemy", "smtplib", "aiosmtplib", "imapclient", "starlette",
                  "uvicorn", "subprocess", "os", "pathlib", "asyncio", "httpx", "textual"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_nodes(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(absolute module, names imported from it) for every import in *path*, also those
    under ``if TYPE_CHECKING`` or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            yield base, [alias.name for alias in node.names]


def _imports(path: Path) -> set[str]:
    """Absolute module names imported by *path*, relative imports resolved."""
    return {base for base, _names in _import_nodes(path)}


def _module_graph() -> dict[str, set[str]]:
    """Each mailbridge module -> the mailbridge modules it imports (``from . import x``
    counts module ``x``)."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        targets = set()
        for base, names in _import_nodes(path):
            subs = {f"{base}.{n}" for n in names} & paths.keys()
            targets |= subs or ({base} & paths.keys())
        graph[name] = targets - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one node (Tarjan), each sorted."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in order:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], order[nxt])
        if low[node] == order[node]:
            group = [stack.pop()]
            while group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return found


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize(("folder", "forbidden"), [("relay", "mailbridge.station"),
                                                   ("station", "mailbridge.relay")])
def test_roles_do_not_import_each_other(folder: str, forbidden: str) -> None:
    modules = _modules(folder)
    assert modules
    for path in modules:
        bad = {name for name in _imports(path) if name.startswith(forbidden)}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_core_is_pure() -> None:
    modules = _modules("core")
    assert len(modules) >= 3
    for path in modules:
        bad = {n for n in _imports(path) if n.split(".")[0] in CORE_FORBIDDEN
               or n.startswith(("mailbridge.relay", "mailbridge.station", "mailbridge.config"))}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_the_resolver_sees_relative_imports() -> None:
    names = _imports(PACKAGE / "relay" / "admin.py")
    assert "mailbridge.config" in names and "mailbridge.relay.store" in names


# Folders that only group others: each of their modules is a unit of its own. Any other
# folder (ledger/, poller/, tui/, relay/, core/) is one unit.
GROUPING = ("mailbridge", "mailbridge.station")


def _folder(module: str) -> str:
    package = module.rpartition(".")[0]
    return module if package in GROUPING or module in GROUPING else package


def test_no_import_cycle_between_modules() -> None:
    graph = _module_graph()
    assert "mailbridge.station.ledger.linking" in graph["mailbridge.station.ledger.store"]
    assert "mailbridge.station.tui.strings" in graph["mailbridge.station.tui.app"]  # from . import
    assert _cycles(graph) == []


def test_no_import_cycle_between_folders() -> None:
    folders: dict[str, set[str]] = {}
    for module, targets in _module_graph().items():
        folders.setdefault(_folder(module), set()).update(_folder(t) for t in targets)
    for folder, targets in folders.items():
        targets.discard(folder)
    assert "mailbridge.station.ledger" in folders["mailbridge.station.poller"]
    assert _cycles(folders) == []


def test_cycles_are_found() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
