"""End to end: the paper profile's every stage, model, data set loader and analysis, at tiny
sizes (`profiles/paper_smoke.yaml`, generated from `profiles/paper.yaml`), by the scheduler and
`dvc repro` in a temporary copy of the repo, on data files written in each set's own format
(CIFAR-10/100 pickled batches, the MNIST idx files, a Tiny-ImageNet tree of JPEGs, WikiText-2
raw text; the writers of tests/data_files.py, which the data-set tests use too, called by
repo_copy.write_paper_data).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from repo_copy import PAPER_DATA_SIZES as SIZES
from repo_copy import TINY_CLASSES, shared_repo

pytestmark = [pytest.mark.slow]

LOGS: dict[str, str] = {}


@pytest.fixture(scope="session")
def smoke_repo(tmp_path_factory) -> Path:
    """The paper_smoke repo built by the scheduler and `dvc repro` (shared, repo_copy.BUILDERS); read only here."""
    built = shared_repo(tmp_path_factory, "paper_smoke")
    LOGS.update(built.logs)
    print(f"paper_smoke: {built.logs['seconds']}")
    return built.repo


def _params(repo: Path) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text())


def test_every_entry_ran_and_the_pipeline_is_up_to_date(smoke_repo):
    summaries = [line for line in LOGS["prerun"].splitlines() if " committed (" in line]
    assert len(summaries) == 7 and all(" 0 failed, 0 left to dvc repro" in line for line in summaries), LOGS["prerun"][-3000:]
    ran = {line.split("'")[1] for line in LOGS["repro"].splitlines() if line.startswith("Running stage '")}
    assert ran == set(), LOGS["repro"][-3000:]  # the scheduler's waves run the report too
    assert LOGS["repro"].rstrip().endswith("Data and pipelines are up to date."), LOGS["repro"][-3000:]


def test_each_data_set_came_through_its_own_loader(smoke_repo):
    params = _params(smoke_repo)
    for key, spec in params["datasets"].items():
        meta = json.loads((smoke_repo / "data" / "prepared" / key / "meta.json").read_text())
        assert meta["source"]["name"] == spec["name"], key
        if key in SIZES:  # official train / test as written
            assert (meta["num_train"], meta["num_test"]) == SIZES[key], key
    tiny = json.loads((smoke_repo / "data" / "prepared" / "tiny_imagenet" / "meta.json").read_text())
    side = params["datasets"]["tiny_imagenet"]["options"]["image_size"]  # the loader downsamples the 64 px JPEGs
    assert tiny["num_classes"] == len(TINY_CLASSES) and tiny["input_shape"] == [3, side, side]
    lm = json.loads((smoke_repo / "data" / "prepared" / "wikitext2" / "meta.json").read_text())
    assert lm["input_shape"] == [params["datasets"]["wikitext2"]["options"]["context"]]


def test_every_run_trained_and_every_measured_config_was_measured(smoke_repo):
    params = _params(smoke_repo)
    for exp, spec in params["experiments"].items():
        for cfg in spec["configs"]:
            for seed in params["seeds"]:
                m = json.loads((smoke_repo / "runs" / exp / cfg / f"seed{seed}" / "metrics.json").read_text())
                assert m["status"] in ("completed", "diverged"), (exp, cfg, seed, m["status"])
                assert m["epochs_completed"] >= 1 or m["status"] == "diverged"
            if exp not in params["curvature"]:
                continue
            for seed in params["seeds"]:
                c = json.loads((smoke_repo / "measure" / exp / cfg / "seeds" / f"seed{seed}" / "curvature.json").read_text())
                run = json.loads((smoke_repo / "runs" / exp / cfg / f"seed{seed}" / "metrics.json").read_text())
                if run["status"] == "completed":
                    assert c["status"] == "measured" and c["lambda_max"] == c["lambda_max"], (exp, cfg, seed)
    vit = json.loads((smoke_repo / "measure" / "h2_arch" / "vit_small" / "seeds" / "seed0" / "curvature.json").read_text())
    assert vit["status"] == "measured" and vit["trace"] == vit["trace"]  # curvature through attention
    lm = json.loads((smoke_repo / "measure" / "lm" / "b64" / "seeds" / "seed0" / "curvature.json").read_text())
    assert lm["status"] == "measured"


def test_analyses_and_report_pages(smoke_repo):
    params = _params(smoke_repo)
    for group, section in params["probes"].items():
        if group in ("intrinsic_dim", "sde"):
            continue
        for cfg in section["configs"]:
            res = json.loads((smoke_repo / "probes" / group / cfg / "results.json").read_text())
            assert res["barriers"]["status"] == "done", (group, cfg)
    bounds = json.loads((smoke_repo / "bounds" / "metrics.json").read_text())
    assert set(bounds["runs"]) == set(params["bounds"]["runs"])
    results = json.loads((smoke_repo / "hypotheses" / "results.json").read_text())
    assert {e["name"] for e in results["hypotheses"]} >= {"H1[lambda_max]", "H1[test_error]", "H3", "H4"}
    for name in ("phi_search", "optimizers", "spectra_scaling", "escape", "eos"):
        assert (smoke_repo / name / "metrics.json").is_file(), name
    for page in params["report"]["pages"]:
        html = (smoke_repo / "reports" / f"{page}.html").read_text()
        assert "Traceback (most recent call last)" not in html and 'data-mime-type="application/vnd.jupyter.stderr"' not in html, page
