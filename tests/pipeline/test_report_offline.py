"""Report pages are self-contained: formulas become MathML at build time and draw in headless
Chromium with no network, and a page requests nothing that is not a ``file://`` or ``data:`` URL.

The pages here are built by the report stage's exporter from small notebooks with outputs
(no kernel); the end-to-end test (test_dvc_pipeline.py) runs the same checks on every page of
the ci profile's report.
"""

from __future__ import annotations

import nbformat
import pytest
from browser import inspect_pages

from landscape.pipeline.report import offline_exporter, tex_to_mathml

_FORMULAS = r"Law $\|H\|_2 = A\,n^{\alpha} e^{\beta L}$, ratio $$\frac{\lambda_1 - \lambda_j}{\lambda_j - \lambda_k}$$ and $\mathrm{diag}(H)$ for \$5."


def _page(tmp_path, name: str, markdown: str, output_markdown: str = r"output with $\sigma^2$", extra_html: str = "") -> str:
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell(f"# Heading with $x_i^2$\n\n{markdown}"))
    cell = nbformat.v4.new_code_cell("display(Markdown(...))")
    data = {"text/markdown": output_markdown}
    cell.outputs = [nbformat.v4.new_output("display_data", data=data)]
    if extra_html:
        cell.outputs.append(nbformat.v4.new_output("display_data", data={"text/html": extra_html}))
    nb.cells.append(cell)
    html, _ = offline_exporter().from_notebook_node(nb, resources={"metadata": {"name": name}})
    (tmp_path / f"{name}.html").write_text(html, encoding="utf-8")
    return html


def test_formulas_become_mathml_and_the_page_loads_no_script(tmp_path):
    html = _page(tmp_path, "good", _FORMULAS)
    assert html.count("<math") == 5 and "tex-unrendered" not in html and "ns0:" not in html
    assert "<script" not in html and "mathjax" not in html.lower()  # nbconvert's default loads MathJax and require.js from a CDN
    assert "$5" in html  # an escaped dollar stays text
    assert tex_to_mathml(r"\frac{a}{b}", display=True).startswith('<math display="block">')


def test_a_formula_the_converter_cannot_draw_stays_visible_and_flagged():
    assert tex_to_mathml(r"\unknownmacro x") == r'<code class="tex-unrendered">\unknownmacro x</code>'


def test_pages_draw_their_math_offline_and_request_nothing_from_the_network(tmp_path):
    _page(tmp_path, "good", _FORMULAS)
    _page(tmp_path, "bad", r"an unknown macro $\unknownmacro x$", output_markdown="plain",
          extra_html='<img src="https://example.invalid/x.png"><p>raw $\\alpha$ left in HTML</p>')
    seen = inspect_pages([tmp_path / "good.html", tmp_path / "bad.html"])
    good, bad = seen["good.html"], seen["bad.html"]
    assert good["math"] == 5 and good["math_undrawn"] == [] and good["tex_unrendered"] == [] and good["raw_tex"] == []
    assert good["network"] == [], good["network"]
    assert bad["tex_unrendered"] == [r"\unknownmacro x"]
    assert bad["raw_tex"] == [r"$\alpha$"]
    assert bad["network"] == ["https://example.invalid/x.png"]
