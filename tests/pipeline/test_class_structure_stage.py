"""The class_structure stage on tiny runs: its top-k of G and H equal the dense double-backward
spectra within the stated bounds, its diagonals equal the dense diagonals, its tables carry every
run, a diverged run is skipped, and bad settings are named."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape.io import read_json
from landscape.pipeline import class_structure, report
from landscape.pipeline.layout import Layout
from landscape.pipeline.runs import load_run
from landscape.schema import ConfigError
from tests.curvature.models import reference_ggn, reference_hessian
from tests.pipeline.test_measure_stage import CURVATURE, PARAMS, _write_inputs

SETTINGS = {"spectrum_runs": ["exp/a"], "spectrum_seeds": [0, 1, 2], "top_k": 14, "eig_tol": 1e-8, "max_matvecs": 2000,
            "num_classes": 3, "edge_points": 5, "diag_experiment": "exp", "diag_configs": "all", "diag_seeds": [0, 1],
            "diag_examples": 30, "diag_probes": 8, "chunk_size": 7, "ci_level": 0.95, "dtype": "float64"}


def _params() -> dict:
    params = copy.deepcopy(PARAMS)
    params["curvature"]["exp"] = dict(CURVATURE)
    params["class_structure"] = dict(SETTINGS)
    return params


def test_stage_spectra_and_diagonals_match_dense_references(tmp_path) -> None:
    layout = Layout(tmp_path)
    _write_inputs(layout)
    params = _params()
    tables = class_structure.run(params, layout)
    res = read_json(layout.results("class_structure"))
    data = torch.load(layout.prepared("toy"), weights_only=False)
    x, y = data["probe"]
    x = x.double()
    n, bs = CURVATURE["num_examples"], CURVATURE["batch_size"]
    batches = [(x[i : i + bs], y[i : i + bs]) for i in range(0, n, bs)]
    spectra = {r["seed"]: r for r in res["spectrum_runs"]}
    assert spectra[2]["status"] == "skipped: run diverged"
    for seed in (0, 1):
        model = load_run(layout, "exp", "a", seed).model.double()
        arrays = np.load(layout.class_structure_spectrum("exp", "a", seed))
        for name, ref in (("ggn", reference_ggn), ("hessian", reference_hessian)):
            dense = ref(model, F.cross_entropy, batches)
            exact = torch.linalg.eigvalsh((dense + dense.T) / 2).flip(0).numpy()[:14]
            r = spectra[seed][name]
            assert r["converged"] and r["values"] == arrays[name].tolist()
            np.testing.assert_allclose(arrays[name], exact, rtol=0, atol=1e-6 * abs(exact[0]))
            assert np.all(np.abs(arrays[name] - exact) <= arrays[f"{name}_bounds"] + 1e-12 * abs(exact[0]))
            assert r["basis_bytes"] == 8 * model_params(model) * (2 * 14 + 29 + 1)
            assert r["structure"]["k"] == 14 and r["structure"]["cross_class"]["rank"] == 8
    diag = {r["seed"]: r for r in res["diagonal_runs"]}
    assert set(diag) == {0, 1} and all(r["status"] == "measured" and r["num_examples"] == 30 for r in diag.values())
    c = diag[0]["comparisons"]
    assert set(c) == {f"{a}_vs_{b}" for a, b in class_structure.PAIRS}
    # diag(G) of the stage against the dense GGN on the same 30 examples, through the G-vs-H comparison's scale
    model = load_run(layout, "exp", "a", 0).model.double()
    sub = [(x[:10], y[:10]), (x[10:20], y[10:20]), (x[20:30], y[20:30])]
    dg = torch.diagonal(reference_ggn(model, F.cross_entropy, sub))
    dh = torch.diagonal(reference_hessian(model, F.cross_entropy, sub))
    assert diag[0]["diagonals"]["ggn"]["norm"] == pytest.approx(float(dg.norm()), rel=1e-10)
    assert diag[0]["diagonals"]["hessian"]["norm"] == pytest.approx(float(dh.norm()), rel=0.5)  # 8 probes: an estimate
    # the tables: one spike-count row per operator, one diagonal row per pair of the one config
    assert [(r["run"], r["operator"]) for r in tables["spike_counts"]] == [("exp/a", "ggn"), ("exp/a", "hessian")]
    assert tables["spike_counts"][0]["count_test"]["n"] == 2 and tables["spike_counts"][0]["seeds"] == [0, 1]
    assert len(tables["diagonals"]) == len(class_structure.PAIRS) and tables["diagonals"][0]["n_seeds"] == 2
    rows = report.HEADLINE_SECTIONS["class_structure"](layout)  # the headline section: both tables, rows tagged
    assert [r["table"] for r in rows] == ["spike_counts"] * 2 + ["diagonals"] * len(class_structure.PAIRS)
    assert rows[0]["count_test"]["counts"] == tables["spike_counts"][0]["count_test"]["counts"]
    metrics = read_json(layout.metrics("class_structure"))
    assert set(metrics) == {"spike_counts", "diagonals"} and len(metrics["diagonals"]) == len(tables["diagonals"])


def model_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_bad_settings_are_named() -> None:
    params = _params()
    params["class_structure"]["spectrum_runs"] = ["exp/zzz"]
    with pytest.raises(ConfigError, match="exp/zzz"):
        class_structure.load_config(params)
    params["class_structure"] = {**SETTINGS, "spectrum_seeds": [7]}
    with pytest.raises(ConfigError, match=r"spectrum_seeds has \[7\]"):
        class_structure.load_config(params)
    params["class_structure"] = {**SETTINGS, "diag_experiment": "nope"}
    with pytest.raises(ConfigError, match="diag_experiment='nope'"):
        class_structure.load_config(params)
    params["class_structure"] = {**SETTINGS, "diag_configs": ["b"]}
    with pytest.raises(ConfigError, match=r"diag_configs names \['b'\]"):
        class_structure.load_config(params)
    params["class_structure"] = {**SETTINGS, "top_k": 4}
    with pytest.raises(ConfigError, match="top_k"):
        class_structure.load_config(params)
    params["class_structure"] = {**SETTINGS, "max_matvecs": 10}
    with pytest.raises(ConfigError, match="max_matvecs=10 must be >= top_k=14"):
        class_structure.load_config(params)
    params["class_structure"] = {**SETTINGS, "bogus": 1}
    with pytest.raises(ConfigError, match="unknown key class_structure.bogus"):
        class_structure.load_config(params)
