"""End to end: the whole `dvc repro` on the tiny `ci` profile in a temporary copy of the repo.

Checks every stage's outputs and report page, that a no-op repro reruns nothing, that an
edited param reruns only the entries it touches, and the round trip through an S3 remote. The
repo is built once per test run (repo_copy.shared_repo) and each module that changes it works
on a copy: reruns of single entries (SIGKILL and resume, forked vs fresh processes) and
bad-input errors are in test_dvc_reruns.py, the entries as SLURM jobs in test_slurm.py, so the
three modules and the paper_smoke run spread over the xdist workers.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest
import yaml
from landscape.pipeline.params import group_seeds
from lock_compare import files_of, lock_outs, pipeline_entries
from repo_copy import measure_entries, private_copy, restored, shared_repo
from repo_copy import dvc as _dvc
from repo_copy import edit_params as _edit_params
from repo_copy import run as _run

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="session")
def ci_repo(tmp_path_factory) -> Path:
    """A private copy of the ci profile's repo as `make repro` leaves it (built once per test run,
    repo_copy.shared_repo): the tests below change it and put it back, the last one commits to it."""
    built = shared_repo(tmp_path_factory, "ci")
    LOGS.update(built.logs)
    print(f"ci: {built.logs['seconds']}")
    return private_copy(built, tmp_path_factory.mktemp("pipeline") / "repo")


LOGS: dict[str, str] = {}


def test_prerun_commits_every_entry_and_leaves_dvc_repro_nothing_to_run(ci_repo):
    """The scheduler's waves reach the report, its spliced dvc.lock reads back in DVC (tools/scheduler/lockfile.py):
    the dvc repro after it finds every entry up to date."""
    ran = {line.split("'")[1] for line in LOGS["repro"].splitlines() if line.startswith("Running stage '")}
    assert ran == set(), LOGS["repro"][-3000:]
    summaries = [line for line in LOGS["prerun"].splitlines() if " committed (" in line]
    assert len(summaries) == 7 and all("0 failed, 0 left to dvc repro" in line for line in summaries), LOGS["prerun"][-2000:]
    assert summaries[-2].startswith("prerun hypotheses: 1 committed") and summaries[-1].startswith("prerun report: 1 committed")
    assert "up to date" in _dvc("status", cwd=ci_repo).stdout


def test_repro_renders_report_and_records_every_run(ci_repo):
    html = (ci_repo / "reports" / "training.html").read_text()
    assert "Test error per experiment" in html and html.count('src="data:image/png;base64') >= 2
    pages = yaml.safe_load((ci_repo / "params.yaml").read_text())["report"]["pages"]
    for page in pages:
        html = (ci_repo / "reports" / f"{page}.html").read_text()
        assert "Traceback (most recent call last)" not in html and 'data-mime-type="application/vnd.jupyter.stderr"' not in html, page
    index = (ci_repo / "reports" / "index.html").read_text()
    assert "Headline: hypotheses" in index and all(f'href="{p}.html"' in index for p in pages if p != "index")
    results = json.loads((ci_repo / "hypotheses" / "results.json").read_text())
    assert {e["name"] for e in results["hypotheses"]} >= {"H1[lambda_max]", "H1[test_error]", "H2[lambda_max]", "H3", "H4"}
    assert all(e["status"] == "tested" or e["status"].startswith("not tested: ") for e in results["hypotheses"])
    escape = json.loads((ci_repo / "escape" / "metrics.json").read_text())
    assert escape["seeds_studied"] == 3 and set(escape["noise_types"]) == {"isotropic", "projected", "sgd", "s=4"}
    params = yaml.safe_load((ci_repo / "params.yaml").read_text())
    for exp, spec in params["experiments"].items():
        for cfg in spec["configs"]:
            for seed in params["seeds"]:
                m = json.loads((ci_repo / "runs" / exp / cfg / f"seed{seed}" / "metrics.json").read_text())
                assert m["status"] == "completed" and 0 <= m["test_error"] <= 1
                assert m["data_hash"] and len(m["state_hash"]) == 64
    meta = json.loads((ci_repo / "data" / "prepared" / "digits8" / "meta.json").read_text())
    assert meta["num_train"] + meta["num_test"] == 1797 and len(meta["content_hash"]["train"]) == 64
    curvature = json.loads((ci_repo / "measure" / "h1_batch" / "b32" / "seeds" / "seed0" / "curvature.json").read_text())
    assert curvature["status"] == "measured" and curvature["lambda_max"] > 0
    assert [row["epoch"] for row in curvature["along_training"]] == [0, 1, 2]  # snapshot_every: 1
    assert (ci_repo / "measure" / "h1_batch" / "b32" / "seeds" / "seed0" / "krylov.pt").is_file()
    shown = _dvc("metrics", "show", "--json", cwd=ci_repo).stdout
    assert "test_error" in shown


def test_report_pages_open_in_headless_chromium(ci_repo):
    from browser import inspect_pages

    pages = yaml.safe_load((ci_repo / "params.yaml").read_text())["report"]["pages"]
    files = [ci_repo / "reports" / f"{p}.html" for p in pages]
    seen = inspect_pages(files)
    for f in files:
        state = seen[f.name]
        assert state["ready"] == "complete" and state["text"].strip(), f.name
        assert state["broken"] == [], f"{f.name}: images that did not load: {state['broken']}"
        assert state["error_outputs"] == 0 and "Traceback" not in state["text"], f"{f.name} shows a notebook error"
        assert all((f.parent / link).is_file() for link in state["links"]), f"{f.name} links to a missing page: {state['links']}"
        assert state["network"] == [], f"{f.name} requests from the network: {state['network']}"
        assert state["math_undrawn"] == [] and state["tex_unrendered"] == [] and state["raw_tex"] == [], (
            f"{f.name}: formulas not drawn {state['math_undrawn']}, not converted {state['tex_unrendered']}, raw TeX {state['raw_tex']}")
    assert seen["training.html"]["images"] >= 2 and seen["spectra.html"]["images"] >= 2 and seen["hypotheses.html"]["images"] >= 1
    assert set(seen["index.html"]["links"]) >= {f"{p}.html" for p in pages if p != "index"}
    assert seen["rmt.html"]["math"] >= 3  # the scaling law and the claims on alpha and beta, drawn as MathML


def test_bounds_stage_writes_valid_bounds_metrics_and_report(ci_repo):
    params = yaml.safe_load((ci_repo / "params.yaml").read_text())
    metrics = json.loads((ci_repo / "bounds" / "metrics.json").read_text())
    assert set(metrics["runs"]) == set(params["bounds"]["runs"])
    for run in params["bounds"]["runs"]:
        exp, cfg = run.split("/")
        seeds = group_seeds(params, exp)
        assert metrics["runs"][run]["seeds_bounded"] == len(seeds)
        for seed in seeds:
            d = json.loads((ci_repo / "bounds" / "runs" / exp / cfg / f"seed{seed}" / "bounds.json").read_text())
            assert d["status"] == "bounded" and d["n_bound"] + d["prior"]["n_prior"] == d["n_train"]
            for fam in ("curvature", "optimized", "isotropic"):  # posteriors at the trained weights
                assert d[fam]["test_error"] <= d[fam]["bound"] <= 1.0
            assert d["test_error"] <= d["bounds"]["occam"] and set(d["certifies"]) == set(d["bounds"])
    # Random labels: a valid bound cannot be informative (10 classes: risk 0.9).
    assert metrics["sanity"]["random_vacuous"] is True
    html = (ci_repo / "reports" / "bounds.html").read_text()
    assert "Bounds across runs" in html and 'src="data:image/png;base64' in html
    assert "Traceback (most recent call last)" not in html
    assert 'href="bounds.html"' in (ci_repo / "reports" / "index.html").read_text()
    shown = json.loads(_dvc("metrics", "show", "--json", cwd=ci_repo).stdout)
    assert "bounds/metrics.json" in json.dumps(shown)


def test_probe_stages_write_their_outputs_and_the_probes_page(ci_repo):
    params = yaml.safe_load((ci_repo / "params.yaml").read_text())
    groups = {k: v for k, v in params["probes"].items() if k not in ("intrinsic_dim", "sde")}
    assert set(groups) == {"h1_batch", "h2_arch"}
    for exp, section in groups.items():
        for cfg in section["configs"]:
            out = ci_repo / "probes" / exp / cfg
            assert all((out / name).is_file() for name in ("arrays.npz", "results.json", "config.json", "metrics.json"))
            res = json.loads((out / "results.json").read_text())
            pair = res["barriers"]["pairs"]["s0-s1"]  # 2 seeds: one pair
            assert res["barriers"]["status"] == "done" and list(res["barriers"]["pairs"]) == ["s0-s1"]
            assert pair["train"]["raw"]["barrier"] > pair["train"]["aligned"]["barrier"] - 1.0  # both finite numbers
            assert pair["test"]["aligned_end_loss_change"] < 1e-4  # alignment keeps the function
            assert res["sharpness"]["status"] == "done" and set(res["sharpness"]["seeds"]) == {"seed0", "seed1"}
            assert json.loads((out / "config.json").read_text())["probes"]["configs"] == section["configs"]
    res = json.loads((ci_repo / "probes" / "h2_arch" / "resnet_skip_bn" / "results.json").read_text())
    assert res["bn"]["bn_mode"] == "recalibrate" and set(res["bezier"]["pairs"]["s0-s1"]) == {"straight", "expected", "minimax"}
    assert res["scans"]["hessian_plane"]["kind"] and res["scans"]["random_plane"]["grid"] == [3, 3]
    figures = {f.name for f in (ci_repo / "probes" / "h2_arch" / "resnet_skip_bn" / "figures").iterdir()}
    assert {"barriers.png", "bezier_s0-s1.png", "plane_random_seed0.png", "plane_random_seed0_surface.png"} <= figures
    assert [f.name for f in (ci_repo / "probes" / "h2_arch" / "resnet_noskip_bn" / "figures").iterdir()] == ["barriers.png"]
    audit = json.loads((ci_repo / "probes" / "h1_batch" / "b32" / "results.json").read_text())["invariance"]["audit"]
    assert audit["output_change"] < 1e-4
    assert {e["name"]: e["verdict"] for e in audit["entries"]}["adaptive_sharpness_l2"] == "invariant"
    idim = json.loads((ci_repo / "probes" / "intrinsic_dim" / "metrics.json").read_text())
    assert set(idim) == {"toy.dense", "toy.sparse", "model.dense"} and idim["toy.dense"]["known"] == 3
    table = json.loads((ci_repo / "probes" / "sde" / "table.json").read_text())
    assert len(table) == 2 * 2 and all(r["ci_low"][0] <= r["simulated"][0] <= r["ci_high"][0] for r in table)
    html = (ci_repo / "reports" / "probes.html").read_text()
    assert "Bezier curves vs the straight line" in html and html.count('src="data:image/png;base64') >= 5
    assert "Traceback (most recent call last)" not in html and 'data-mime-type="application/vnd.jupyter.stderr"' not in html
    assert 'href="probes.html"' in (ci_repo / "reports" / "index.html").read_text()


# Each stage lists exactly the params it reads: one edited value makes exactly these entries
# stale (`dvc status`), and nothing else but `validate`, which checks the whole file (its output
# is constant, so its rerun makes nothing else stale).
#: (what, the params key edited, its new value, the entries the edit must mark stale besides validate).
PARAM_EDITS = [
    ("a train config", "experiments.sweeps.configs.lr_high.train.lr", 0.3, {"train_sweeps@lr_high-0", "train_sweeps@lr_high-1"}),
    ("a bounds setting", "bounds.settings.mc_draws", 200, {"bounds"}),
    ("a probe setting", "probes.h1_batch.sharpness.steps", 3, {"probe_h1_batch@b32"}),
    ("an SDE setting", "probes.sde.num_runs", 120, {"sde"}),
    ("a Phi-search setting", "phi.search.training.epochs", 3, {"phi_search"}),
    ("an optimizers setting", "optimizers.alpha", 0.01, {"optimizers"}),
    ("an optimizer's train config", "experiments.optimizers.configs.cadapt_normal.train.curvature_gamma", 0.1,
     {"train_optimizers@cadapt_normal-0", "train_optimizers@cadapt_normal-1", "optimizers"}),
]


def _sees(declared: str, edited: str) -> bool:
    """Whether an entry's declared params key sees an edit of ``edited`` (the key itself, below it, or a section above it)."""
    return edited == declared or edited.startswith(declared + ".") or declared.startswith(edited + ".")


def test_each_edit_marks_only_its_entries_and_undoing_them_leaves_nothing_stale(ci_repo):
    """The edits at once, one ``dvc status`` (about 5 s each): every stale entry names the params keys
    that changed for it, so each edit's entries are known apart (validate depends on the whole file:
    every edit marks it). Each edit marks exactly its entries, nothing else is stale (so nothing was
    before either: the no-op repro is the first test's), and the original params.yaml back, nothing is."""
    original = (ci_repo / "params.yaml").read_text()

    def edit_all(params: dict) -> None:
        for what, key, value, _ in PARAM_EDITS:
            *parents, leaf = key.split(".")
            node = params
            for part in parents:
                node = node[part]
            assert leaf in node and node[leaf] != value, what  # a real change of a key the profile has
            node[leaf] = value

    try:
        _edit_params(ci_repo, edit_all)
        status = json.loads(_dvc("status", "--json", cwd=ci_repo).stdout)
    finally:
        (ci_repo / "params.yaml").write_text(original)
    changed = {entry: [c["changed deps"]["params.yaml"] for c in changes if "params.yaml" in c.get("changed deps", {})]
               for entry, changes in status.items()}
    for what, key, _, expected in PARAM_EDITS:
        marked = {entry for entry, keys in changed.items() if any(k == "modified" or any(_sees(d, key) for d in k) for k in keys)}
        assert marked == expected | {"validate"}, (what, status)
    assert set(status) == set().union(*(expected for *_, expected in PARAM_EDITS)) | {"validate"}, status
    assert "up to date" in _dvc("status", cwd=ci_repo).stdout


def test_phi_search_writes_candidates_comparison_and_page(ci_repo):
    params = yaml.safe_load((ci_repo / "params.yaml").read_text())
    search = params["phi"]["search"]
    res = json.loads((ci_repo / "phi_search" / "results.json").read_text())
    grid = len(search["grid"]["widths"]) * len(search["grid"]["depths"])
    n_data = len(search["mixture_dims"]) + 1
    assert len(res["candidates"]) == n_data * len(search["seeds"]) * grid
    steps = search["training"]["epochs"] * (search["training"]["train_examples"] // search["training"]["batch_size"])
    for row in res["candidates"]:
        assert row["status"] == "completed" and row["steps"] == steps and 0 <= row["test_error"] <= 1
        assert row["phi"] == row["init"]["phi"] and row["init"]["num_params"] == row["num_params"] > 0
    assert {r["data_dim"] for r in res["candidates"]} == {*search["mixture_dims"], 64}  # digits: 8 x 8
    summary = res["summary"]
    assert set(summary["per_dataset"]) == {*(f"mixture_d{d}" for d in search["mixture_dims"]), params["phi"]["dataset"]}
    pooled = summary["pooled"]
    assert pooled["n_units"] == n_data * len(search["seeds"]) and pooled["grid_size"] == grid
    assert pooled["verdict"] in ("better than random", "worse than random", "no difference detected")
    assert 0 <= pooled["p_beat"] <= 1 and pooled["mean_oracle_error"] <= pooled["mean_chosen_error"]
    scaling = [r for r in res["runs"] if r["experiment"] == "scaling"]
    assert len(scaling) == len(params["seeds"]) and all(r["phi_status"] == "ok" and r["phi"] > 0 for r in scaling)
    assert summary["runs"]["per_experiment"]["scaling"]["n"] == len(params["seeds"])
    metrics = json.loads((ci_repo / "phi_search" / "metrics.json").read_text())
    assert metrics["search_n_units"] == pooled["n_units"] and "rho_init_mixture_d8" in metrics
    html = (ci_repo / "reports" / "phi.html").read_text()
    assert "Phi over the (n, L) grid per data dimension" in html and html.count('src="data:image/png;base64') >= 4
    assert "Traceback (most recent call last)" not in html and 'href="phi.html"' in (ci_repo / "reports" / "index.html").read_text()


def test_optimizers_stage_writes_the_comparison_and_its_page(ci_repo):
    params = yaml.safe_load((ci_repo / "params.yaml").read_text())
    section = params["optimizers"]
    configs = params["experiments"][section["experiment"]]["configs"]
    results = json.loads((ci_repo / "optimizers" / "results.json").read_text())
    table = {row["config"]: row for row in results["table"]}
    assert set(table) == set(configs) and len(results["runs"]) == len(configs) * len(params["seeds"])
    for cfg, row in table.items():
        assert row["n_runs"] == len(params["seeds"]) == row["n_completed"] + row["n_diverged"]
        assert row["divergence_ci_low"] <= row["divergence_rate"] <= row["divergence_ci_high"]
        assert row["seconds_mean"] > 0 and row["optimizer"] == configs[cfg]["train"]["optimizer"]
        uses_hvps = row["optimizer"] in ("curvature_adaptive", "hybrid")
        assert (row["hvps_mean"] > 0) == uses_hvps, row
    names = [e["name"] for e in results["test_error"]]
    assert names == [f"test_error[{t} vs {r}, {lvl}]" for lvl in section["levels"] for t, r in section["comparisons"]]
    for entry in results["test_error"] + results["divergence"]:
        assert entry["status"] == "tested" or entry["status"].startswith("not tested: "), entry
    epochs = {c["epoch"] for c in results["curves"] if c["metric"] == "test_error"}
    assert epochs == set(range(1, next(iter(configs.values()))["train"]["epochs"] + 1))
    shown = json.loads(_dvc("metrics", "show", "--json", cwd=ci_repo).stdout)
    assert "optimizers/metrics.json" in json.dumps(shown)
    html = (ci_repo / "reports" / "optimizers.html").read_text()
    assert "Comparison table" in html and html.count('src="data:image/png;base64') >= 2
    assert "Traceback (most recent call last)" not in html and 'data-mime-type="application/vnd.jupyter.stderr"' not in html
    assert 'href="optimizers.html"' in (ci_repo / "reports" / "index.html").read_text()


def test_spectra_scaling_stage_fits_every_spectrum_and_renders_its_page(ci_repo):
    params = yaml.safe_load((ci_repo / "params.yaml").read_text())
    results = json.loads((ci_repo / "spectra_scaling" / "results.json").read_text())
    measured = params["curvature"]  # experiments without a curvature entry (optimizers) have no spectra
    expected = {(exp, cfg, seed) for exp, spec in params["experiments"].items() if exp in measured
                for cfg in spec["configs"] for seed in group_seeds(params, exp)}
    runs = results["spectra"]["runs"]
    assert {(r["experiment"], r["config"], r["seed"]) for r in runs} == expected
    top_k = params["curvature"]["h1_batch"]["top_k"]
    for r in runs:
        assert r["status"] == "ok", r
        assert 0 <= r["num_spikes"] <= r["max_spikes"] == top_k - params["spectra_scaling"]["edge_points"]
        assert 0 <= r["ks_semicircle"] <= 1 and 0 <= r["ks_spiked"] <= 1 and r["spike_verdict"] in ("spiked", "semicircle")
        # a bulk fit is reported only where its width exceeds the SLQ broadening ("unresolved" otherwise)
        assert (r["bulk_sigma"] is None) == (not r["bulk_resolved"]) and (r["bulk_sigma"] is None or r["bulk_sigma"] > r["sigma_broadening"])
        # measure's rmt block runs the same estimator on the same inputs
        curv = json.loads((ci_repo / "measure" / r["experiment"] / r["config"] / "seeds" / f"seed{r['seed']}" / "curvature.json").read_text())
        assert curv["rmt"]["status"] == "ok" and curv["rmt"]["outlier_count"] == r["num_spikes"]
        if r["bulk_resolved"]:
            assert curv["rmt"]["bulk_sigma"] == pytest.approx(r["bulk_sigma"], rel=1e-9)
    assert results["spectra"]["overall"]["n_runs"] == len(expected)
    # the ci grid has a single scaling config: every fit says why it was not fitted
    assert all(f["status"].startswith("not fitted: ") for f in results["scaling"]["fits"].values())
    gs = results["gradient_subspaces"]
    assert gs["status"] == "tested" and {e["config"] for e in gs["per_config"]} == set(params["experiments"]["h1_batch"]["configs"])
    assert all(-1 <= row["pearson_covariance"] <= 1 and row["energy_rank_90"] >= 1 for row in gs["rows"])
    assert [c["config"] for c in results["curves"]] == params["spectra_scaling"]["plot_configs"]
    assert all(c["status"] == "ok" and len(c["grid"]) == len(c["measured"]) == len(c["spiked"]) for c in results["curves"])
    shown = json.loads(_dvc("metrics", "show", "--json", cwd=ci_repo).stdout)
    assert "spectra_scaling/metrics.json" in json.dumps(shown) and "share_c_minus_1" in json.dumps(shown)
    html = (ci_repo / "reports" / "rmt.html").read_text()
    assert "Spectra, RMT and scaling laws" in html and html.count('src="data:image/png;base64') >= 3


def test_editing_a_module_marks_exactly_the_entries_that_import_it(ci_repo):
    """Deps are the import closure: an edit to a module only measure imports (and validate,
    which checks every stage's config, and dense_check and class_structure, which read the
    measure stage's settings through its config) makes exactly those entries stale."""
    params = yaml.safe_load((ci_repo / "params.yaml").read_text())
    readers = {"validate"} | {s for s in ("dense_check", "class_structure") if s in params}  # both read measure's settings
    for rel in ("src/landscape/pipeline/measure.py", "src/landscape/curvature/measure.py"):
        path = ci_repo / rel
        original = path.read_text()
        try:
            path.write_text(original + "\n# an edit\n")
            stale = set(json.loads(_dvc("status", "--json", cwd=ci_repo).stdout))
            assert stale == measure_entries(params) | readers, (rel, stale)
        finally:
            path.write_text(original)
    assert "up to date" in _dvc("status", cwd=ci_repo).stdout


def test_a_new_experiment_group_stops_plain_repro_until_dvc_yaml_is_regenerated(ci_repo):
    """Plain `dvc repro` validates first: a group with no stages stops it, naming what to run;
    regenerating dvc.yaml (as `make repro` does) creates the group's entries."""
    dvc_yaml = (ci_repo / "dvc.yaml").read_text()
    with restored(ci_repo, ci_repo / "data"):
        def add_group(p):
            p["experiments"]["wd_ablation"] = p["experiments"]["sweeps"]
            p["curvature"]["wd_ablation"] = p["curvature"]["sweeps"]
        _edit_params(ci_repo, add_group)
        try:
            proc = _dvc("repro", cwd=ci_repo, check=False)
            assert proc.returncode != 0
            assert "stage 'train_wd_ablation' is missing from dvc.yaml" in proc.stdout + proc.stderr
            assert "make dvc.yaml" in proc.stdout + proc.stderr
            assert not (ci_repo / "runs" / "wd_ablation").exists()  # stopped before any work
            _run([sys.executable, "-m", "landscape.pipeline.dvcfile"], ci_repo)
            stale = set(json.loads(_dvc("status", "--json", cwd=ci_repo).stdout))
            cfgs = yaml.safe_load((ci_repo / "params.yaml").read_text())["experiments"]["sweeps"]["configs"]
            seeds = yaml.safe_load((ci_repo / "params.yaml").read_text())["seeds"]
            expected = {f"train_wd_ablation@{c}-{s}" for c in cfgs for s in seeds} | {f"measure_wd_ablation@{c}" for c in cfgs}
            assert expected <= stale, stale
        finally:
            (ci_repo / "dvc.yaml").write_text(dvc_yaml)


def test_every_figure_of_every_page_has_data(ci_repo):
    from test_report_pages import assert_pages_have_data

    assert_pages_have_data(ci_repo / "reports", ci_repo / "notebooks")


# ---------------------------------------------------------------------------- beyond one machine
# The ci run shared through an S3 remote (moto's server); the same entries as SLURM jobs are in
# test_slurm.py.


def test_results_round_trip_through_an_s3_remote_to_a_fresh_clone(ci_repo, tmp_path):
    """dvc push to an S3 server (moto's, on 127.0.0.1), a fresh git clone, dvc pull: nothing stale,
    nothing rerun, and every output and report page bit-identical."""
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in creds}
    os.environ.update(creds)  # repo_copy's subprocess environment is this process's
    try:
        url = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket="landscape-results")
        _dvc("remote", "add", "-d", "shared", "s3://landscape-results/ci", cwd=ci_repo)
        _dvc("remote", "modify", "shared", "endpointurl", url, cwd=ci_repo)
        # what the repository commits: dvc.lock, the remote's address and the report pages (git-tracked outputs)
        _run(["git", "add", "dvc.lock", ".dvc/config", "reports"], ci_repo)
        _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results"], ci_repo)
        pushed = _dvc("push", cwd=ci_repo).stdout
        LOGS["push"] = pushed
        clone = tmp_path / "clone"
        _run(["git", "clone", "-q", str(ci_repo), str(clone)], tmp_path)
        pulled = _dvc("pull", cwd=clone).stdout
        repro = _dvc("repro", cwd=clone).stdout  # nothing to run: the same check as dvc status
        print(f"dvc push: {pushed.strip().splitlines()[-1]}\ndvc pull (fresh clone): {pulled.strip().splitlines()[-1]}\n"
              f"dvc repro: {repro.strip().splitlines()[-1]}")
    finally:
        server.stop()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    assert "files added" in pulled and repro.rstrip().endswith("Data and pipelines are up to date."), pulled + repro
    assert "Running stage" not in repro
    outs = lock_outs(ci_repo, pipeline_entries(ci_repo))
    files = [f for path, md5 in outs.items() for f in files_of(ci_repo, path, md5)]
    assert len(files) > 200 and any(f.startswith("reports/") for f in files)
    assert [f for f in files if (clone / f).read_bytes() != (ci_repo / f).read_bytes()] == []
    for page in yaml.safe_load((ci_repo / "params.yaml").read_text())["report"]["pages"]:
        assert (clone / "reports" / f"{page}.html").read_bytes() == (ci_repo / "reports" / f"{page}.html").read_bytes()
