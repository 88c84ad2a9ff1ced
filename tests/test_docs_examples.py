"""Every code example of the documentation runs.

The fenced ``python`` blocks of each page under ``docs/`` run in order in one namespace per
page (a later block sees what an earlier one defined), in a temporary working directory.
The examples carry their own checks (``assert`` against closed forms or known values), so
a page passes only when its claims hold. Shell blocks (``bash``, ``console``, ``sh``) show
commands of ``make`` and the pipeline and are not run here; a fence in any other language
than the ones listed is an error, so an example cannot be skipped by its label.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
RUN = {"python", "py"}
NOT_RUN = {"bash", "console", "sh", "shell", "text", "yaml", "json"}
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)$")


def fenced_blocks(text: str) -> list[tuple[str, int, str]]:
    """``(language, first line number, code)`` of every fenced block of a Markdown text."""
    blocks = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m.group("indent"), m.group("fence")
        info = m.group("info").strip()
        lang = info.split()[0].lstrip(".{").rstrip("}") if info else ""
        start = i + 1
        j = start
        while j < len(lines) and not re.match(rf"^{re.escape(indent)}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", lines[j]):
            j += 1
        if j == len(lines):
            raise ValueError(f"unclosed code fence at line {i + 1}")
        body = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[start:j])
        blocks.append((lang, start + 1, body))
        i = j + 1
    return blocks


PAGES = sorted(DOCS.rglob("*.md"))
PAGES_WITH_CODE = [p for p in PAGES if any(lang in RUN for lang, _, _ in fenced_blocks(p.read_text(encoding="utf-8")))]


def test_the_docs_are_found():
    names = {p.relative_to(DOCS).as_posix() for p in PAGES_WITH_CODE}
    assert {"quickstart.md", "cli.md", "bounds/kl.md", "probes/scans.md", "probes/trajectory.md", "howto/own-model.md"} <= names


def test_fences_parse():
    text = "a\n```python\nx = 1\n```\n\n  ~~~~bash\n  make docs\n  ~~~~\n```python title=\"t\"\ny = 2\n```\n"
    assert fenced_blocks(text) == [("python", 3, "x = 1"), ("bash", 7, "make docs"), ("python", 10, "y = 2")]
    with pytest.raises(ValueError, match="unclosed code fence at line 2"):
        fenced_blocks("a\n```python\nx = 1\n")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_every_fence_has_a_known_language(page: Path):
    for lang, line, _ in fenced_blocks(page.read_text(encoding="utf-8")):
        assert lang in RUN | NOT_RUN, f"{page.name}:{line}: fence language {lang!r}; run: {sorted(RUN)}, shown only: {sorted(NOT_RUN)}"


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    for lang, line, code in fenced_blocks(page.read_text(encoding="utf-8")):
        if lang not in RUN:
            continue
        # padded so that a traceback names the page and its line
        exec(compile("\n" * (line - 1) + code, str(page.relative_to(DOCS.parent)), "exec"), namespace)  # noqa: S102
