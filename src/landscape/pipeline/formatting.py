"""Numbers, config names and tables as a reader of the report pages sees them.

* :func:`fmt`: a number with a few significant digits (``0.0523``, ``1.9``, ``4.3e+06`` ->
  ``4.34 x 10^6`` (with the multiplication sign)), integers with thousands separators, ``n/a`` for missing values; never a
  raw Python dump (``1.904661304027197``, ``1.39e-18``, ``seed 2.0``).
* :func:`fmt_ci`, :func:`fmt_list`: intervals and short lists in that style.
* :func:`config_key`, :func:`sort_configs`: configs in params order, or numerically
  (``b16 < b64 < b256 < b1024``, ``w32_d1 < w128_d1 < w512_d1``), not as strings.
* :func:`table_html`: a DataFrame as HTML that fits the page: every number formatted, cells
  that wrap, and wide tables split into column groups (index repeated), never truncated.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

import pandas as pd

__all__ = ["fmt", "fmt_int", "fmt_ci", "fmt_list", "config_key", "sort_configs", "format_frame", "table_html", "mean_sd_table",
           "run_key", "sort_runs"]

_TIMES = " \u00d7 "  # multiplication sign
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
_MISSING = "n/a"


def _missing(x: Any) -> bool:
    if x is None:
        return True
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def fmt_int(x: Any) -> str:
    """An integer (or integral float) with thousands separators: ``631000 -> "631,000"``, ``2.0 -> "2"``."""
    if _missing(x):
        return _MISSING
    return f"{round(float(x)):,}"


def fmt(x: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits, as a reader wants it.

    Integers (and integral floats of magnitude < 1e5) print whole with separators; other
    floats in ``[1e-3, 1e5)`` print plainly (``0.0523``, ``1.9``, ``12,300``); smaller or
    larger ones as ``1.39 x 10⁻¹⁸`` (multiplication sign); bools as ``yes``/``no``; None/NaN as ``n/a``; +-inf as ``∞``;
    anything else as ``str``.

    Args:
        x: The value.
        digits: Significant digits (>= 1).
    """
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 1:
        raise ValueError(f"digits must be an int >= 1, got {digits!r}")
    if isinstance(x, bool):
        return "yes" if x else "no"
    if _missing(x):
        return _MISSING
    if isinstance(x, numbers.Integral):
        return f"{int(x):,}"
    if not isinstance(x, numbers.Real):
        return str(x)
    v = float(x)
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if v == 0:
        return "0"
    if v.is_integer() and abs(v) < 1e5:
        return f"{int(v):,}"
    mag = abs(v)
    if 1e-3 <= mag < 1e5:
        text = f"{v:,.{digits}g}" if mag >= 1 else f"{v:.{digits}g}"
        return text if "e" not in text else f"{v:,.{max(0, digits - 1 - math.floor(math.log10(mag)))}f}"
    mantissa, exponent = f"{v:.{digits - 1}e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
    return f"{mantissa}{_TIMES}10{str(int(exponent)).translate(_SUPERSCRIPT)}"


def fmt_ci(low: Any, high: Any, digits: int = 3) -> str:
    """An interval ``[low, high]`` in :func:`fmt` style."""
    return f"[{fmt(low, digits)}, {fmt(high, digits)}]"


def fmt_list(values: Iterable[Any], digits: int = 3, sep: str = ", ") -> str:
    """Values in :func:`fmt` style joined by ``sep`` (no brackets); nested sequences become ``(a, b)``."""
    out = []
    for v in values:
        if isinstance(v, (list, tuple)):
            out.append("(" + fmt_list(v, digits) + ")")
        else:
            out.append(fmt(v, digits))
    return sep.join(out)


def config_key(name: str) -> tuple[Any, ...]:
    """Natural sort key: digit runs compare as numbers (``"b16" < "b64" < "b1024"``, ``"w32_d3" < "w128_d1"``)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(name)) if part)


def sort_configs(names: Iterable[str], order: Sequence[str] | Mapping[str, Any] | None = None) -> list[str]:
    """Config names in ``order`` (e.g. a group's ``configs`` in params.yaml), the rest numerically after them.

    Args:
        names: The names to sort (duplicates kept once).
        order: Preferred order (a sequence or a mapping's keys); None sorts numerically.
    """
    unique = list(dict.fromkeys(names))
    rank = {n: i for i, n in enumerate(order or ())}
    return sorted(unique, key=lambda n: (0, rank[n], ()) if n in rank else (1, 0, config_key(n)))


def format_frame(frame: pd.DataFrame, digits: int = 3, digits_by_column: Mapping[str, int] | None = None) -> pd.DataFrame:
    """A copy of ``frame`` with every cell as display text (:func:`fmt` for numbers, :func:`fmt_list` for lists)."""
    per = dict(digits_by_column or {})

    def cell(v: Any, d: int) -> str:
        if isinstance(v, (list, tuple)):
            return fmt_list(v, d)
        if isinstance(v, str):
            return v
        return fmt(v, d)

    out = frame.copy().astype(object)
    for col in out.columns:
        d = per.get(str(col), digits)
        out[col] = [cell(v, d) for v in frame[col]]
    if not isinstance(out.index, pd.RangeIndex):
        out.index = out.index.map(
            lambda v: v if isinstance(v, str) else (tuple(cell(x, digits) for x in v) if isinstance(v, tuple) else cell(v, digits)))
    return out


_TABLE_STYLE = ("<style>.landscape-table{border-collapse:collapse;margin:0.4em 0 1em 0;font-size:0.85em;max-width:100%}"
                ".landscape-table th,.landscape-table td{border:1px solid #ddd;padding:2px 6px;white-space:normal;"
                "overflow-wrap:anywhere;vertical-align:top;text-align:right}"
                ".landscape-table th{background:#f4f4f4;text-align:center}</style>")


def table_html(frame: pd.DataFrame, digits: int = 3, max_columns: int = 8, digits_by_column: Mapping[str, int] | None = None,
               caption: str | None = None) -> str:
    """A table that fits the page: formatted cells that wrap, split into groups of ``max_columns`` columns.

    Each group repeats the index (use ``set_index`` for the row labels). Nothing is truncated.

    Args:
        frame: The table.
        digits: Significant digits of numbers (:func:`fmt`).
        max_columns: Most data columns per group (>= 1).
        digits_by_column: Per-column overrides of ``digits``.
        caption: Optional caption over the first group (HTML-escaped).
    """
    if isinstance(max_columns, bool) or not isinstance(max_columns, int) or max_columns < 1:
        raise ValueError(f"max_columns must be an int >= 1, got {max_columns!r}")
    shown = format_frame(frame, digits, digits_by_column)
    show_index = not isinstance(frame.index, pd.RangeIndex)
    parts = [_TABLE_STYLE]
    if caption:
        parts.append(f"<p><b>{escape(caption)}</b></p>")
    columns = list(shown.columns)
    with pd.option_context("display.max_colwidth", None, "display.max_rows", None, "display.max_columns", None):  # no "..."
        for start in range(0, max(len(columns), 1), max_columns):
            chunk = shown[columns[start : start + max_columns]]
            parts.append(chunk.to_html(classes="landscape-table", index=show_index, escape=True, border=0, na_rep=_MISSING))
    return "\n".join(parts)


def mean_sd_table(frame: pd.DataFrame, by: str | Sequence[str], columns: Sequence[str], digits: int = 3) -> pd.DataFrame:
    """Per group (in order of appearance): ``"mean ± sd"`` of each column over its rows, and ``n``.

    A group with one finite value shows the value alone; one with none ``n/a``.

    Args:
        frame: One row per run.
        by: Group column(s) (e.g. ``"config"``), kept in the order they first appear.
        columns: Numeric columns to summarise.
        digits: Significant digits.
    """
    keys = [by] if isinstance(by, str) else list(by)
    rows = []
    for key, g in frame.groupby(keys, sort=False):
        row: dict[str, Any] = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        for col in columns:
            v = pd.to_numeric(g[col], errors="coerce").to_numpy(dtype=float)
            v = v[~pd.isna(v)]
            spread = f"{fmt(v.mean(), digits)} ± {fmt(v.std(ddof=1), 2)}" if v.size > 1 else ""
            row[col] = _MISSING if v.size == 0 else (fmt(v[0], digits) if v.size == 1 else spread)
        row["n"] = len(g)
        rows.append(row)
    return pd.DataFrame(rows).set_index(keys) if rows else pd.DataFrame(columns=[*keys, *columns, "n"]).set_index(keys)


def run_key(experiments: Mapping[str, Any]) -> Any:
    """Sort key of ``(experiment, config, seed, ...)`` tuples: params order of groups and configs, seeds numerically.

    Groups or configs missing from ``experiments`` go after the known ones, numerically sorted.
    """
    groups = {e: i for i, e in enumerate(experiments)}
    configs = {(e, c): i for e, spec in experiments.items() for i, c in enumerate((spec or {}).get("configs") or {})}

    def key(item: Sequence[Any]) -> tuple[Any, ...]:
        e, c, s = item[0], item[1], item[2]
        return (groups.get(e, len(groups)), config_key(e), configs.get((e, c), len(configs)), config_key(c), int(s))

    return key


def sort_runs(frame: pd.DataFrame, experiments: Mapping[str, Any]) -> pd.DataFrame:
    """Rows with experiment, config and seed columns in :func:`run_key` order (index reset)."""
    if frame.empty:
        return frame
    key = run_key(experiments)
    order = sorted(range(len(frame)), key=lambda i: key((frame["experiment"].iloc[i], frame["config"].iloc[i], frame["seed"].iloc[i])))
    return frame.iloc[order].reset_index(drop=True)
