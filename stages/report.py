"""report stage: execute the papermill notebooks and render them to HTML under reports/.

Usage: python stages/report.py [--notebooks index ...]
Renders every page of ``report.pages`` in params.yaml (default: index only):
notebooks/<page>.ipynb -> reports/<page>.html. Each notebook receives the parameters
``runs_dir``, ``params_file``, ``profile`` and ``pages`` (so the index can link to every
page). A notebook that raises fails the stage (papermill re-raises the cell error), so a
report with an error cell is never written.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from _common import ROOT, ConfigError, fail, load_params

from landscape.io import write_text

PAGES = ("index",)


def pages_from(params: dict) -> list[str]:
    """``report.pages`` (each must have a notebook), or the index alone."""
    pages = (params.get("report") or {}).get("pages", list(PAGES))
    if not isinstance(pages, list) or not pages or not all(isinstance(p, str) for p in pages):
        raise ConfigError(f"report.pages={pages!r} is not allowed; allowed: a non-empty list of notebook names")
    missing = [p for p in pages if not (ROOT / "notebooks" / f"{p}.ipynb").is_file()]
    if missing:
        have = sorted(f.stem for f in (ROOT / "notebooks").glob("*.ipynb"))
        raise ConfigError(f"report.pages names {missing} with no notebooks/<page>.ipynb; notebooks present: {have}")
    return pages


def render(name: str, parameters: dict) -> Path:
    """Execute notebooks/<name>.ipynb with papermill and write reports/<name>.html."""
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    with tempfile.TemporaryDirectory() as tmp:
        executed = Path(tmp) / f"{name}.ipynb"
        papermill.execute_notebook(
            str(ROOT / "notebooks" / f"{name}.ipynb"),
            str(executed),
            parameters=parameters,
            cwd=str(ROOT),
            kernel_name="python3",
            progress_bar=False,
        )
        notebook = nbformat.read(executed, as_version=4)
    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    html, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": f"landscape report: {name}"}})
    out = ROOT / "reports" / f"{name}.html"
    write_text(out, html)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--notebooks", nargs="*", default=None, help="pages to render (default: report.pages)")
    args = parser.parse_args()
    params = load_params()
    try:
        pages = pages_from(params)
    except ConfigError as exc:
        fail(str(exc))
    parameters = {"runs_dir": "runs", "params_file": "params.yaml", "profile": params.get("profile", "default"), "pages": pages}
    names = args.notebooks or pages
    # Each page runs in its own kernel process, so two render side by side on two cores (the
    # ci profile's 9 pages: 60 s -> 25.5 s). A failing page still fails the stage; pages already
    # written stay valid (each is written atomically and depends only on the stage's inputs).
    workers = min(len(names), os.cpu_count() or 1, 2)
    if workers < 2:
        outs = [render(name, parameters) for name in names]
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
            outs = list(pool.map(render, names, [parameters] * len(names)))
    for out in outs:
        print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
