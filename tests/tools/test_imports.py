"""The repository tooling stays outside the science tree: nothing under src/ or stages/ imports tools/."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_nothing_under_src_or_stages_imports_tools():
    files = sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "stages").glob("*.py")])
    assert len(files) > 20
    offenders = {str(f.relative_to(ROOT)): sorted(m for m in _imported_modules(f) if m == "tools" or m.startswith("tools."))
                 for f in files}
    assert {f: m for f, m in offenders.items() if m} == {}

