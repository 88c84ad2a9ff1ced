"""report stage: execute the papermill notebooks and render them to HTML under reports/.

Usage: python stages/report.py [--notebooks index ...]

Renders every page of ``report.pages`` in params.yaml (default: index only):
notebooks/<page>.ipynb -> reports/<page>.html (``landscape.pipeline.report``). Each notebook
takes every input path from the pipeline's layout; a notebook that raises (a missing input
names its path and the stage that writes it) fails the stage, so a report with an error
cell is never written.
"""

import _common  # noqa: F401

from landscape.pipeline import report
from landscape.pipeline.cli import stage_main

if __name__ == "__main__":
    stage_main(report.run, __doc__, [("--notebooks", {"nargs": "*", "default": None, "help": "pages to render (default: report.pages)"})])
