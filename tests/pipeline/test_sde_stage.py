"""Tests of landscape.pipeline.sde: the stage's settings and surface registry, and the
occupancy table against closed forms."""

from __future__ import annotations

import json

import pytest

from landscape.io import to_jsonable
from landscape.pipeline.sde import SURFACES, SdeConfig, build_surface, run_sde_study
from landscape.schema import ConfigError, parse_config


def test_sde_config_validates_settings_and_surfaces():
    cfg = parse_config(SdeConfig, {"settings": [[0.1, 2], [0.05, 8]]}, "probes.sde")
    assert cfg.settings == ((0.1, 2), (0.05, 8))
    with pytest.raises(ConfigError, match=r"probes.sde.settings=.*allowed: a non-empty list of \[eta > 0, batch_size >= 1\] pairs"):
        parse_config(SdeConfig, {"settings": [[0.1, 0]]}, "probes.sde")
    with pytest.raises(ConfigError, match=r"surfaces.w: surface kind must be one of \['gaussian_wells', 'tilted_double_well'\], got 'bowl'"):
        parse_config(SdeConfig, {"surfaces": {"w": {"kind": "bowl"}}}, "probes.sde")
    with pytest.raises(ConfigError, match=r"surfaces.w: bad options for surface kind 'tilted_double_well'"):
        parse_config(SdeConfig, {"surfaces": {"w": {"kind": "tilted_double_well", "depth": 2.0}}}, "probes.sde")
    with pytest.raises(ValueError, match=r"\|tilt\| must be <"):
        build_surface({"kind": "tilted_double_well", "tilt": 5.0})


def test_sde_study_table_matches_closed_forms_and_summary_counts():
    cfg = parse_config(
        SdeConfig,
        {"surfaces": {"sym": {"kind": "tilted_double_well", "tilt": 0.0}, "tilted": {"kind": "tilted_double_well", "tilt": 0.3, "kappa_right": 4.0}},
         "settings": [[0.05, 1], [0.02, 2]], "methods": ["sde", "sgd"], "noise_scale": 2.0, "horizon": 2.0, "num_runs": 60,
         "dataset_size": 50, "quadrature_grid": 41},
        "probes.sde",
    )
    report = run_sde_study(cfg)
    assert len(report.table) == 2 * 2 * 2
    for row in report.table:
        assert row["temperature"] == pytest.approx(row["eta"] * 4.0 / (2 * row["batch_size"]), rel=1e-12)
        if row["surface"] == "sym":
            assert row["predicted"] == pytest.approx([0.5, 0.5], abs=1e-12)
            assert row["gibbs"] == pytest.approx([0.5, 0.5], abs=1e-4)  # 41 x 41 quadrature: cells on the ridge
        assert row["ci_low"][0] <= row["simulated"][0] <= row["ci_high"][0]
    for key, s in report.summary.items():
        surface, method = key.split(".")
        rows = [r for r in report.table if r["surface"] == surface and r["method"] == method]
        assert s["agrees"] + s["disagrees"] + s["not_mixed"] == len(rows) == 2
        assert len(s["breaks_not_mixed"]) == s["not_mixed"]
    md = report.markdown()
    assert md.count("\n") == 2 + 2 * len(report.table)  # header + one line per basin and row
    assert sorted(report.figures()) == ["sde_sym", "sde_tilted"]
    json.dumps(to_jsonable(report.to_dict()))


#: one spec per surface kind (the paper profile's gaussian wells)
SURFACE_SPECS = {
    "tilted_double_well": {"kind": "tilted_double_well", "tilt": 0.25},
    "gaussian_wells": {"kind": "gaussian_wells", "centers": [[-1.5, 0.0], [1.5, 0.0], [0.0, 1.8]], "depths": [1.0, 1.1, 0.9],
                       "widths": [0.5, 0.9, 0.7]},
}


def test_every_surface_kind_has_a_case():
    assert sorted(SURFACE_SPECS) == sorted(SURFACES)


@pytest.mark.parametrize("kind", sorted(SURFACES))
def test_every_surface_kind_builds_from_its_name_and_options(kind):
    surface = build_surface(SURFACE_SPECS[kind])
    assert isinstance(surface, SURFACES[kind]) and len(surface.minima()) >= 2
    parse_config(SdeConfig, {"surfaces": {kind: SURFACE_SPECS[kind]}}, "probes.sde")  # a valid probes.sde.surfaces entry
