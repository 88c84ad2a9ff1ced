"""CPU cost of the escape stage: the three-arm design it replaced against the dose-response design.

Times, in one process on the same machine, one start point of each design with the settings
of the default profile: the old design (h1_batch's width-128 MLP on 1,000 probe examples,
sgd/isotropic/projected x 3 restarts, 100 steps, lambda_max and the barrier every 50 steps,
a given top-5 basis) and the new one (``escape.settings`` of params.yaml on the h3_minima
network of seed 0: Lanczos basis, 6 scales + isotropic x 2 restarts, 150 steps, barrier every
10 steps, tr(H Sigma) every 10). The stage cost is one start's CPU seconds times the number of
start points (5 before, 10 now); the train entries of h3_minima come on top.

Usage: ``.venv/bin/python bench/escape_cost.py`` after ``stages/train.py --experiment
h3_minima --config b1000 --seed 0`` (writes ``bench/results/escape_cost.json``).
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from landscape.dynamics.escape import ModelLandscape, escape_study  # noqa: E402
from landscape.io import write_json  # noqa: E402
from landscape.models import build_model  # noqa: E402
from landscape.pipeline.escape import EscapeConfig  # noqa: E402
from landscape.pipeline.layout import Layout  # noqa: E402
from landscape.pipeline.runs import load_run  # noqa: E402
from landscape.schema import parse_config  # noqa: E402

OLD = {"steps": 100, "step_size": 1.0, "batch_size": 16, "noise_types": ("sgd", "isotropic", "projected"), "restarts": 3, "top_k": 5,
       "check_every": 50, "lambda_drop": 0.3, "barrier_tol": 0.01, "barrier_points": 9, "eig_tol": 0.01, "eig_matvecs": 40, "rule": "any"}


def main() -> None:
    torch.set_num_threads(1)
    layout = Layout(REPO)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    x, y = torch.load(layout.prepared("mnist14"), weights_only=False)["probe"]
    old_model = build_model("mlp", seed=0, in_chans=1, img_size=14, num_classes=10, width=128, depth=2, activation="relu", norm="none")
    old_land = ModelLandscape(old_model, (x[:1000], y[:1000]), chunk_size=1000)
    basis = torch.linalg.qr(torch.randn(old_land.theta0.numel(), 5, generator=torch.Generator().manual_seed(0)))[0]
    t0 = time.process_time()
    escape_study(old_land, old_land.theta0, basis=basis, seed=0, **OLD)
    old_cpu = time.process_time() - t0
    cfg = parse_config(EscapeConfig, params["escape"]["settings"], "escape.settings")
    run = load_run(layout, "h3_minima", params["escape"]["config"], 0)
    assert run.model is not None
    land = ModelLandscape(run.model, (x[: cfg.num_examples], y[: cfg.num_examples]), chunk_size=cfg.chunk_size)
    t0 = time.process_time()
    escape_study(land, land.theta0, seed=0, **cfg.study_kwargs())
    new_cpu = time.process_time() - t0
    n_new = len(params["experiments"]["h3_minima"]["seeds"])
    out = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(), "torch": torch.__version__,
           "command": ".venv/bin/python bench/escape_cost.py", "threads": 1,
           "old_per_start_cpu_s": old_cpu, "old_starts": 5, "old_stage_cpu_s": 5 * old_cpu,
           "new_per_start_cpu_s": new_cpu, "new_starts": n_new, "new_stage_cpu_s": n_new * new_cpu,
           "note": "CPU seconds (process_time) on a 2-core machine shared with other jobs: inflated, compare the two in one run"}
    write_json(REPO / "bench/results/escape_cost.json", out)
    print(out)


if __name__ == "__main__":
    main()
