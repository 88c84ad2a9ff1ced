"""Time against achieved error for the top Hessian eigenvalues: ``top_eigenpairs`` vs PyHessian.

A tolerance means something different to each tool (PyHessian: relative change of the
eigenvalue between two power iterations; ours: relative residual of the Ritz pair), so one
tolerance each says nothing about which is faster. Here both tools are run over a sweep of
their own tolerances on the same problem, every result is scored against a float64
reference, and the comparison is made at equal achieved error: for each PyHessian run, the
cheapest of our runs whose error is at most PyHessian's.

Problems (float32 products, eval-mode BatchNorm, one batch, CrossEntropyLoss):

1. ``resnet18``: timm's ResNet-18 (11.2 M parameters) on 128 seeded random CIFAR-sized inputs,
   the problem of ``bench/curvature.py``'s eig section; top-1 and top-5 (largest algebraic).
   Reference: that section's float64 Rayleigh-Ritz values (``curvature_reference.json``).
2. ``digits_resnet``: our ``resnet_small`` (width 8, BatchNorm; 19,810 parameters) trained
   5 epochs of SGD on scikit-learn's 1,797 real 8x8 digits, Hessian on 256 training images;
   top-100 by magnitude (PyHessian's power iteration finds the largest |lambda|, and this
   Hessian has negative eigenvalues larger in magnitude than its 100th positive one, so ours
   runs with ``which="LM"``; errors are taken on the magnitudes). Reference: float64 ``top_eigenpairs`` at residual 1e-9 on a
   float64 copy of the model (cached in ``eig_accuracy_reference.json``).

Ours: ``top_eigenpairs(HessianOperator(model, loss_fn, data, bn_mode="eval"), k=k, tol=tol)``
with every other argument at its default (random start vector, residual stop, multiplicity
check for k > 1, verification products). PyHessian 0.1: ``hessian(...).eigenvalues(top_n=k,
tol=tol)`` with its default ``maxIter=100`` (Yao, Gholami, Keutzer & Mahoney, IEEE BigData
2020). Set-up (graph building) is inside each timed run. Runs alternate between the tools so
that a drift of the machine's load touches both. Peak memory: the resident-set high-water
mark during the run above the RSS at its start (``/proc/self/clear_refs``, as in
``bench/memory.py``).

Targets at equal error (ours / PyHessian wall time): top-1 <= 0.4x, top-5 <= 0.25x,
top-100 <= 0.1x, judged at every PyHessian tolerance of the sweep (1e-2 and tighter: its
default 1e-3 and, for top-1, down to 1e-6).

Usage::

    .venv/bin/python bench/eig_accuracy.py           # full run (~30 min on 2 idle cores) -> bench/results/eig_accuracy.{json,md,png}
    .venv/bin/python bench/eig_accuracy.py --quick   # smoke run (~1 min) -> bench/.work/eig_accuracy_quick.{json,md,png}
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import gc
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "src"))

import curvature as cb  # noqa: E402  (bench/curvature.py: clocks, counters, PyHessian instrumentation)
from memory import _reset_peak, _status_kib  # noqa: E402  (bench/memory.py: RSS high-water mark)

from landscape.curvature import HessianOperator, top_eigenpairs  # noqa: E402
from landscape.data.base import content_hash  # noqa: E402
from landscape.io import read_json, write_json, write_text  # noqa: E402
from landscape.models import build_model  # noqa: E402

REPO = BENCH.parent
TARGETS = {1: 0.4, 5: 0.25, 100: 0.1}
PYHESSIAN_DEFAULT_TOL = 1e-3
REF_TOL = 1e-9
MIB = 2.0**20


@dataclasses.dataclass(frozen=True)
class Problem:
    """One Hessian (model, batch) and what is asked of it.

    Attributes:
        name: short name (JSON key).
        description: the model, data and training, for the tables.
        model: the float32 network in eval mode.
        x: (N, C, H, W) inputs.
        y: (N,) integer labels.
        which: ``top_eigenpairs``' ``which`` for ours ("LA" or "LM") and the order the
            errors are taken in (descending value, or descending magnitude).
        ks: numbers of eigenvalues.
        ours_tols: our tolerances per k (relative residual).
        pyhessian_tols: PyHessian's tolerances per k.
        reference: float64 reference values (ordered as ``which``) for the largest k.
        reference_note: where the reference comes from.
    """

    name: str
    description: str
    model: nn.Module
    x: Tensor
    y: Tensor
    which: str
    ks: tuple[int, ...]
    ours_tols: dict[int, tuple[float, ...]]
    pyhessian_tols: dict[int, tuple[float, ...]]
    reference: list[float]
    reference_note: str


# --------------------------------------------------------------------------------------
# Problems and references
# --------------------------------------------------------------------------------------

REF_CACHE = REPO / "bench/results/eig_accuracy_reference.json"


def ordered(values: Sequence[float], which: str) -> list[float]:
    """Values in the order the errors are paired: descending (LA) or by descending magnitude (LM)."""
    return sorted(values, key=(lambda v: -abs(v)) if which == "LM" else (lambda v: -v))


def rel_errors(values: Sequence[float], ref: Sequence[float], which: str) -> list[float]:
    """Relative errors of the k found values against the k wanted reference values.

    LA: |v_i - r_i| / |r_i| in descending order. LM: the same on the magnitudes |v| and |r|
    in descending order (the k largest |lambda|, what LM asks for): in a bulk of eigenvalues
    of both signs at nearly equal magnitude (here about +-0.13), a set that holds -0.1250 where
    the reference holds +0.1252 is right to 2e-3 in magnitude, whereas pairing signed values
    in order would shift every pair after it and report errors near 2.
    """
    if which == "LM":
        r = sorted((abs(x) for x in ordered(ref, which)[: len(values)]), reverse=True)
        v = sorted((abs(x) for x in values), reverse=True)
    else:
        r = sorted(ordered(ref, which)[: len(values)], reverse=True)
        v = sorted(values, reverse=True)
    return [abs(a - b) / abs(b) for a, b in zip(v, r)]


def float64_reference(name: str, model: nn.Module, x: Tensor, y: Tensor, k: int, which: str) -> tuple[list[float], str]:
    """Reference eigenvalues from ``top_eigenpairs`` in float64 (residual ``REF_TOL``), cached by content.

    Each value has an exact eigenvalue of the float64 Hessian within its residual; the
    multiplicity check certifies that no wanted copy was missed.
    """
    tensors = [t.detach() for t in model.parameters()] + [t.detach() for t in model.buffers()] + [x, y]
    key = {"problem": name, "k": k, "which": which, "tol": REF_TOL, "content_sha256": content_hash(*tensors)}
    entries = read_json(REF_CACHE).get("entries", []) if REF_CACHE.exists() else []
    for e in entries:
        if e["key"] == key:
            cb.log(f"{name}: float64 reference from {REF_CACHE.name}")
            return e["values"], e["note"]
    cb.log(f"{name}: float64 reference, k={k} {which}")
    clock = cb.Clock()
    m64 = copy.deepcopy(model).to(torch.float64).eval()
    op = HessianOperator(m64, nn.CrossEntropyLoss(), [(x.to(torch.float64), y)], bn_mode="eval")
    res = top_eigenpairs(op, k=k, which=which, tol=REF_TOL, seed=123)
    if not res.converged:
        raise RuntimeError(f"{name}: the float64 reference did not converge (residuals up to {float(res.residuals.max()):.1e})")
    wall = clock.read()[0]
    values = ordered(res.values.tolist(), which)
    note = (f"float64 top_eigenpairs(k={k}, which={which!r}, tol={REF_TOL}, seed=123) on a float64 copy of the model: "
            f"{res.num_matvecs} products, {wall:.0f} s; largest relative residual {float(res.residuals.max()):.1e}, "
            f"explicit {float(res.true_residuals.max()):.1e}")
    entries = [e for e in entries if e["key"] != key] + [{
        "key": key, "values": values, "note": note,
        "computed_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }]
    write_json(REF_CACHE, {"about": "float64 reference eigenvalues of bench/eig_accuracy.py, keyed by problem and content hash",
                           "entries": entries})
    del op, m64
    return values, note


def resnet18_problem(quick: bool) -> Problem:
    """The eig problem of ``bench/curvature.py`` (its config: timm resnet18, or resnet_small with --quick)."""
    cfg = cb.QUICK if quick else cb.DEFAULT
    model = build_model(cfg.model, num_classes=10, in_chans=3, img_size=cfg.img_size, seed=cfg.seed, **dict(cfg.model_kwargs)).eval()
    x, y = cb.random_batch(cfg.num_examples, (3, cfg.img_size, cfg.img_size), 10, cfg.seed, torch.float32)
    k = 5
    cached = cb.cached_reference(cb.problem_key(cfg, model, x, y)) if not quick else None
    if cached is not None:
        reference, note = cached["values"], (
            f"bench/curvature.py's float64 Rayleigh-Ritz reference ({cb.REF_CACHE.name}; relative residuals up to "
            f"{max(cached['relative_residuals']):.1e}, estimated relative errors up to {max(cached['estimated_relative_error']):.0e})")
    else:
        reference, note = float64_reference(cfg.model, model, x, y, k, "LA")
    return Problem(
        name=cfg.model,
        description=(f"{cfg.model} {dict(cfg.model_kwargs) or ''} ({sum(p.numel() for p in model.parameters()):,} parameters), "
                     f"{cfg.num_examples} random N(0,1) inputs of shape [3, {cfg.img_size}, {cfg.img_size}] and uniform labels "
                     f"(seed {cfg.seed}), at initialisation"),
        model=model, x=x, y=y, which="LA", ks=(1, 5),
        ours_tols={1: (1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 5e-3, 3e-3, 2e-3, 1e-3, 1e-4),
                   5: (1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.01, 1e-3)} if not quick else {1: (1e-1, 1e-2, 1e-4), 5: (1e-1, 1e-3)},
        pyhessian_tols={1: (1e-2, 1e-3, 1e-4, 1e-5, 1e-6), 5: (1e-2, 1e-3)} if not quick else {1: (1e-2, 1e-3), 5: (1e-2,)},
        reference=reference, reference_note=note,
    )


def digits_problem(quick: bool) -> Problem:
    """resnet_small trained on scikit-learn's real 8x8 digits; top-100 (top-10 with --quick) by magnitude."""
    from landscape.data import load_dataset

    width, epochs, n, k = (4, 2, 64, 10) if quick else (8, 5, 256, 100)
    ds = load_dataset("digits")
    X, Y = ds.x, ds.y
    model = build_model("resnet_small", num_classes=10, in_chans=1, img_size=8, seed=0, width=width, norm="bn")
    g = torch.Generator().manual_seed(2)
    loss = cb.train_sgd(model, X, Y, epochs, 0.05, g)
    idx = torch.randperm(len(Y), generator=g)[:n]
    x, y = X[idx].contiguous(), Y[idx].contiguous()
    name = "digits_resnet"
    reference, note = float64_reference(name, model, x, y, k, "LM")
    return Problem(
        name=name,
        description=(f"resnet_small (width {width}, BatchNorm; {sum(p.numel() for p in model.parameters()):,} parameters) trained "
                     f"{epochs} epochs of SGD (lr 0.05, momentum 0.9, batch 64, seed 2; train loss {loss:.3f}) on scikit-learn's "
                     f"1,797 real 8x8 digits; Hessian of the mean loss on {n} of the training images"),
        model=model, x=x, y=y, which="LM", ks=(k,),
        ours_tols={k: (1.0, 0.3, 0.1, 0.03, 1e-2, 1e-3)} if not quick else {k: (1e-1, 1e-3)},
        pyhessian_tols={k: (1e-2, 1e-3)} if not quick else {k: (1e-2,)},
        reference=reference, reference_note=note,
    )


# --------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------


def timed(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``fn`` with wall, CPU and peak-RSS-above-start accounting."""
    gc.collect()
    _reset_peak()
    base = _status_kib("VmRSS")
    clock = cb.Clock()
    out = fn()
    wall, cpu = clock.read()
    peak = _status_kib("VmHWM") - base
    return {**out, "wall_s": wall, "cpu_s": cpu, "peak_rss_above_start_mib": peak / 1024}


def run_ours(p: Problem, k: int, tol: float) -> dict[str, Any]:
    def fn() -> dict[str, Any]:
        op = cb.Counted(HessianOperator(p.model, nn.CrossEntropyLoss(), [(p.x, p.y)], bn_mode="eval"))
        res = top_eigenpairs(op, k=k, which=p.which, tol=tol)
        return {
            "values": res.values.tolist(), "num_hvps": op.count, "converged": res.converged, "num_restarts": res.num_restarts,
            "max_residual": float(res.residuals.max()), "max_true_residual": float(res.true_residuals.max()),
        }

    row = timed(fn)
    return {"method": "ours", "k": k, "tol": tol,
            "call": f"top_eigenpairs(HessianOperator(model, loss_fn, data, bn_mode='eval'), k={k}"
                    + (f", which={p.which!r}" if p.which != "LA" else "") + f", tol={tol:g})", **row}


def run_pyhessian(p: Problem, k: int, tol: float, seed: int = 0) -> dict[str, Any]:
    def fn() -> dict[str, Any]:
        with cb.pyhessian_instrumented() as rec:
            H = cb.pyhessian_hessian(p.model, nn.CrossEntropyLoss(), p.x, p.y)
            try:
                with cb.seeded_global_rng(seed):
                    values, _ = H.eigenvalues(top_n=k, tol=tol)  # maxIter=100 (default)
            finally:
                del H
                cb.release_grads(p.model)
        events = rec["events"]
        starts = [i for i, e in enumerate(events) if e[0] == "start"] + [len(events)]
        per_phase = [sum(1 for e in events[a:b] if e[0] == "hvp") for a, b in zip(starts, starts[1:])]
        return {"values": [float(v) for v in values], "num_hvps": sum(per_phase), "hvps_per_eigenvalue": per_phase,
                "phases_at_maxIter": sum(n >= 100 for n in per_phase)}

    row = timed(fn)
    return {"method": "pyhessian", "k": k, "tol": tol,
            "call": f"hessian(model, loss_fn, data=(x, y), cuda=False).eigenvalues(top_n={k}, tol={tol:g}) [maxIter=100]", **row}


def score(rows: list[dict[str, Any]], reference: Sequence[float], which: str) -> None:
    for r in rows:
        r["rel_errors"] = rel_errors(r["values"], reference, which)
        r["max_rel_error"] = max(r["rel_errors"])


def equal_accuracy(rows: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """For each PyHessian run: the cheapest (wall) of our runs whose max error is at most its error."""
    ours = [r for r in rows if r["method"] == "ours"]
    out = []
    for ph in (r for r in rows if r["method"] == "pyhessian"):
        ok = [o for o in ours if o["max_rel_error"] <= ph["max_rel_error"]]
        best = min(ok, key=lambda o: o["wall_s"]) if ok else None
        out.append({
            "pyhessian_tol": ph["tol"], "pyhessian_error": ph["max_rel_error"], "pyhessian_wall_s": ph["wall_s"],
            "pyhessian_hvps": ph["num_hvps"],
            "ours_tol": None if best is None else best["tol"], "ours_error": None if best is None else best["max_rel_error"],
            "ours_wall_s": None if best is None else best["wall_s"], "ours_hvps": None if best is None else best["num_hvps"],
            "wall_ratio": None if best is None else best["wall_s"] / ph["wall_s"],
            "cpu_ratio": None if best is None else best["cpu_s"] / ph["cpu_s"],
            "hvp_ratio": None if best is None else best["num_hvps"] / ph["num_hvps"],
        })
    target = TARGETS.get(k)
    ratios = [c["wall_ratio"] for c in out]
    worst = None if any(r is None for r in ratios) or not ratios else max(ratios)
    at_default = next((c["wall_ratio"] for c in out if c["pyhessian_tol"] == PYHESSIAN_DEFAULT_TOL), None)
    return {
        "points": out, "target": target, "worst_wall_ratio": worst, "wall_ratio_at_pyhessian_default_tol": at_default,
        "pass": None if target is None else (worst is not None and worst <= target),
    }


def run_problem(p: Problem, ks: Sequence[int] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"description": p.description, "which": p.which, "reference": p.reference,
                              "reference_note": p.reference_note, "per_k": {}}
    for k in p.ks if ks is None else [k for k in p.ks if k in ks]:
        rows: list[dict[str, Any]] = []
        ours_t, ph_t = list(p.ours_tols[k]), list(p.pyhessian_tols[k])
        for i in range(max(len(ours_t), len(ph_t))):  # alternate the tools
            if i < len(ours_t):
                rows.append(run_ours(p, k, ours_t[i]))
                cb.log(f"{p.name} k={k}: ours tol {ours_t[i]:g}: {rows[-1]['num_hvps']} HVPs, {rows[-1]['wall_s']:.1f} s")
            if i < len(ph_t):
                rows.append(run_pyhessian(p, k, ph_t[i]))
                cb.log(f"{p.name} k={k}: pyhessian tol {ph_t[i]:g}: {rows[-1]['num_hvps']} HVPs, {rows[-1]['wall_s']:.1f} s")
        score(rows, p.reference, p.which)
        result["per_k"][str(k)] = {"rows": rows, "equal_accuracy": equal_accuracy(rows, k)}
    return result


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


def fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# Top eigenvalues at equal accuracy: top_eigenpairs vs PyHessian",
        "",
        f"Command: `{result['command']}`. Machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs, torch threads "
        f"{m['torch_threads']}; Python {m['python']}, torch {m['torch']}, PyHessian {m['pyhessian']}, timm {m['timm']}; "
        f"date {m['date_utc']}; load average at start {m['loadavg_start']}, at end {result['loadavg_end']}; total wall time "
        f"{result['total_wall_s']:.0f} s.",
        "",
        "Each row is one run of one tool at one of its own tolerances (ours: relative residual; PyHessian: relative change "
        "of the eigenvalue between iterations, maxIter=100). Error: the largest relative error of the k values against the "
        "float64 reference. Time includes the set-up. Peak: resident-set high-water mark above the RSS at the run's start. "
        "The equal-accuracy table pairs each PyHessian run with the cheapest of our runs whose error is at most its error.",
        "",
        "![time against achieved error](eig_accuracy.png)" if not result.get("quick") else "",
        "",
    ]
    for name, pr in result["problems"].items():
        lines += [f"## {name}", "", f"{pr['description']}. Errors: {'of the magnitudes |lambda|, in descending order' if pr['which'] == 'LM' else 'of the values, in descending order'}. "
                  f"Reference: {pr['reference_note']}.", ""]
        for k, block in sorted(pr["per_k"].items(), key=lambda kv: int(kv[0])):
            if "from_run" in block:
                fr = block["from_run"]
                lines += [f"### top-{k}", "", f"Measured by an earlier run (`{fr['command']}`, {fr['machine']['date_utc']}, load average "
                          f"at start {fr['machine']['loadavg_start']}, at end {fr['loadavg_end']}).", ""]
            else:
                lines += [f"### top-{k}", ""]
            lines += ["| tool | tol | HVPs | wall s | CPU s | peak MiB | max rel. error | notes |",
                      "|---|---:|---:|---:|---:|---:|---:|---|"]
            for r in sorted(block["rows"], key=lambda r: (r["method"], -r["tol"])):
                if r["method"] == "ours":
                    note = f"converged={r['converged']}, restarts {r['num_restarts']}, residual {r['max_residual']:.1e}"
                else:
                    note = f"{r['phases_at_maxIter']} of {k} eigenvalues stopped at maxIter"
                lines.append(f"| {r['method']} | {r['tol']:g} | {r['num_hvps']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                             f"{r['peak_rss_above_start_mib']:.0f} | {r['max_rel_error']:.1e} | {note} |")
            ea = block["equal_accuracy"]
            lines += ["", f"Equal accuracy (target ours/PyHessian wall <= {fmt(ea['target'], 'g')}x at every PyHessian tol):", "",
                      "| PyHessian tol | its error | its wall s | its HVPs | our tol | our error | our wall s | our HVPs | wall ratio | CPU ratio | HVP ratio |",
                      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for c in ea["points"]:
                lines.append(
                    f"| {c['pyhessian_tol']:g} | {c['pyhessian_error']:.1e} | {c['pyhessian_wall_s']:.1f} | {c['pyhessian_hvps']} | "
                    f"{fmt(c['ours_tol'], 'g')} | {fmt(c['ours_error'], '.1e')} | {fmt(c['ours_wall_s'], '.1f')} | {fmt(c['ours_hvps'], 'd')} | "
                    f"{fmt(c['wall_ratio'], '.2f')}x | {fmt(c['cpu_ratio'], '.2f')}x | {fmt(c['hvp_ratio'], '.2f')}x |")
            verdict = "n/a" if ea["pass"] is None else ("**PASS**" if ea["pass"] else "**FAIL**")
            lines += ["", f"Worst wall ratio over the sweep {fmt(ea['worst_wall_ratio'], '.2f')}x, at PyHessian's default tol "
                      f"{fmt(ea['wall_ratio_at_pyhessian_default_tol'], '.2f')}x: {verdict}.", ""]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Time against achieved error, one panel per (problem, k), both tools' sweeps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, k, block) for name, pr in result["problems"].items() for k, block in pr["per_k"].items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (name, k, block) in zip(axes[0], panels):
        for method, style in (("ours", "o-"), ("pyhessian", "s--")):
            rs = sorted((r for r in block["rows"] if r["method"] == method), key=lambda r: r["max_rel_error"])
            ax.loglog([r["max_rel_error"] for r in rs], [r["wall_s"] for r in rs], style,
                      label="top_eigenpairs" if method == "ours" else "PyHessian")
        ax.set_title(f"{name}, top-{k}")
        ax.set_xlabel("max relative error")
        ax.set_ylabel("wall time (s)")
        ax.grid(True, which="both", alpha=0.3)
        ax.invert_xaxis()
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke configuration (about a minute)")
    ap.add_argument("--problems", nargs="+", choices=("resnet18", "digits"), default=["resnet18", "digits"])
    ap.add_argument("--ks", nargs="+", type=int, default=None, help="only these k of the chosen problems (with --update the others stay)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (recorded)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path; .md and .png beside it")
    ap.add_argument("--rerender", type=Path, default=None, metavar="JSON",
                    help="rescore the stored values of an existing results JSON and rewrite its tables and plot (no runs)")
    ap.add_argument("--update", action="store_true",
                    help="keep the other problems of the existing JSON at --out and replace only those run now")
    args = ap.parse_args(argv)
    if args.rerender is not None:
        result = read_json(args.rerender)
        for name, pr in result["problems"].items():
            for k, block in pr["per_k"].items():
                score(block["rows"], pr["reference"], pr["which"])
                block["equal_accuracy"] = equal_accuracy(block["rows"], int(k))
        write_json(args.rerender, result)
        write_text(args.rerender.with_suffix(".md"), markdown(result))
        plot(result, args.rerender.with_suffix(".png"))
        cb.log(f"re-rendered {args.rerender}")
        return result
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    global REF_CACHE
    if args.quick:
        REF_CACHE = REPO / "bench/.work/eig_accuracy_reference_quick.json"
    out = args.out or (REPO / ("bench/.work/eig_accuracy_quick.json" if args.quick else "bench/results/eig_accuracy.json"))
    torch.set_num_threads(args.threads)
    clock = cb.Clock()
    result: dict[str, Any] = {
        "command": "python bench/eig_accuracy.py" + ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(sys.argv[1:] if argv is None else argv)),
        "quick": args.quick, "machine": cb.machine_info(torch.get_num_threads()), "targets": TARGETS, "problems": {},
    }
    builders = {"resnet18": resnet18_problem, "digits": digits_problem}
    for name in args.problems:
        p = builders[name](args.quick)
        result["problems"][p.name] = run_problem(p, args.ks)
        del p
    result["total_wall_s"] = clock.read()[0]
    result["loadavg_end"] = cb.loadavg()
    if args.update and out.exists():  # the problems and k not run now, each with the run that made it
        old = read_json(out)
        merged: dict[str, Any] = {}
        for name, pr in old["problems"].items():
            made = {k: old[k] for k in ("command", "machine", "total_wall_s", "loadavg_end")}
            blocks = {k: {**b, "from_run": b.get("from_run", pr.get("from_run", made))} for k, b in pr["per_k"].items()}
            merged[name] = {**{f: v for f, v in pr.items() if f != "from_run"}, "per_k": blocks}
        for name, pr in result["problems"].items():
            merged[name] = {**merged.get(name, {}), **{f: v for f, v in pr.items() if f != "per_k"},
                            "per_k": {**merged.get(name, {}).get("per_k", {}), **pr["per_k"]}}
        result["problems"] = merged
    write_json(out, result)
    write_text(out.with_suffix(".md"), markdown(result))
    plot(result, out.with_suffix(".png"))
    cb.log(f"wrote {out} and its .md and .png")
    return result


if __name__ == "__main__":
    main()
