"""The docs build's hooks: generated API pages and stage table, and the off-host resource check."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("mkdocs", reason="the docs extras (make docs installs them)")

from tools import mkdocs_hooks as hooks  # noqa: E402
from tools.griffe_roles import render_roles, split_grouped_entries  # noqa: E402


def test_every_public_module_gets_documented():
    page = hooks.api_page("curvature")
    assert "::: landscape.curvature.operators" in page and "::: landscape.curvature.lanczos" in page
    assert all(not line.startswith("::: landscape.curvature._") for line in page.splitlines())
    assert "::: landscape.io" in hooks.api_page("io") and hooks.public_submodules("io") == []
    assert "landscape.models._registry" not in hooks.api_page("models")


def test_stage_table_lists_every_generated_stage():
    from landscape.pipeline.dvcfile import generate
    from landscape.pipeline.layout import Layout
    from landscape.pipeline.params import load_params

    stages = generate(load_params(Layout().params_file))["stages"]
    table = hooks.stage_table()
    assert all(f"| `{name}` |" in table for name in stages)
    assert table.count("\n") == len(stages) + 1


def test_off_host_resources_are_found(tmp_path: Path):
    (tmp_path / "a.html").write_text(
        '<script src="https://cdn.example/x.js"></script><link rel="stylesheet" href="//fonts.example/css">'
        '<link rel="canonical" href="https://site.example/"><a href="https://example.org">a link</a>'
        '<img src="assets/local.png"><style>@import url(https://fonts.example/y.css);</style>'
    )
    (tmp_path / "b.css").write_text("@font-face { src: url('https://fonts.example/a.woff2') }")
    found = hooks.external_references(tmp_path)
    assert found == ["a.html: https://cdn.example/x.js", "a.html: //fonts.example/css", "a.html: https://fonts.example/y.css",
                     "b.css: https://fonts.example/a.woff2"]


def test_docstring_conventions_become_markdown():
    assert render_roles("see :func:`~landscape.curvature.trace` and :class:`HessianOperator`::") == (
        "see `trace` and `HessianOperator`:"
    )
    text = "Doc.\n\nArgs:\n    a: one.\n    xs, ys: grid\n        coordinates.\n    b, c,\n        d: wrapped.\n\nReturns:\n    x, y: kept.\n"
    assert split_grouped_entries(text) == (
        "Doc.\n\nArgs:\n    a: one.\n    xs: grid\n        coordinates.\n    ys: grid\n        coordinates.\n"
        "    b: wrapped.\n    c: wrapped.\n    d: wrapped.\n\nReturns:\n    x, y: kept.\n"
    )
