"""End to end: the paper profile's every stage, model, data set loader and analysis, at tiny
sizes (`profiles/paper_smoke.yaml`, generated from `profiles/paper.yaml`), by the scheduler and
`dvc repro` in a temporary copy of the repo, on data files written in each set's own format
(CIFAR-10/100 pickled batches, the MNIST idx files, a Tiny-ImageNet tree of JPEGs, WikiText-2
raw text; the writers of tests/data_files.py, which the data-set tests use too).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import yaml
from data_files import write_cifar10, write_cifar100, write_mnist_family, write_tiny_imagenet, write_wikitext2
from repo_copy import copy_on_profile
from repo_copy import dvc as _dvc
from repo_copy import run as _run

pytestmark = [pytest.mark.slow]

#: Examples written per data set (official train, official test): enough for the largest shrunk
#: batch (the paper's 2048 / 16 = 128) and for the probe subsets (32).
SIZES = {"cifar10": (200, 100), "cifar100": (200, 100), "mnist": (200, 100), "tiny_imagenet": (96, 32)}
TINY_CLASSES = ("n01443537", "n01629819", "n01641577", "n01644900")


def write_paper_data(repo: Path) -> None:
    """The paper profile's on-disk data sets under ``<repo>/data/raw`` (each set's own format)."""
    root = repo / "data" / "raw"
    root.mkdir(parents=True)
    write_cifar10(root, per_batch=SIZES["cifar10"][0] // 5, n_test=SIZES["cifar10"][1])
    write_cifar100(root, n_train=SIZES["cifar100"][0], n_test=SIZES["cifar100"][1])
    write_mnist_family(root, "MNIST", n_train=SIZES["mnist"][0], n_test=SIZES["mnist"][1])
    write_tiny_imagenet(root, per_class_train=SIZES["tiny_imagenet"][0] // len(TINY_CLASSES),
                        per_class_val=SIZES["tiny_imagenet"][1] // len(TINY_CLASSES), wnids=TINY_CLASSES)
    write_wikitext2(root, lines=40)


LOGS: dict[str, str] = {}
SECONDS: dict[str, float] = {}


@pytest.fixture(scope="session")
def smoke_repo(tmp_path_factory) -> Path:
    started = time.perf_counter()
    repo = copy_on_profile(tmp_path_factory.mktemp("paper_smoke") / "repo", "paper_smoke", write_paper_data)
    SECONDS["copy"] = time.perf_counter() - started
    LOGS["prerun"] = _run([sys.executable, "-m", "tools.scheduler"], repo).stdout
    SECONDS["prerun"] = time.perf_counter() - started - SECONDS["copy"]
    LOGS["repro"] = _dvc("repro", cwd=repo).stdout
    SECONDS["total"] = time.perf_counter() - started
    print(f"paper_smoke: copy {SECONDS['copy']:.0f}s, scheduler {SECONDS['prerun']:.0f}s, total {SECONDS['total']:.0f}s")
    return repo


def _params(repo: Path) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text())


def test_every_entry_ran_and_the_pipeline_is_up_to_date(smoke_repo):
    summaries = [line for line in LOGS["prerun"].splitlines() if " committed (" in line]
    assert summaries and all(" 0 failed" in line for line in summaries), LOGS["prerun"][-3000:]
    ran = {line.split("'")[1] for line in LOGS["repro"].splitlines() if line.startswith("Running stage '")}
    assert ran <= {"hypotheses", "report"}, LOGS["repro"][-3000:]
    assert "up to date" in _dvc("status", cwd=smoke_repo).stdout


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
