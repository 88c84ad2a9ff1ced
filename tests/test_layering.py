"""The layering of the design holds in the code: methods know no pipeline, and no import circle.

Imports that must never exist (shared/DESIGN.md): methods -> pipeline, methods -> schema
(except the training and data configs), stats -> models or curvature operators, curvature ->
probes/bounds/training, anything under src/ -> stages or tools; and no circle anywhere.
Every import counts, lazy ones inside functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
METHODS = ("curvature", "probes", "bounds", "dynamics", "stats", "models", "data", "optim", "training")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:  # `from pkg import submodule` imports the submodule, not pkg's names
                names.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return names


GRAPH = {m: {i for i in _imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}


def _offenders(prefixes: tuple[str, ...], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> dict[str, list[str]]:
    out = {}
    for module, imported in GRAPH.items():
        if module.startswith(prefixes) and module not in allowed:
            bad = sorted(i for i in imported if i.startswith(forbidden))
            if bad:
                out[module] = bad
    return out


def test_the_import_graph_is_read():
    assert len(MODULES) > 80 and "landscape.pipeline.measure" in GRAPH["landscape.pipeline.validate"]


@pytest.mark.parametrize("package", METHODS)
def test_methods_never_import_the_pipeline_or_the_schema(package):
    prefixes = (f"landscape.{package}",)
    allowed = ("landscape.training.config", "landscape.data.config")  # a package's own settings
    assert _offenders(prefixes, ("landscape.pipeline", "landscape.schema"), allowed) == {}


def test_shared_core_modules_import_no_method_package():
    core = ("landscape.functional", "landscape.seeding", "landscape.io", "landscape.schema", "landscape.reproducibility")
    assert _offenders(core, tuple(f"landscape.{p}" for p in METHODS) + ("landscape.pipeline",)) == {}


def test_stats_never_import_models_or_curvature_operators():
    assert _offenders(("landscape.stats",), ("landscape.models", "landscape.curvature.operators")) == {}


def test_curvature_never_imports_probes_bounds_or_training():
    assert _offenders(("landscape.curvature",), ("landscape.probes", "landscape.bounds", "landscape.training")) == {}


def test_nothing_in_src_imports_stages_or_tools():
    bad = {m: sorted(i for i in _imports(p) if i.split(".")[0] in ("stages", "tools", "_common")) for m, p in MODULES.items()}
    assert {m: v for m, v in bad.items() if v} == {}


def test_no_import_circle():
    """Depth-first search for a cycle in the module graph (lazy imports included)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for module in sorted(GRAPH):
        if module not in state:
            cycle = visit(module)
            assert cycle is None, " -> ".join(cycle)


def test_no_module_over_800_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text(encoding="utf-8").splitlines())) > 800}
    assert long == {}
