"""The report stage: its pages come from params and the notebooks present; each page gets the
layout's root; pages render in forked workers through the one pool (a page rendered here is
replaced by a stub, the notebooks themselves run in the end-to-end test)."""

from __future__ import annotations

import json
from pathlib import Path

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
    def fake_render(name, parameters, lay, kernel):  # runs in a forked worker: leaves its arguments in a file
        assert isinstance(kernel, report.NotebookKernel)  # the worker's kept kernel (started on first use: never here)
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


def _notebook(path, *cells):
    import nbformat

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell("root = '.'", metadata={"tags": ["parameters"]}, id="parameters")]
    nb.cells += [nbformat.v4.new_code_cell(src, id=f"cell{i}") for i, src in enumerate(cells)]
    nbformat.write(nb, path)


def test_a_kept_kernel_gives_each_page_a_fresh_session(tmp_path):
    """A page rendered in a kernel another page has used is byte-identical to the page rendered in a
    new kernel: the first page's variables, rcParams, pandas options, sys.path entry and figures are
    gone, and a warning it raised is raised again (papermill's random parameters-cell id is fixed too)."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "helper.py").write_text("import warnings\n\ndef warn():\n    warnings.warn('raised by helper')\n")
    _notebook(tmp_path / "notebooks" / "dirty.ipynb",
              "import sys, helper, matplotlib.pyplot as plt, pandas as pd\nleak = 1\nplt.rcParams['lines.linewidth'] = 9\n"
              "pd.set_option('display.precision', 1)\nsys.path.insert(0, '/nowhere')\nkept = plt.figure()\nhelper.warn()")
    _notebook(tmp_path / "notebooks" / "probe.ipynb",
              "import sys, helper, matplotlib.pyplot as plt, pandas as pd\n"
              "print('leak' in globals(), plt.rcParams['lines.linewidth'], pd.get_option('display.precision'), '/nowhere' in sys.path,"
              " plt.get_fignums())\nhelper.warn()")
    layout = Layout(tmp_path)
    fresh = report.render("probe", {"root": str(tmp_path)}, layout).read_bytes()
    with report.NotebookKernel(tmp_path) as kernel:
        report.render("dirty", {"root": str(tmp_path)}, layout, kernel)
        kept = report.render("probe", {"root": str(tmp_path)}, layout, kernel).read_bytes()
        # each page: the reset's client and papermill's, whose channels nbclient leaves running
        assert len(kernel.clients()) == 4 and not any(c.channels_running for c in kernel.clients())
    assert b"False 1.5 6 False []" in fresh and b"raised by helper" in fresh
    assert kept == fresh


def test_every_notebook_cell_has_a_fixed_id():
    """A cell without an id gets a random one when read, and the page carries it (a page would differ run to run)."""
    import nbformat

    notebooks = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        raw = json.loads(path.read_text())
        assert all("id" in cell for cell in raw["cells"]), path.name
        assert nbformat.reads(path.read_text(), as_version=4).cells[0]["id"] == raw["cells"][0]["id"]


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


def test_headline_h2_section_from_the_hypotheses_results(layout):
    """H2's rows: each member's effect, interval, n, p, Holm p, replication and the replication rule's verdict."""
    with pytest.raises(FileNotFoundError, match=r"hypotheses/results\.json"):
        report.headline_sections({"hypotheses": {}}, layout)
    tested = {"name": "H2[lambda_max]", "status": "tested", "effect_name": "change per doubling", "effect": -0.3, "ci_low": -0.5,
              "ci_high": -0.1, "n_runs": 40, "n_groups": 5, "p_value": 0.01, "p_holm": 0.03, "supported": True,
              "extra": {"replication": {"effect": -0.2, "ci_low": -0.4, "ci_high": 0.0, "p_value": 0.04, "n_runs": 40},
                        "replication_rule": {"verdict": "supported", "reason": "both tests significant, same sign"},
                        "power": {"effect": -0.23, "power": 0.8}, "adjusted": {"estimate": -0.25}}}
    others = [{"name": "H1[lambda_max]", "status": "not tested: input missing: y"}, {"name": "H2[barrier]", "status": "not tested: input missing: x"}]
    layout.results("hypotheses").parent.mkdir(parents=True)
    layout.results("hypotheses").write_text(json.dumps({"hypotheses": [others[0], tested, others[1]]}))
    rows = report.headline_sections({"hypotheses": {}}, layout)["h2"]
    assert [r["name"] for r in rows] == ["H2[lambda_max]", "H2[barrier]"]
    assert rows[0]["ci"] == [-0.5, -0.1] and rows[0]["p_holm"] == 0.03 and rows[0]["verdict"] == "supported"
    assert rows[0]["replication_ci"] == [-0.4, 0.0] and rows[0]["power"] == 0.8 and rows[0]["adjusted_for_train_loss"] == -0.25
    assert rows[1] == {"name": "H2[barrier]", "status": "not tested: input missing: x", "verdict": "not tested"}
