"""MkDocs hooks of the documentation site (``mkdocs.yml: hooks``), run by ``make docs``.

Three things that must not be kept by hand:

* the API reference: one page per public package, generated from the package tree (every
  public submodule of the package, in file order), so a new module is documented without
  an edit here;
* the pipeline's stage table: generated from ``landscape.pipeline.dvcfile.generate`` on the
  committed ``params.yaml`` (the same function that writes ``dvc.yaml``);
* an offline site: MathJax is copied from the ``django-static-mathjax`` wheel into the
  built site, and every page is checked for scripts, stylesheets, fonts or images loaded
  from another host (any such reference is a warning, hence an error under ``--strict``).
"""

from __future__ import annotations

import html
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

log = logging.getLogger("mkdocs.hooks.landscape")

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "landscape"

API_PACKAGES: tuple[str, ...] = (
    "curvature", "probes", "bounds", "dynamics", "stats", "models", "data", "training", "optim",
    "functional", "seeding", "io", "schema", "cli",
)
"""The public packages and modules with an API page, in navigation order."""

STAGES_MARKER = "<!-- pipeline-stages -->"
MATHJAX_DIR = "assets/mathjax"
# attributes that make a browser fetch something: a script, a stylesheet, a font, an image, a frame
_FETCHING = re.compile(
    r"<(script|img|iframe|source|link)\b[^>]*?\b(src|href)\s*=\s*[\"']((?:https?:)?//[^\"']+)[\"'][^>]*>", re.IGNORECASE
)
_CSS_URL = re.compile(r"url\(\s*[\"']?((?:https?:)?//[^)\"']+)", re.IGNORECASE)


# ---------------------------------------------------------------------------- API pages


def public_submodules(package: str) -> list[str]:
    """Dotted names of the public submodules of ``landscape.<package>`` (files not starting
    with an underscore, subpackages included), in alphabetical order; [] for a module."""
    path = SRC / package
    if not path.is_dir():
        return []
    names = []
    for child in sorted(path.iterdir()):
        if child.name.startswith("_"):
            continue
        if child.suffix == ".py" or (child.is_dir() and (child / "__init__.py").is_file()):
            names.append(f"landscape.{package}.{child.stem}")
    return names


def api_page(package: str) -> str:
    """Markdown of one API page: the package docstring and curated names, then each submodule."""
    name = f"landscape.{package}"
    subs = public_submodules(package)
    lines = [f"# `{name}`", ""]
    if not subs:
        lines += [f"::: {name}", "    options:", "      show_root_heading: false", ""]
        return "\n".join(lines)
    lines += [
        f"::: {name}", "    options:", "      show_root_heading: false", "      members: false", "",
        "Modules on this page: " + ", ".join(f"[`{s.rpartition('.')[2]}`](#{s})" for s in subs) + ".", "",
    ]
    for sub in subs:
        lines += [f"::: {sub}", "    options:", "      heading_level: 2", ""]
    return "\n".join(lines)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for package in API_PACKAGES:
        files.append(File.generated(config, f"api/{package}.md", content=api_page(package)))
    return files


# ---------------------------------------------------------------------------- stage table


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        value = next(iter(value))
    return f"`{html.escape(str(value))}`"


def stage_table() -> str:
    """Markdown table of the stages ``dvc.yaml`` is generated with for the committed params."""
    from landscape.pipeline.dvcfile import generate
    from landscape.pipeline.layout import Layout
    from landscape.pipeline.params import load_params

    layout = Layout(REPO)
    stages = generate(load_params(layout.params_file), layout)["stages"]
    rows = ["| stage | one entry per | params it reads | outputs | metrics |", "|---|---|---|---|---|"]
    for name, spec in stages.items():
        body = spec.get("do", spec)
        if "matrix" in spec:
            per = " x ".join(spec["matrix"])
        elif "foreach" in spec:
            per = "data set"
        else:
            per = "(one)"
        params = "<br>".join(_cell(p) for p in body.get("params", [])) or "(none)"
        outs = "<br>".join(_cell(o) for o in body.get("outs", [])) or "(none)"
        metrics = "<br>".join(_cell(m) for m in body.get("metrics", [])) or "(none)"
        rows.append(f"| `{name}` | {per} | {params} | {outs} | {metrics} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:  # noqa: ARG001  (MkDocs passes these by name)
    if STAGES_MARKER in markdown:
        markdown = markdown.replace(STAGES_MARKER, stage_table())
    return markdown


# ---------------------------------------------------------------------------- offline site


def mathjax_source() -> Path:
    """The ``es5`` directory of MathJax 3 shipped by the ``django-static-mathjax`` wheel."""
    import mathjax  # django-static-mathjax: static files only, no Django import

    path = Path(mathjax.__file__).resolve().parent / "static" / "mathjax" / "es5"
    if not (path / "tex-svg-full.js").is_file():
        raise FileNotFoundError(f"MathJax not found at {path}; install the docs extras (make docs)")
    return path


def external_references(site_dir: Path) -> list[str]:
    """``file: url`` of every resource a built page or stylesheet would fetch from another host."""
    found = []
    for path in sorted(site_dir.rglob("*")):
        if path.suffix == ".html":
            text = path.read_text(encoding="utf-8", errors="replace")
            for match in _FETCHING.finditer(text):
                tag = match.group(0)
                if match.group(1).lower() == "link" and not re.search(r"rel\s*=\s*[\"']?(stylesheet|preload|icon|modulepreload)", tag):
                    continue  # a plain hyperlink-like <link> (canonical, alternate) fetches nothing
                found.append(f"{path.relative_to(site_dir)}: {match.group(3)}")
            for style in re.findall(r"<style[^>]*>(.*?)</style>", text, re.DOTALL | re.IGNORECASE):
                found += [f"{path.relative_to(site_dir)}: {u}" for u in _CSS_URL.findall(style)]
        elif path.suffix == ".css":
            found += [f"{path.relative_to(site_dir)}: {u}" for u in _CSS_URL.findall(path.read_text(encoding="utf-8", errors="replace"))]
    return found


def on_post_build(config: MkDocsConfig) -> None:
    site = Path(config.site_dir)
    target = site / MATHJAX_DIR
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(mathjax_source(), target)
    for ref in external_references(site):
        log.warning("the site loads a resource from another host (it must build and read offline): %s", ref)
