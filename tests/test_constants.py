"""The constants module is a leaf: anything in the package may read it without a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import asyncclient._constants


def test_constants_import_nothing_from_the_package() -> None:
    """``_constants`` imports no module of asyncclient, so it can sit below every other one."""
    tree = ast.parse(Path(asyncclient._constants.__file__).read_text(encoding="utf-8"))
    imported = [
        node.module or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and (node.level > 0 or "asyncclient" in (node.module or ""))
    ]
    imported += [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name.startswith("asyncclient")
    ]
    assert imported == []
