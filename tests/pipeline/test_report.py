"""The report stage: its pages come from params and the notebooks present; each page gets the
layout's root; pages render in forked workers through the one pool (a page rendered here is
replaced by a stub, the notebooks themselves run in the end-to-end test)."""

from __future__ import annotations

import json

import pytest

from landscape.pipeline import report
from landscape.pipeline.layout import Layout
from landscape.schema import ConfigError


@pytest.fixture
def layout(tmp_path):
    (tmp_path / "notebooks").mkdir()
    for page in ("index", "training"):
        (tmp_path / "notebooks" / f"{page}.ipynb").write_text("{}")
    return Layout(tmp_path)


def test_pages_from_params(layout):
    assert report.pages_from({}, layout) == ["index"]
    assert report.pages_from({"report": {"pages": ["index", "training"]}}, layout) == ["index", "training"]
    with pytest.raises(ConfigError, match=r"report.pages names \['nope'\] with no notebooks/<page>.ipynb; notebooks present: \['index', 'training'\]"):
        report.pages_from({"report": {"pages": ["index", "nope"]}}, layout)
    with pytest.raises(ConfigError, match=r"report.pages=\[\] is not allowed"):
        report.pages_from({"report": {"pages": []}}, layout)


def test_run_renders_every_page_with_the_layout_root(layout, monkeypatch, capsys):
    def fake_render(name, parameters, lay):  # runs in a forked worker: leaves its arguments in a file
        (lay.root / f"{name}.args").write_text(json.dumps(parameters))
        return lay.report(name)

    monkeypatch.setattr(report, "render", fake_render)
    params = {"profile": "ci", "report": {"pages": ["index", "training"]}}
    outs = report.run(params, layout)
    assert outs == [layout.report("index"), layout.report("training")]
    for page in ("index", "training"):
        assert json.loads((layout.root / f"{page}.args").read_text()) == {"root": str(layout.root), "profile": "ci", "pages": ["index", "training"]}
    assert "wrote reports/index.html" in capsys.readouterr().out
    assert report.run(params, layout, notebooks=["training"]) == [layout.report("training")]


def test_headline_merges_sections_atomically(layout):
    """reports/headline.json: created when absent, other sections kept, a section replaced whole."""
    path = report.write_headline(layout, {"dense_check": [{"run": "a", "w1_slq": 0.5}]})
    assert path == layout.headline
    report.write_headline(layout, {"other": {"x": 1}})
    assert json.loads(path.read_text()) == {"dense_check": [{"run": "a", "w1_slq": 0.5}], "other": {"x": 1}}
    report.write_headline(layout, {"dense_check": []})
    assert json.loads(path.read_text()) == {"dense_check": [], "other": {"x": 1}}
    assert not list(layout.reports_dir.glob("*.tmp"))
    assert report.headline_sections({}, layout) == {}
    with pytest.raises(FileNotFoundError, match=r"dense_check/results\.json"):  # a profile with the stage needs its output
        report.headline_sections({"dense_check": {}}, layout)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object of sections"):
        report.write_headline(layout, {"dense_check": []})


def test_headline_eos_section_lists_each_step_sizes_plateau_ratio(layout):
    with pytest.raises(FileNotFoundError, match=r"eos/metrics\.json"):
        report.headline_sections({"eos": {}}, layout)
    layout.eos_metrics.parent.mkdir(parents=True)
    per_lr = {f"lr={lr}": {"lr": lr, "status": "plateau", "ratio": 1.0 + lr / 10, "ratio_ci": [1.0, 1.1], "plateau_points": 50,
                           "onset_step": 80, "sharpening_factor": 3.0, "loss_final": 0.01} for lr in (0.15, 0.4)}
    layout.eos_metrics.write_text(json.dumps({"per_lr": per_lr, "at_edge": 2}))
    rows = report.headline_sections({"eos": {}}, layout)["eos"]
    assert [r["lr"] for r in rows] == [0.15, 0.4] and rows[1]["ratio"] == pytest.approx(1.04)
    assert set(rows[0]) == {"lr", "status", "ratio", "ratio_ci", "plateau_points", "onset_step", "sharpening_factor"}
