"""phi_search stage: Phi(n, L, D) over an MLP grid, the Phi-guided choice vs a random one,
and Phi of the pipeline's trained runs against their test error.

Usage: python stages/phi_search.py

Data: Gaussian mixtures of dimensions ``phi.search.mixture_dims`` (same classes and
separation, fixed seed) and the prepared data set ``phi.dataset`` (training split,
flattened). Every (data set, seed, width, depth) candidate is measured (Phi at
initialisation) and trained with the same budget in 2 forked workers
(``landscape.probes.phi.run_phi_search``); ``landscape.stats.phi`` compares the argmax
choice with a uniformly random grid member and correlates Phi with test error, also over
the runs of ``phi.run_experiments`` (Phi from measure's curvature.json, final weights).
Writes phi_search/results.json (config, every candidate, the run table, the summary) and
phi_search/metrics.json (headline numbers).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import time

from _common import ROOT, ConfigError, configure_torch, cpu_workers, fail, load_params, pick_device, prepared_path, section

import torch

from landscape.io import write_json
from landscape.probes.phi import PhiConfig, SearchData, run_phi_search
from landscape.schema import parse_config
from landscape.stats.phi import headline, run_phi_table, summarise_search


def load_config(params: dict) -> PhiConfig:
    cfg = parse_config(PhiConfig, section(params, "phi"), "phi")
    cfg.check_experiments(section(params, "experiments"))
    section(params, "datasets", cfg.dataset)
    return cfg


def data_dims(experiments: dict) -> dict[str, int]:
    """Input dimension of each experiment data set, from its prepared meta.json (absent: skipped)."""
    dims = {}
    for spec in experiments.values():
        meta = ROOT / "data" / "prepared" / spec["dataset"] / "meta.json"
        if meta.is_file():
            dims[spec["dataset"]] = math.prod(json.loads(meta.read_text(encoding="utf-8"))["input_shape"])
    return dims


def search_data(cfg: PhiConfig) -> list[SearchData]:
    from landscape.data.synthetic import gaussian_mixture

    s = cfg.search
    n_train = s.training.train_examples
    out = []
    for D in s.mixture_dims:
        ds = gaussian_mixture(num_classes=s.mixture_classes, dim=D, separation=s.mixture_separation, n=n_train + s.mixture_test,
                              seed=s.mixture_seed)
        out.append(SearchData(f"mixture_d{D}", (ds.x[:n_train], ds.y[:n_train]), (ds.x[n_train:], ds.y[n_train:]), s.mixture_classes,
                              "gaussian_mixture"))
    path = prepared_path(cfg.dataset)
    if not path.is_file():
        fail(f"prepared data {path} is missing; run `dvc repro prepare@{cfg.dataset}` first")
    data = torch.load(path, map_location="cpu", weights_only=False)
    (xtr, ytr), (xte, yte) = data["train"], data["test"]
    if xtr.shape[0] < n_train:
        fail(f"phi.search.training.train_examples={n_train} exceeds the {xtr.shape[0]} training examples of {cfg.dataset}")
    flat = lambda x: x.reshape(x.shape[0], -1).to(torch.float32)  # noqa: E731
    out.append(SearchData(cfg.dataset, (flat(xtr[:n_train]), ytr[:n_train]), (flat(xte), yte), int(data["num_classes"]), "prepared"))
    return out


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    started, cpu0 = time.perf_counter(), time.process_time()
    params = load_params()
    try:
        cfg = load_config(params)
    except ConfigError as exc:
        fail(str(exc))
    configure_torch()
    device = pick_device()
    datasets = search_data(cfg)
    rows = run_phi_search(cfg.search, datasets, workers=cpu_workers(device), device=device)
    experiments = {k: v for k, v in section(params, "experiments").items() if k in cfg.run_experiments}
    run_rows = run_phi_table(ROOT, experiments, section(params, "seeds"), data_dims(experiments), rank_kind=cfg.search.probe.rank)
    summary = summarise_search(rows, run_rows, cfg.ci_level, cfg.primary_experiment)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    timing = {"wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu0 + children.ru_utime + children.ru_stime,
              "candidates": len(rows), "steps_per_candidate": cfg.search.training.steps()}
    out = ROOT / "phi_search"
    write_json(out / "results.json", {"profile": params.get("profile"), "config": dataclasses.asdict(cfg), "definition": {
        "phi": "(tr(H)/d) / ||H||_2 * grad_rank / D",
        "H": "Hessian of the mean cross-entropy over the probe subset; tr(H) by Hutch++, ||H||_2 = largest |eigenvalue| by Lanczos",
        "grad_rank": f"{cfg.search.probe.rank} rank of the per-example gradient covariance "
                     "(stable: tr(Sigma)/lambda_max(Sigma); energy90: directions carrying 90% of tr(Sigma))",
        "search_phi_at": cfg.search.probe.select_at,
        "runs_phi_at": "final weights (measure outputs; ||H||_2 read as measure's lambda_max, the top eigenvalue)",
        "same_budget": f"every candidate trained with {cfg.search.training.optimizer}, lr {cfg.search.training.lr}, "
                       f"batch {cfg.search.training.batch_size}, {cfg.search.training.epochs} epochs over "
                       f"{cfg.search.training.train_examples} examples = {cfg.search.training.steps()} steps; "
                       "the random choice is a uniformly random grid member, its error averaged exactly over the grid",
    }, "candidates": rows, "runs": run_rows, "summary": summary, "timing": timing})
    write_json(out / "metrics.json", {**headline(summary), "wall_s": timing["wall_s"], "cpu_s": timing["cpu_s"]})
    pooled = summary["pooled"]
    if "mean_diff" in pooled:
        print(f"phi search: chosen - random test error = {pooled['mean_diff']:.4f} "
              f"[{pooled['diff_ci_low']:.4f}, {pooled['diff_ci_high']:.4f}], "
              f"P(beat random) = {pooled['p_beat']:.3f} (n={pooled['n_units']}): {pooled['verdict']}")
    for name, entry in summary["per_dataset"].items():
        sp = entry["spearman_init"]
        print(f"  {name} (D={entry['data_dim']}): rho(Phi, test error) = {sp['rho']:.3f} "
              f"[{sp['ci_low']:.3f}, {sp['ci_high']:.3f}] n={sp['n']}")
    for exp, sp in summary["runs"]["per_experiment"].items():
        print(f"  runs {exp}: rho(Phi, test error) = {sp['rho']} [{sp['ci_low']}, {sp['ci_high']}] n={sp['n']}")
    print(f"wall {timing['wall_s']:.1f} s, cpu {timing['cpu_s']:.1f} s, {len(rows)} candidates")


if __name__ == "__main__":
    main()
