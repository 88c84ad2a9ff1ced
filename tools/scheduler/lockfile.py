"""Write the lock entries of committed stages into dvc.lock by splicing text, in DVC's own format.

DVC's ``Lockfile.dump_stages`` parses the whole dvc.lock with ruamel's round-trip loader and
dumps it again, for any number of changed entries: 12.3 s per write on the default profile's
1.8 MB lock (7.7 s parse, 4.6 s dump; measured on a 2-core Intel Xeon), which was most of the
coordinator's own time (profiled: README, the test suite's status). DVC writes block-style YAML in which
every line at indent 2 under ``stages:`` starts one entry; an entry's text depends on that
entry alone. So :func:`record` serialises each changed entry with DVC's serializer and
dumper, replaces that entry's lines (or appends them, as ``dict.update`` orders a new key) and
leaves every other byte as it was: the file equals DVC's rewrite byte for byte
(tests/tools/test_lockfile.py checks it against ``dump_stages`` on a built lock).

Objects shared inside an entry (a params.yaml anchor) are written as anchors and aliases,
which ruamel numbers through the whole document: :func:`renumber_anchors` numbers the spliced
file's the same way. A lock that is not in that shape (absent, another top-level key, a
hand-edited entry whose key cannot be read back, a duplicated key, an alias to another entry)
or entries that share an object with each other are written by DVC's ``dump_stages`` instead. The new
file replaces the old one atomically (a temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # dvc ships no type information
    from dvc.stage import Stage

HEADER = "schema: '2.0'\nstages:\n"
"""How DVC's dumper begins a lock file (the schema key first, then the entries)."""


def _entry_text(name: str, data: dict[str, Any]) -> str:
    """One entry's lines exactly as DVC's dumper writes them inside ``stages:`` (indent 2)."""
    from dvc.utils.serialize._yaml import dumps_yaml

    text = dumps_yaml({"stages": {name: data}})
    if not text.startswith("stages:\n  "):
        raise ValueError(f"unexpected lock text for entry {name!r}: {text[:80]!r}")
    return text[len("stages:\n"):]


def split_entries(text: str) -> list[tuple[str, str]] | None:
    """``[(name, entry text), ...]`` of a lock written by DVC, in file order; None if not that shape.

    An entry starts at a line indented by exactly two spaces (block YAML puts every deeper
    line, folded scalars included, further right) and runs to the next such line.
    """
    import yaml

    if not text.startswith(HEADER):
        return None
    starts: list[int] = []
    lines = text[len(HEADER):].splitlines(keepends=True)
    for i, line in enumerate(lines):
        if not line.startswith("  "):
            return None  # another top-level key (or a blank line): not a lock DVC wrote with entries only
        if line[2] != " ":
            starts.append(i)
    if not starts or starts[0] != 0:
        return None
    key_lines = [lines[i].rstrip("\n") for i in starts]
    if not all(line.endswith(":") for line in key_lines):
        return None  # a key with its value on the same line: not DVC's shape
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        keys = yaml.load("".join(f"{line[2:]} 0\n" for line in key_lines), Loader=loader)
    except yaml.YAMLError:
        return None
    if not isinstance(keys, dict) or len(keys) != len(starts) or not all(isinstance(k, str) for k in keys):
        return None  # a key that does not read back, or one that appears twice
    bounds = [*starts, len(lines)]
    return [(name, "".join(lines[bounds[j]:bounds[j + 1]])) for j, name in enumerate(keys)]


# ruamel's anchors and aliases of shared objects (``model: &id001`` ... ``model: *id001``; an
# anchor on an empty flow collection keeps it on its line). Its serializer numbers them
# ``id001``, ``id002``, ... through the whole document, in the order of each object's
# second appearance (its first alias).
_ANCHOR = re.compile(r"(?<=: |- )([&*])id(\d+)(?= \{\}$| \[\]$|$)", re.MULTILINE)


def renumber_anchors(entry: str, first: int) -> tuple[str, int] | None:
    """``entry`` with its anchors numbered from ``first`` as ruamel numbers them, and the next number.

    None when an alias has no anchor before it in the entry (one shared across entries),
    an anchor is defined twice or never referred to: not what DVC's dumper writes per entry.
    """
    if "&id" not in entry and "*id" not in entry:  # most entries: nothing shared
        return entry, first
    defined: set[str] = set()
    number: dict[str, int] = {}
    for match in _ANCHOR.finditer(entry):
        kind, name = match.groups()
        if kind == "&":
            if name in defined:
                return None
            defined.add(name)
        elif name not in defined:
            return None
        else:
            number.setdefault(name, first + len(number))
    if defined != set(number):
        return None
    if not number:
        return entry, first
    return _ANCHOR.sub(lambda m: f"{m.group(1)}id{number[m.group(2)]:03d}", entry), first + len(number)


def splice(text: str, entries: dict[str, str]) -> tuple[str, bool] | None:
    """``text`` with ``entries`` (name -> entry text) replaced or appended, and whether anything changed.

    None when ``text`` is not a lock in DVC's shape (:func:`split_entries`).
    """
    parts = split_entries(text)
    if parts is None:
        return None
    local: dict[str, str] = {}  # anchors numbered from 1 in each entry: to compare, and to move
    fresh: dict[str, str] = {}
    for into, items in ((local, parts), (fresh, list(entries.items()))):
        for name, entry in items:
            numbered = renumber_anchors(entry, 1)
            if numbered is None:
                return None
            into[name] = numbered[0]
    changed = any(local.get(name) != entry for name, entry in fresh.items())
    local.update(fresh)  # as DVC's data["stages"].update: an existing entry keeps its place
    out, next_anchor = [], 1
    for entry in local.values():  # numbered through the document, as one dump numbers them
        numbered = renumber_anchors(entry, next_anchor)
        assert numbered is not None  # each was read back above
        out.append(numbered[0])
        next_anchor = numbered[1]
    return HEADER + "".join(out), changed


def _shares_objects(entries: list[Any]) -> bool:
    """Whether two of ``entries`` hold the same dict or list object (ruamel would alias it across them)."""
    owner: dict[int, int] = {}
    for index, entry in enumerate(entries):
        stack = [entry]
        while stack:
            obj = stack.pop()
            if isinstance(obj, (dict, list)):
                if owner.setdefault(id(obj), index) != index:
                    return True
                stack.extend(obj.values() if isinstance(obj, dict) else obj)
    return False


def _write_atomically(path: Path, text: str) -> None:
    """``text`` into ``path`` by a temporary file and ``os.replace``, keeping ``path``'s permission bits."""
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.chmod(tmp, mode)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record(stages: list[Stage]) -> str:
    """Write the lock entries of saved and committed ``stages``; returns how (``spliced`` or ``dvc``).

    Stages of one ``dvc.yaml`` (the scheduler's case); a lock not in DVC's shape goes through
    ``dump_stages``. Call with DVC's repo lock held, as the scheduler does.
    """
    if not stages:
        return "spliced"
    from dvc.stage import serialize

    dvcfile = stages[0].dvcfile
    if any(stage.dvcfile.path != dvcfile.path for stage in stages):
        raise ValueError(f"record takes the stages of one dvc.yaml, got {sorted({s.dvcfile.path for s in stages})}")
    lock_path = Path(dvcfile._lockfile.path)  # DVC's own name for <dvc.yaml>.lock
    data = {name: entry for stage in stages for name, entry in serialize.to_lockfile(stage).items()}
    entries = {name: _entry_text(name, entry) for name, entry in data.items()}
    shared = _shares_objects(list(data.values()))  # one dump would alias them across entries
    spliced = None if shared or not lock_path.is_file() else splice(lock_path.read_text(encoding="utf-8"), entries)
    if spliced is None:
        dvcfile.dump_stages(stages, update_pipeline=False)
        return "dvc"
    text, changed = spliced
    if changed:
        _write_atomically(lock_path, text)
        stages[0].repo.scm_context.track_file(dvcfile._lockfile.relpath)  # as dump_stages does
    return "spliced"
