"""Griffe extension of the docs build: two docstring conventions of this code base in Markdown.

* Sphinx roles (``:func:`trace```, ``:class:`~a.B```), which Markdown would print with
  their role markers, become inline code of the name as Sphinx shows it (``~`` keeps the
  last component); a literal-block ``::`` at the end of a paragraph becomes ``:``.
* Grouped entries of an ``Args:`` / ``Attributes:`` section (``xs, ys: Grid coordinates.``,
  the NumPy-style grouping, also wrapped over two lines) become one entry per name with the
  shared description, which is what Google-style parsers expect.

Only the text handed to the renderer changes; the source files are not edited.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|data|attr|meth|obj|exc|const):`(~?)([^`]+)`")
_LITERAL = re.compile(r"(?<=\S)::[ \t]*$", re.MULTILINE)


def render_roles(text: str) -> str:
    """``:role:`~a.b``` -> ```b```, ``:role:`a.b``` -> ```a.b```; a paragraph's trailing ``::`` -> ``:``."""

    def repl(match: re.Match[str]) -> str:
        name = match.group(2)
        return f"`{name.rpartition('.')[2] if match.group(1) else name}`"

    return _LITERAL.sub(":", _ROLE.sub(repl, text))


_SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Attributes|Other Parameters|Keyword Args):\s*$")
_GROUP = re.compile(r"^(\s+)([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)+)\s*:(\s.*|)$")
_OPEN_GROUP = re.compile(r"^(\s+)((?:[A-Za-z_]\w*\s*,\s*)+)$")


def split_grouped_entries(text: str) -> str:
    """One entry per name for the grouped entries of argument and attribute sections."""
    lines = text.split("\n")
    out: list[str] = []
    section_indent: int | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        head = _SECTION.match(line)
        if head:
            section_indent = len(head.group(1))
            out.append(line)
            i += 1
            continue
        if section_indent is not None and line.strip() and len(line) - len(line.lstrip()) <= section_indent:
            section_indent = None  # dedent: the section ended
        if section_indent is not None:
            opened = _OPEN_GROUP.match(line)
            if opened and i + 1 < len(lines):  # names wrapped onto the next line
                line = line.rstrip() + " " + lines[i + 1].strip()
                i += 1
            group = _GROUP.match(line)
            if group:
                indent, names, desc = group.group(1), group.group(2), group.group(3).strip()
                cont = []
                while i + 1 < len(lines) and lines[i + 1].strip() and len(lines[i + 1]) - len(lines[i + 1].lstrip()) > len(indent):
                    cont.append(lines[i + 1])
                    i += 1
                for name in (n.strip() for n in names.split(",")):
                    out.append(f"{indent}{name}: {desc}".rstrip())
                    out.extend(cont)
                i += 1
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


class SphinxRoles(griffe.Extension):
    """Rewrite every loaded docstring with :func:`render_roles` and :func:`split_grouped_entries`."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # noqa: ARG002  (griffe passes the loader and more)
        if obj.docstring is not None:
            obj.docstring.value = split_grouped_entries(render_roles(obj.docstring.value))
