"""Rendered report pages carry their figures: every figure holds an image, and every page
whose notebook draws shows at least one.

:func:`assert_pages_have_data` checks a rendered ``reports/`` directory against its
``notebooks/`` (the end-to-end pipeline test calls it on the ci profile's report); the unit
tests below run it on small synthetic pages.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

__all__ = ["assert_pages_have_data", "page_figures", "notebook_draws"]

_DRAWS = re.compile(r"\bplt\.(show|subplots|figure)\(|\.savefig\(")
_SVG_SHAPES = {"path", "rect", "circle", "ellipse", "line", "polyline", "polygon", "text", "image", "use"}


class _Figures(HTMLParser):
    """Collects the figures of one page: ``<img>`` sources and the shape count of each inline ``<svg>``."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.svgs: list[int] = []
        self._svg_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        elif tag == "svg":
            if self._svg_depth == 0:
                self.svgs.append(0)
            self._svg_depth += 1
        elif self._svg_depth and tag in _SVG_SHAPES:
            self.svgs[-1] += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag == "svg":
            self._svg_depth -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg" and self._svg_depth:
            self._svg_depth -= 1


def _image_problem(src: str) -> str | None:
    """Why an ``<img>`` source is not a drawn figure (None when it is one)."""
    if src.startswith("data:image/svg+xml"):
        payload = src.split(",", 1)[1] if "," in src else ""
        text = base64.b64decode(payload).decode("utf-8", "replace") if ";base64" in src.split(",", 1)[0] else payload
        return None if any(f"<{s}" in text for s in _SVG_SHAPES) else "an SVG image with no shapes"
    if not src.startswith("data:image/png;base64,"):
        return f"not an inline PNG or SVG image (src={src[:40]!r})"
    try:
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        return "a PNG whose base64 payload does not decode"
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return f"an empty or broken PNG ({len(data)} bytes)"
    import matplotlib.image as mpimg

    try:
        pixels = np.asarray(mpimg.imread(io.BytesIO(data), format="png"))
    except (ValueError, SyntaxError, OSError) as exc:
        return f"a PNG that does not decode ({exc})"
    if pixels.size == 0 or min(pixels.shape[:2]) == 0:
        return "a PNG of no pixels"
    if np.all(pixels == pixels.reshape(-1, *pixels.shape[2:])[0]):
        return "a blank PNG (every pixel the same)"
    return None


def page_figures(html: str) -> tuple[int, list[str]]:
    """``(number of figures, problems)`` of one rendered page: every ``<img>`` and inline ``<svg>``."""
    parser = _Figures()
    parser.feed(html)
    problems = [f"figure {i + 1} is {p}" for i, p in enumerate(_image_problem(src) for src in parser.images) if p]
    problems += [f"inline SVG {i + 1} has no shapes" for i, n in enumerate(parser.svgs) if n == 0]
    return len(parser.images) + len(parser.svgs), problems


def notebook_draws(notebook: Path) -> bool:
    """Whether a notebook's code draws a matplotlib figure."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return any(_DRAWS.search("".join(c["source"])) for c in cells if c["cell_type"] == "code")


def assert_pages_have_data(reports_dir: str | Path, notebooks_dir: str | Path) -> None:
    """Every ``<page>.html`` under ``reports_dir``: each figure is a non-empty image, and a page
    whose notebook (``notebooks_dir/<page>.ipynb``) draws has at least one figure.

    Raises:
        AssertionError: Naming each failing page and what is wrong with it.
    """
    pages = sorted(Path(reports_dir).glob("*.html"))
    assert pages, f"no rendered page (*.html) in {reports_dir}"
    failures = []
    for page in pages:
        count, problems = page_figures(page.read_text(encoding="utf-8"))
        notebook = Path(notebooks_dir) / f"{page.stem}.ipynb"
        if count == 0 and notebook.is_file() and notebook_draws(notebook):
            problems.append(f"no figure, but {notebook.name} draws one")
        failures += [f"{page.name}: {p}" for p in problems]
    assert not failures, "report pages without their data:\n" + "\n".join(failures)


# ------------------------------------------------------------------ unit tests on synthetic pages


def _png(blank: bool = False) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1), dpi=20)
    if blank:
        ax.set_axis_off()
    else:
        ax.plot([0, 1], [0, 1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _page(*figures: str) -> str:
    body = "".join(f'<div class="jp-RenderedImage"><img src="{src}"/></div>' for src in figures)
    return f"<html><head><style>.x{{background:url(data:image/svg+xml;base64,AAAA)}}</style></head><body>{body}</body></html>"


def _notebook(draws: bool) -> str:
    code = "fig, ax = plt.subplots()\nplt.show()" if draws else "display(Markdown('text'))"
    return json.dumps({"cells": [{"cell_type": "code", "source": [code], "metadata": {}, "outputs": []}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


@pytest.fixture
def site(tmp_path):
    reports, notebooks = tmp_path / "reports", tmp_path / "notebooks"
    reports.mkdir()
    notebooks.mkdir()
    for name, draws in (("good", True), ("text", False)):
        (notebooks / f"{name}.ipynb").write_text(_notebook(draws))
    (reports / "good.html").write_text(_page(_png()))
    (reports / "text.html").write_text(_page())
    return reports, notebooks


def test_good_pages_pass(site):
    assert_pages_have_data(*site)
    svg = "<svg><path d='M0 0L1 1'/></svg>"
    assert page_figures(f"<body>{svg}</body>") == (1, [])


def test_an_empty_image_fails_naming_the_page(site):
    reports, notebooks = site
    (notebooks / "bad.ipynb").write_text(_notebook(True))
    (reports / "bad.html").write_text(_page(_png(), "data:image/png;base64,"))
    with pytest.raises(AssertionError, match=r"bad\.html: figure 2 is an empty or broken PNG \(0 bytes\)") as err:
        assert_pages_have_data(reports, notebooks)
    assert "good.html" not in str(err.value)


def test_a_blank_image_fails(site):
    reports, notebooks = site
    (reports / "good.html").write_text(_page(_png(blank=True)))
    with pytest.raises(AssertionError, match=r"good\.html: figure 1 is a blank PNG"):
        assert_pages_have_data(reports, notebooks)


def test_a_page_without_the_figure_its_notebook_draws_fails(site):
    reports, notebooks = site
    (reports / "good.html").write_text(_page())
    with pytest.raises(AssertionError, match=r"good\.html: no figure, but good\.ipynb draws one"):
        assert_pages_have_data(reports, notebooks)


def test_an_svg_without_shapes_fails(site):
    reports, notebooks = site
    (reports / "good.html").write_text("<body><svg width='10'></svg></body>")
    with pytest.raises(AssertionError, match=r"good\.html: inline SVG 1 has no shapes"):
        assert_pages_have_data(reports, notebooks)


def test_no_pages_at_all_fails(tmp_path):
    with pytest.raises(AssertionError, match="no rendered page"):
        assert_pages_have_data(tmp_path, tmp_path)
