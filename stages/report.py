"""report stage: execute the papermill notebooks and render them to HTML under reports/.

Usage: python stages/report.py [--notebooks index ...]
Renders every notebooks/*.ipynb (index first) unless names are given; each page gets the
same parameters. A notebook that raises fails the stage (papermill re-raises the cell
error), so a report with an error cell is never written.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import ROOT, load_params

from landscape.io import write_text



def pages() -> list[str]:
    """Names of every notebook under notebooks/, ``index`` first."""
    names = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    return sorted(names, key=lambda n: n != "index")


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
    html, _ = exporter.from_notebook_node(notebook)
    out = ROOT / "reports" / f"{name}.html"
    write_text(out, html)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--notebooks", nargs="*", default=None, help="page names (default: every notebooks/*.ipynb)")
    args = parser.parse_args()
    params = load_params()
    for name in args.notebooks or pages():
        out = render(name, {"runs_dir": "runs", "params_file": "params.yaml", "profile": params.get("profile", "default")})
        print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
