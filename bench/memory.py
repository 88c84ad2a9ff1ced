"""Peak memory of the memory-bounded estimators against N and P, on the CPU.

Points (float32, one torch thread each):

- ``covariance``: the gradient covariance of an MLP 64 -> w -> 10 (P = 75 w + 10) on N
  random examples, ``storage="dense"`` (the (N, P) matrix and its centred copy) against
  ``storage="streamed"`` under a fixed 64 MiB budget for per-sample gradients (chunks of 16
  examples), each followed by what ``measure`` asks of it: the spectrum, the gradient rank,
  the top-10 eigenvectors and kappa / principal angles against 10 orthonormal directions.
- ``slq``: ``spectral_density`` (50 Lanczos steps) on a diagonal (P, P) operator (O(P) memory
  of its own, so the estimator's memory shows), all probes at once against
  ``probe_batch_size=1``.
- ``trace``: Hutchinson and Hutch++ with 90 products on the same operator, all probes at once
  against ``probe_batch_size=10``.
- ``lanczos``: ``top_eigenpairs`` (k pairs, default basis) on the same operator: measured peak
  against :func:`~landscape.curvature.lanczos.lanczos_basis_bytes`.

Each point runs in its own process: after the imports, the set-up (model, data, operator,
directions) and a warm-up of the same computation at a tiny size (lazy imports of
``torch.func``, LAPACK initialisation) the kernel's resident-set high-water mark is reset
(``/proc/self/clear_refs`` = 5) and the current RSS taken as the baseline; the point's
figure is the high-water mark after the computation minus that baseline. torch's CPU tensors
are plain allocations that RSS sees (``tracemalloc`` does not). The parent also records each
child's own peak from ``os.wait4`` (rusage) as a cross-check. "stated" is the module's own
memory formula (``dense_covariance_bytes``, ``streamed_covariance_bytes``,
``tridiagonal_basis_bytes`` plus the probes, ``lanczos_basis_bytes``).

Usage::

    .venv/bin/python bench/memory.py            # full run (~15 min on 2 cores) -> bench/results/memory.{json,md}
    .venv/bin/python bench/memory.py --quick    # smoke run (~1 min) -> bench/.work/memory_quick.{json,md}
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MIB = 2.0**20
COVARIANCE_BUDGET = 64 * 2**20


# --------------------------------------------------------------------------------------
# Child: one point
# --------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as fh:
        match = re.search(rf"^{field}:\s+(\d+) kB", fh.read(), re.M)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}")
    return int(match.group(1))


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w", encoding="utf-8") as fh:
        fh.write("5")  # resets VmHWM (peak RSS) to the current RSS (Linux >= 4.0)


def run_point(point: dict[str, Any]) -> dict[str, Any]:
    """Set the point up, reset the peak, run it; return its figures."""
    sys.path.insert(0, str(REPO / "src"))
    import torch
    import torch.nn.functional as F
    from torch import Tensor, nn

    import landscape  # noqa: F401  (CPU kernel pins)
    from landscape.curvature import (
        SymmetricOperator,
        dense_covariance_bytes,
        gradient_covariance,
        gradient_rank,
        noise_alignment,
        spectral_density,
        streamed_covariance_bytes,
        top_eigenpairs,
    )
    from landscape.curvature.lanczos import lanczos_basis_bytes, tridiagonal_basis_bytes
    from landscape.curvature.trace import trace

    torch.set_num_threads(1)
    torch.manual_seed(0)  # the model's initialisation
    kind, P = point["kind"], int(point["P"])
    g = torch.Generator().manual_seed(0)
    out: dict[str, Any] = {}

    class Diagonal(SymmetricOperator):
        """diag(d): O(P) memory of its own; eigenvalues 1, 1/2, ... (top ones well separated)."""

        def __init__(self, n: int) -> None:
            self.d = 1.0 / torch.arange(1, n + 1, dtype=torch.float32)
            self.shape, self.dtype, self.device = (n, n), torch.float32, torch.device("cpu")

        def _matmat(self, V: Tensor) -> Tensor:
            return V * self.d.unsqueeze(1)

    if kind == "covariance":
        N, width = int(point["N"]), max(1, round((P - 10) / 75))
        model = nn.Sequential(nn.Linear(64, width), nn.Tanh(), nn.Linear(width, 10))
        P = out["P"] = sum(p.numel() for p in model.parameters())
        x, y = torch.randn(N, 64, generator=g), torch.randint(0, 10, (N,), generator=g)
        k = 10
        H = torch.linalg.qr(torch.randn(P, k, generator=g))[0]

        def compute(small: bool = False) -> None:
            data = [(x[:4], y[:4])] if small else [(x, y)]
            sigma = gradient_covariance(model, F.cross_entropy, data, chunk_size=16, storage=point["storage"],
                                        memory_bytes=point["memory_bytes"])
            if small:
                noise_alignment(H, sigma)
                return
            rank = gradient_rank(sigma)
            eig = sigma.eigenpairs(k)
            align = noise_alignment(H, sigma)
            out.update(lambda_max=rank.lambda_max, trace=rank.trace, stable_rank=rank.stable_rank_gradients,
                       kappa=align.kappa, top_vector_norm=float(eig.vectors[:, 0].norm()), storage=sigma.storage,
                       panel_rows=sigma.panel_rows,
                       per_sample_passes=sigma.per_sample_passes if sigma.storage == "streamed" else 1.0)
            if sigma.storage == "dense":
                out["stated_bytes"] = dense_covariance_bytes(N, P, 4)
            else:
                out["stated_bytes"] = streamed_covariance_bytes(N, P, 4, panel_rows=sigma.panel_rows, chunk_size=16, num_vectors=k)

    elif kind == "slq":
        op = Diagonal(P)
        probes, steps, batch = int(point["probes"]), int(point["steps"]), point["probe_batch_size"]

        def compute(small: bool = False) -> None:
            if small:
                spectral_density(Diagonal(100), num_probes=2, num_steps=5, probe_batch_size=batch and 1, num_grid=200)
                return
            dens = spectral_density(op, num_probes=probes, num_steps=steps, seed=0, probe_batch_size=batch, num_grid=200)
            held = probes if batch is None else batch
            out.update(moment1=float(dens.moments[0]), moment2=float(dens.moments[1]),
                       stated_bytes=tridiagonal_basis_bytes(P, held, steps, itemsize=4) + held * P * (4 + 8))

    elif kind == "trace":
        op = Diagonal(P)
        method, batch = point["method"], point["probe_batch_size"]

        def compute(small: bool = False) -> None:
            if small:
                trace(Diagonal(100), 12, method, probe_batch_size=batch and 2)
                return
            est = trace(op, 90, method, seed=0, probe_batch_size=batch)
            out.update(value=est.value, stderr=est.stderr)

    elif kind == "lanczos":
        op = Diagonal(P)
        k = int(point["k"])

        def compute(small: bool = False) -> None:
            if small:
                top_eigenpairs(Diagonal(100), k=2, tol=1e-4, seed=0)
                return
            res = top_eigenpairs(op, k=k, tol=1e-4, seed=0)
            out.update(top=float(res.values[0]), num_matvecs=res.num_matvecs,
                       stated_bytes=lanczos_basis_bytes(P, k, itemsize=4))
    else:
        raise ValueError(f"unknown point kind {kind!r}")

    compute(small=True)  # warm-up: lazy imports and library initialisation belong to the set-up
    gc.collect()
    _reset_peak()
    baseline = _status_kib("VmRSS")
    started = time.perf_counter()
    compute()
    out["wall_s"] = time.perf_counter() - started
    out["peak_kib"] = _status_kib("VmHWM") - baseline
    out["baseline_kib"] = baseline
    return out


# --------------------------------------------------------------------------------------
# Parent: the grid, one process per point
# --------------------------------------------------------------------------------------


def grid(quick: bool) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    if quick:
        cov = [(64, 10**4), (256, 10**4), (64, 10**5)]
        big: list[tuple[int, int, int]] = []
        slq_P, slq_probes, trace_P, lanczos_P = [10**4, 10**5], [(10**5, 2), (10**5, 8)], [10**5], [10**5]
    else:
        cov = sorted({(n, 10**5) for n in (256, 1024, 4096)} | {(256, p) for p in (10**4, 10**5, 10**6)})
        big = [(1024, 10**6, 256 * 2**20)]  # dense would need 12 GB
        slq_P, slq_probes = [10**4, 10**5, 10**6], [(10**5, 2), (10**5, 32)]
        trace_P, lanczos_P = [10**5, 10**6], [10**5, 10**6]
    for N, P in cov:
        for storage in ("dense", "streamed"):
            points.append(dict(kind="covariance", storage=storage, N=N, P=P, memory_bytes=COVARIANCE_BUDGET))
    for N, P, budget in big:
        points.append(dict(kind="covariance", storage="streamed", N=N, P=P, memory_bytes=budget))
    slq = [(P, 8) for P in slq_P] + slq_probes
    for P, probes in sorted(set(slq)):
        for batch in (None, 1):
            points.append(dict(kind="slq", P=P, probes=probes, steps=50, probe_batch_size=batch))
    for P in trace_P:
        for method in ("hutchinson", "hutch++"):
            for batch in (None, 10):
                points.append(dict(kind="trace", P=P, method=method, probe_batch_size=batch))
    for P in lanczos_P:
        for k in (5, 20):
            points.append(dict(kind="lanczos", P=P, k=k))
    return points


def run_child(point: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(point)], stdout=subprocess.PIPE, env=env,
                            text=True)
    assert proc.stdout is not None
    text = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        return dict(point, error=f"exit code {proc.returncode}")
    res = json.loads(text.strip().splitlines()[-1])
    res["child_maxrss_kib"] = usage.ru_maxrss  # the child's own peak since the reset (Linux: KiB)
    return dict(point, **res)


def _fmt_mib(kib: float | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:,.1f}"


def _batching(row: dict[str, Any]) -> str:
    if row["kind"] == "covariance":
        return f"{row['storage']} (panel {row['panel_rows']})" if row.get("storage") == "streamed" else "dense"
    if row["kind"] == "lanczos":
        return f"k = {row['k']}"
    b = row["probe_batch_size"]
    label = "all at once" if b is None else f"batch {b}"
    return f"{row['method']}, {label}" if row["kind"] == "trace" else f"{row['probes']} probes, {label}"


def _agreement(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Largest relative difference of the figures between storages / batchings of one point."""
    keys = {"covariance": ("lambda_max", "trace", "kappa"), "slq": ("moment1", "moment2"), "trace": ("value",)}
    worst: dict[str, float] = {}
    for kind, fields in keys.items():
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for r in rows:
            if r["kind"] == kind and "error" not in r:
                groups.setdefault((r.get("N"), r["P"], r.get("probes"), r.get("method")), []).append(r)
        diffs = [abs(a[f] - b[f]) / max(abs(b[f]), 1e-300) for g in groups.values() for a in g for b in g for f in fields]
        worst[kind] = max(diffs, default=float("nan"))
    return worst


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# Memory benchmark: streamed covariance, probe-batched SLQ and trace, Lanczos basis",
        "",
        f"Command: `{result['command']}`.",
        "",
        f"Machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable), one torch thread per "
        f"point; Python {m['python']}, torch {m['torch']}, numpy {m['numpy']}; {m['platform']}; date {m['date_utc']}; "
        f"load average at start {m['loadavg_start']}; total wall time {result['wall_s']:.0f} s.",
        "",
        "Peak = resident-set high-water mark of the point's own process after set-up (imports, model, data, "
        "operator) minus its RSS then (the mark is reset through /proc/self/clear_refs); float32; one process per "
        "point. Stated = the module's memory formula for what the estimator holds (activations and allocator "
        "slack come on top). Covariance: MLP 64 -> w -> 10 on N random examples; streamed under a 64 MiB budget "
        "for per-sample gradients (chunks of 16), 'passes' = per-sample gradients computed / N. SLQ: 50 steps; "
        "trace: 90 products; SLQ, trace and Lanczos on a diagonal operator.",
        "",
        "| kind | variant | N | P | stated MiB | peak MiB | wall s | passes |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["points"]:
        if "error" in r:
            lines.append(f"| {r['kind']} | {r.get('storage', '')} | {r.get('N', '')} | {r['P']:,} | | {r['error']} | | |")
            continue
        stated = r.get("stated_bytes")
        passes = f"{r['per_sample_passes']:.1f}" if "per_sample_passes" in r else ""
        lines.append(
            f"| {r['kind']} | {_batching(r)} | {r.get('N', '')} | {r['P']:,} | "
            f"{'' if stated is None else f'{stated / MIB:,.1f}'} | {_fmt_mib(r['peak_kib'])} | {r['wall_s']:.1f} | {passes} |"
        )
    agree = result["agreement"]
    lines += [
        "",
        "Largest relative difference between the variants of one point (dense vs streamed: lambda_max, tr Sigma, "
        f"kappa; SLQ: first two moments; trace: value): covariance {agree['covariance']:.1e}, SLQ {agree['slq']:.1e}, "
        f"trace {agree['trace']:.1e}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small grid (smoke run)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (the .md goes beside it)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(run_point(json.loads(args.child))))
        return
    sys.path.insert(0, str(REPO / "src"))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from curvature import machine_info

    from landscape.io import write_json, write_text

    out = args.out or (REPO / ("bench/.work/memory_quick.json" if args.quick else "bench/results/memory.json"))
    started = time.perf_counter()
    info = machine_info(threads=1)
    rows = []
    for point in grid(args.quick):
        row = run_child(point)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "command": "python bench/memory.py" + (" --quick" if args.quick else "") + (f" --out {args.out}" if args.out else ""),
        "machine": info,
        "wall_s": time.perf_counter() - started,
        "covariance_budget_bytes": COVARIANCE_BUDGET,
        "points": rows,
        "agreement": _agreement(rows),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    write_text(out.with_suffix(".md"), markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
