"""Report formatting: numbers with sensible digits, numeric config order, tables that fit (no truncation)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from landscape.pipeline.formatting import config_key, fmt, fmt_ci, fmt_int, fmt_list, format_frame, sort_configs, table_html


@pytest.mark.parametrize(("value", "text"), [
    (1.904661304027197, "1.9"), (0.05, "0.05"), (0.052345, "0.0523"), (2.0, "2"), (np.float64(2.0), "2"), (np.int64(631000), "631,000"),
    (12345.678, "12,346"), (1.39e-18, "1.39 × 10⁻¹⁸"), (-4.34e6, "-4.34 × 10⁶"), (1e-3, "0.001"), (0.0, "0"),
    (None, "n/a"), (float("nan"), "n/a"), (math.inf, "∞"), (True, "yes"), ("tie", "tie"), (-0.00012, "-1.2 × 10⁻⁴"),
])
def test_fmt(value, text):
    assert fmt(value) == text


def test_fmt_helpers():
    assert fmt(1.904661304027197, 5) == "1.9047" and fmt_int(43018.0) == "43,018" and fmt_int(None) == "n/a"
    assert fmt_ci(0.12345, 0.5) == "[0.123, 0.5]"
    assert fmt_list([[0.05, 1, 1.904661304027197]]) == "(0.05, 1, 1.9)"
    with pytest.raises(ValueError, match="digits must be an int >= 1, got 0"):
        fmt(1.0, 0)


def test_configs_sort_numerically_or_in_params_order():
    names = ["b1024", "b16", "b256", "b64"]
    assert sort_configs(names) == ["b16", "b64", "b256", "b1024"]
    assert sorted(["w512_d1", "w32_d3", "w128_d1", "w32_d1"], key=config_key) == ["w32_d1", "w32_d3", "w128_d1", "w512_d1"]
    assert sort_configs(names + ["b16"], order={"b256": {}, "b16": {}}) == ["b256", "b16", "b64", "b1024"]


def test_tables_format_every_cell_split_wide_tables_and_never_truncate():
    long = "a description far longer than pandas' default column width of fifty characters, kept whole"
    frame = pd.DataFrame({"config": ["b1024", "b16"], "seed": [2.0, 0.0], "p": [1.39e-18, 0.5], "note": [long, "x"],
                          **{f"c{i}": [float(i), 1.0 / 3] for i in range(10)}}).set_index("config")
    shown = format_frame(frame)
    assert list(shown["seed"]) == ["2", "0"] and shown.loc["b1024", "p"] == "1.39 × 10⁻¹⁸"
    with pd.option_context("display.max_colwidth", 20):
        html = table_html(frame, max_columns=5)
    assert html.count("<table") == 3  # 13 columns in groups of 5
    assert html.count("<th>b1024</th>") == 3  # the index repeated in every group
    assert long in html and "..." not in html and "2.0" not in html and "0.3333" not in html and "0.333" in html
    with pytest.raises(ValueError, match="max_columns must be an int >= 1"):
        table_html(frame, max_columns=0)


def test_mean_sd_table_keeps_group_order():
    from landscape.pipeline.formatting import mean_sd_table

    frame = pd.DataFrame({"config": ["b64", "b64", "b16"], "x": [1.0, 3.0, 0.5], "y": [np.nan, np.nan, 2.0]})
    table = mean_sd_table(frame, "config", ["x", "y"])
    assert list(table.index) == ["b64", "b16"]
    assert table.loc["b64", "x"] == "2 ± 1.4" and table.loc["b64", "y"] == "n/a" and table.loc["b16", "x"] == "0.5"
    assert list(table["n"]) == [2, 1]


def test_runs_in_params_order_with_numeric_seeds():
    from landscape.pipeline.formatting import run_key, sort_runs

    experiments = {"scaling": {"configs": {"w32_d1": {}, "w128_d1": {}}}, "h1_batch": {"configs": {"b16": {}, "b1024": {}}}}
    cells = [("h1_batch", "b1024", 2), ("h1_batch", "b16", 10), ("h1_batch", "b16", 2), ("scaling", "w128_d1", 0), ("other", "x", 0)]
    assert sorted(cells, key=run_key(experiments)) == [("scaling", "w128_d1", 0), ("h1_batch", "b16", 2), ("h1_batch", "b16", 10),
                                                       ("h1_batch", "b1024", 2), ("other", "x", 0)]
    frame = pd.DataFrame(cells, columns=["experiment", "config", "seed"])
    assert list(sort_runs(frame, experiments).config) == ["w128_d1", "b16", "b16", "b1024", "x"]
