"""report stage: execute the papermill notebooks and render them to HTML under reports/.

Renders every page of ``report.pages`` in params.yaml (default: index only):
``notebooks/<page>.ipynb`` -> ``reports/<page>.html`` (:class:`~landscape.pipeline.layout.Layout`).
Each notebook receives the parameters ``root`` (the artifact tree it builds its
:class:`~landscape.pipeline.layout.Layout` on; the notebooks read every input through it and
:mod:`landscape.pipeline.tables`), ``profile`` and ``pages`` (so the index
can link to every page). A notebook that raises fails the stage (papermill re-raises the
cell error; a missing input names its path and the stage that writes it), so a report
with an error cell is never written.

Pages are self-contained and offline: formulas (``$...$``, ``$$...$$``, ``\\(...\\)``,
``\\[...\\]`` in markdown cells and markdown outputs) are converted to MathML when the page is
built (:func:`tex_to_mathml`, with ``latex2mathml``; browsers draw MathML natively), and the
template loads no script from a CDN (nbconvert's default pulls MathJax and require.js from
one, so every formula showed as raw TeX without a network). A formula the converter cannot
express stays visible as TeX in ``<code class="tex-unrendered">``, which the page tests reject.

The stage also writes ``reports/headline.json``: one key per section of headline tables
(:data:`HEADLINE_SECTIONS`: ``dense_check``, the dense-vs-estimator table, when the profile
has that stage), each a list of rows; :func:`write_headline` merges sections into the file.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from landscape.io import read_json, write_json, write_text
from landscape.pipeline.hypotheses import h1_headline_row
from landscape.pipeline.layout import Layout
from landscape.pipeline.parallel import map_forked
from landscape.schema import ConfigError

__all__ = ["PAGES", "HEADLINE_SECTIONS", "pages_from", "notebook_parameters", "tex_to_mathml", "offline_exporter", "NotebookKernel",
           "render", "headline_sections", "write_headline", "run"]

PAGES = ("index",)

# Two workers render side by side on two cores (the ci profile's 9 pages: 60 s -> 25.5 s); more
# buys nothing on the CPU machines. Each worker keeps one kernel for its pages (a kernel's start
# and the pages' imports cost about 1.4 s of CPU a page), reset to a fresh session before each.
_MAX_WORKERS = 2

# Run (silently, outside the history) in a kept kernel before each page: what a page can leave
# behind is cleared (user namespace and the prompt counter, figures, Matplotlib's rcParams as the
# rc file gave them, pandas' display options, sys.path, the once-per-location warning registry).
# Modules already imported stay: a page sees a fresh kernel with warm imports.
_RESET_KERNEL = """
def _landscape_reset():
    import sys, warnings
    ip = get_ipython()
    ip.reset(new_session=True)
    if "matplotlib" in sys.modules:
        import matplotlib, matplotlib.pyplot as plt
        plt.close("all")
        matplotlib.rc_file_defaults()
    if "pandas" in sys.modules:
        import pandas
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pandas.reset_option("^display\\.")
    ip._landscape_path = getattr(ip, "_landscape_path", None) or list(sys.path)
    sys.path[:] = ip._landscape_path
    warnings.filterwarnings("default", append=True)  # a no-op filter; adding it clears the registry
_landscape_reset()  # the reset also removed its own name
"""


def pages_from(params: Mapping[str, Any], layout: Layout) -> list[str]:
    """``report.pages`` (each must have a notebook), or the index alone.

    Raises:
        ConfigError: ``report.pages`` is not a non-empty list of names, or names a page
            with no notebook.
    """
    pages = (params.get("report") or {}).get("pages", list(PAGES))
    if not isinstance(pages, list) or not pages or not all(isinstance(p, str) for p in pages):
        raise ConfigError(f"report.pages={pages!r} is not allowed; allowed: a non-empty list of notebook names")
    missing = [p for p in pages if not layout.notebook(p).is_file()]
    if missing:
        have = sorted(f.stem for f in layout.notebooks_dir.glob("*.ipynb"))
        raise ConfigError(f"report.pages names {missing} with no notebooks/<page>.ipynb; notebooks present: {have}")
    return pages


def notebook_parameters(params: Mapping[str, Any], layout: Layout, pages: Sequence[str]) -> dict[str, Any]:
    """The papermill parameters every page receives."""
    return {"root": str(layout.root), "profile": params.get("profile", "default"), "pages": list(pages)}


_UNKNOWN_MACRO = re.compile(r">\\[A-Za-z]+<")  # latex2mathml passes a macro it does not know through as text
_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block extra_css -%}
<style type="text/css">
  math[display="block"] { display: block math; margin: 0.6em 0; }
  .jp-RenderedHTMLCommon table { table-layout: auto; max-width: 100%; }
  .jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th { white-space: normal; overflow-wrap: anywhere; }
  .jp-OutputArea-output { overflow-x: auto; }
</style>
{%- endblock extra_css -%}
"""


def tex_to_mathml(tex: str, display: bool = False) -> str:
    """A TeX formula as a MathML ``<math>`` element, or the TeX in ``<code class="tex-unrendered">``.

    Args:
        tex: The formula without its delimiters.
        display: Block (``$$...$$``) rather than inline math.
    """
    from html import escape

    from latex2mathml.converter import convert

    try:
        mathml = convert(tex, display="block" if display else "inline")
    except Exception:  # noqa: BLE001 - any converter failure leaves the TeX visible and flagged
        mathml = ""
    if not mathml or _UNKNOWN_MACRO.search(mathml):
        return f'<code class="tex-unrendered">{escape(tex)}</code>'
    # HTML parses <math> as MathML without the namespace; with it, nbconvert's heading anchors
    # (ElementTree) would rewrite the element to <ns0:math>, which no browser draws.
    return mathml.replace(' xmlns="http://www.w3.org/1998/Math/MathML"', "")


def offline_exporter() -> Any:
    """nbconvert's lab HTML exporter with formulas as MathML and no script from a network."""
    from jinja2 import DictLoader, pass_context
    from nbconvert import HTMLExporter
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    class _MathMLRenderer(IPythonRenderer):
        def inline_math(self, body: str) -> str:
            return tex_to_mathml(body)

        def block_math(self, body: str) -> str:
            return tex_to_mathml(body, display=True)

        def latex_environment(self, name: str, body: str) -> str:
            return tex_to_mathml(f"\\begin{{{name}}}{body}\\end{{{name}}}", display=True)

    class _OfflineHTMLExporter(HTMLExporter):
        @pass_context
        def markdown2html(self, context: Any, source: str) -> str:
            cell = context.get("cell", {})
            renderer = _MathMLRenderer(escape=False, attachments=cell.get("attachments", {}), embed_images=self.embed_images,
                                       anchor_link_text=self.anchor_link_text, exclude_anchor_links=self.exclude_anchor_links,
                                       **self.lexer_options)
            return str(MarkdownWithMath(renderer=renderer).render(source))

    exporter = _OfflineHTMLExporter(template_name="lab", extra_loaders=[DictLoader({"landscape_offline.html.j2": _OFFLINE_TEMPLATE})])
    exporter.template_file = "landscape_offline.html.j2"
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    return exporter


def _recording_manager() -> Any:
    """A ``KernelManager`` (not started) that keeps every client it hands out in ``clients``."""
    from jupyter_client.manager import KernelManager

    class RecordingKernelManager(KernelManager):
        clients: list[Any]

        def client(self, **kwargs: Any) -> Any:
            made = super().client(**kwargs)
            self.clients.append(made)
            return made

    manager = RecordingKernelManager(kernel_name="python3")
    manager.clients = []
    return manager


class NotebookKernel:
    """One Python kernel for several pages, started on first use, in ``cwd``.

    :meth:`fresh` resets it to a fresh session (:data:`_RESET_KERNEL`) and returns its kernel
    manager for papermill; :meth:`close_clients` then stops the channels of the client papermill
    opened on it (nbclient stops a client only when it owns the kernel, so each page would leave
    its sockets and channel threads open). Use as a context manager: the kernel is stopped on exit.
    """

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self._manager: Any = None

    def fresh(self) -> Any:
        """The started kernel's manager, its session reset; raises when the reset fails."""
        if self._manager is None:
            manager = _recording_manager()
            manager.start_kernel(cwd=str(self.cwd))
            self._manager = manager
        client = self._manager.client()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=60)
            reply = client.execute_interactive(_RESET_KERNEL, silent=True, store_history=False, timeout=60)
        finally:
            client.stop_channels()
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"resetting the report kernel failed: {reply['content'].get('ename')}: {reply['content'].get('evalue')}")
        return self._manager

    def clients(self) -> list[Any]:
        """Every client handed out on the kernel so far (the reset's and papermill's)."""
        return [] if self._manager is None else list(self._manager.clients)

    def close_clients(self) -> None:
        """Stop the channels of every client handed out on the kernel that still runs them."""
        for client in self.clients():
            if client.channels_running:
                client.stop_channels()

    def __enter__(self) -> NotebookKernel:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._manager is not None:
            self.close_clients()
            self._manager.shutdown_kernel(now=True)
            self._manager = None


def render(name: str, parameters: Mapping[str, Any], layout: Layout, kernel: NotebookKernel | None = None) -> Path:
    """Execute ``notebooks/<name>.ipynb`` with papermill and write ``reports/<name>.html``.

    ``kernel``: a kept kernel, reset to a fresh session first (default: a new kernel for this page).
    """
    import nbformat
    import papermill

    with tempfile.TemporaryDirectory() as tmp:
        executed = Path(tmp) / f"{name}.ipynb"
        try:
            papermill.execute_notebook(
                str(layout.notebook(name)),
                str(executed),
                parameters=dict(parameters),
                cwd=str(layout.root),
                kernel_name="python3",
                progress_bar=False,
                **({"km": kernel.fresh()} if kernel is not None else {}),
            )
        finally:
            if kernel is not None:
                kernel.close_clients()
        notebook = nbformat.read(executed, as_version=4)
    for cell in notebook.cells:  # papermill gives its parameters cell a random id, which the page would carry
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            cell["id"] = "injected-parameters"
    html, _ = offline_exporter().from_notebook_node(notebook, resources={"metadata": {"name": f"landscape report: {name}"}})
    out = layout.report(name)
    write_text(out, html)
    return out


def _dense_check_section(layout: Layout) -> list[dict[str, Any]]:
    from landscape.pipeline.tables import dense_check_results

    return list(dense_check_results(layout)["table"])


def _class_structure_section(layout: Layout) -> list[dict[str, Any]]:
    from landscape.pipeline.tables import class_structure_results

    res = class_structure_results(layout)
    return [*({"table": "spike_counts", **r} for r in res["spike_counts"]), *({"table": "diagonals", **r} for r in res["diagonals"])]


def _eos_section(layout: Layout) -> list[dict[str, Any]]:
    """One row per step size: the plateau's lambda_max * eta / 2 with its interval (Cohen et al. 2021: 1)."""
    from landscape.pipeline.tables import require

    metrics = read_json(require(layout.eos_metrics, "eos"))
    keys = ("lr", "status", "ratio", "ratio_ci", "plateau_points", "onset_step", "sharpening_factor")
    return [{k: row.get(k) for k in keys} for row in metrics["per_lr"].values()]


def _h3_section(layout: Layout) -> dict[str, Any]:
    """H3's dose-response test (primary seeds, Holm p), its replication and the verdict of the
    replication rule, Zhu et al.'s tr(H Sigma) against alignment, the per-arm escape rates,
    power and the start points' loss and gradient norm."""
    from landscape.pipeline.tables import require

    results = read_json(require(layout.results("hypotheses"), "hypotheses"))
    missing: dict[str, Any] = {"status": "not tested: no H3 member in the results"}
    entry: dict[str, Any] = next((h for h in results["hypotheses"] if h["name"] == "H3"), missing)
    if entry.get("status") != "tested":
        return {"status": entry.get("status"), "verdict": entry.get("verdict", "not tested")}
    extra = entry["extra"]
    rep = extra.get("replication") or {}
    rep_extra = rep.get("extra") or {}
    return {
        "effect_name": entry["effect_name"], "effect": entry["effect"], "ci": [entry["ci_low"], entry["ci_high"]],
        "n": entry["n_runs"], "n_seeds": entry["n_groups"], "p": entry["p_value"], "p_holm": entry["p_holm"],
        "verdict": entry.get("verdict"), "replication": entry.get("replication") or {"status": extra.get("replication_status")},
        "zhu_trace_h_sigma": {"primary": extra.get("indicator"), "replication": rep_extra.get("indicator")},
        "logistic_escape_by_cap": {"primary": extra.get("logistic"), "replication": rep_extra.get("logistic")},
        "arms": extra.get("arms"), "start_points": extra.get("start_points"),
        "power": {"primary": extra.get("power"), "replication": rep_extra.get("power")},
    }


def _h1_section(layout: Layout) -> list[dict[str, Any]]:
    """H1's members (hypotheses/results.json): effect, interval, n, p and Holm p, the replication,
    the verdict, the literature power, and the train-loss range of the runs at the comparison point."""
    from landscape.pipeline.tables import require

    results = read_json(require(layout.results("hypotheses"), "hypotheses"))
    return [h1_headline_row(entry) for entry in results["hypotheses"] if entry["name"].startswith("H1")]


def _h2_section(layout: Layout) -> list[dict[str, Any]]:
    """H2's members (depth x skip interaction per measure, normalisation arm, barriers): effect, interval, n, p, Holm p,
    the replication's effect and interval, and the verdict of the replication rule."""
    from landscape.pipeline.tables import require

    results = read_json(require(layout.results("hypotheses"), "hypotheses"))
    rows = []
    for e in results["hypotheses"]:
        if not e["name"].startswith("H2"):
            continue
        if e["status"] != "tested":
            rows.append({"name": e["name"], "status": e["status"], "verdict": "not tested"})
            continue
        extra = e.get("extra") or {}
        rep, rule = extra.get("replication") or {}, extra.get("replication_rule") or {}
        rows.append({"name": e["name"], "status": "tested", "effect_name": e["effect_name"], "effect": e["effect"],
                     "ci": [e["ci_low"], e["ci_high"]], "n": e["n_runs"], "seeds": e["n_groups"], "p": e["p_value"],
                     "p_holm": e["p_holm"], "primary_supported": e["supported"],
                     "replication_effect": rep.get("effect"), "replication_ci": [rep.get("ci_low"), rep.get("ci_high")],
                     "replication_p": rep.get("p_value"), "replication_n": rep.get("n_runs"),
                     "verdict": rule.get("verdict", "inconclusive"), "verdict_reason": rule.get("reason"),
                     "power": (extra.get("power") or {}).get("power"),
                     "adjusted_for_train_loss": (extra.get("adjusted") or {}).get("estimate")})
    return rows


def _h4_section(layout: Layout) -> list[dict[str, Any]]:
    """H4's test with its replication, every arm's and baseline's bound per (run, seed), the random-label control."""
    from landscape.pipeline.bounds_summary import headline_rows

    return headline_rows(layout)


HEADLINE_SECTIONS = {
    "h1": _h1_section,
    "h2": _h2_section,
    "h3": _h3_section,
    "h4": _h4_section,
    "eos": _eos_section,
    "dense_check": _dense_check_section,
    "class_structure": _class_structure_section,
}
"""Section name of ``reports/headline.json`` -> reader of its rows; a section is written when its
params section is present (the reader then fails, naming the path, if its input is missing)."""

HEADLINE_PARAMS = {"h1": "hypotheses", "h2": "hypotheses", "h3": "hypotheses", "h4": "hypotheses"}
"""Sections written when another params section than their own name is present (their stage's)."""


def headline_sections(params: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
    """The headline sections of this profile (the params sections it has)."""
    return {name: read(layout) for name, read in HEADLINE_SECTIONS.items() if HEADLINE_PARAMS.get(name, name) in params}


def write_headline(layout: Layout, sections: Mapping[str, Any]) -> Path:
    """Merge ``sections`` into ``reports/headline.json`` (created if absent; other keys kept), atomically."""
    path = layout.headline
    current = read_json(path) if path.is_file() else {}
    if not isinstance(current, dict):
        raise ValueError(f"{path} must hold a JSON object of sections, got {type(current).__name__}")
    write_json(path, {**current, **sections})
    return path


def run(params: Mapping[str, Any], layout: Layout, notebooks: Sequence[str] | None = None) -> list[Path]:
    """Render ``notebooks`` (default: ``report.pages``), two pages at a time, each worker in one kept kernel
    and taking the next page when it is free.

    A failing page still fails the stage; pages already written stay valid (each is
    written atomically and depends only on the stage's inputs).
    """
    pages = pages_from(params, layout)
    parameters = notebook_parameters(params, layout, pages)
    names = list(notebooks or pages)
    workers = max(1, min(len(names), os.cpu_count() or 1, _MAX_WORKERS))
    taken = multiprocessing.get_context("fork").Value("i", 0)  # the next page, handed out to whichever worker is free

    def render_pages(_worker: int) -> list[tuple[int, Path]]:
        done: list[tuple[int, Path]] = []
        with NotebookKernel(layout.root) as kernel:
            while True:
                with taken.get_lock():
                    i, taken.value = taken.value, taken.value + 1
                if i >= len(names):
                    return done
                done.append((i, render(names[i], parameters, layout, kernel)))

    rendered = dict(pair for part in map_forked(render_pages, range(workers), workers=workers) for pair in part)
    outs = [rendered[i] for i in range(len(names))]
    for out in outs:
        print(f"wrote {layout.relative(out)}")
    print(f"wrote {layout.relative(write_headline(layout, headline_sections(params, layout)))}")
    return outs
