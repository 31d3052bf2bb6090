"""Least privilege visible in the tree: relay/ and station/ never import each other,
and core/ stays pure (no sockets, files, databases or servers)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mailbridge"
CORE_FORBIDDEN = {"socket", "sqlalchemy", "smtplib", "aiosmtplib", "imapclient", "starlette",
                  "uvicorn", "subprocess", "os", "pathlib", "asyncio", "httpx", "textual"}


def _imports(path: Path) -> set[str]:
    """Absolute module names imported by *path*, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
    return names


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
