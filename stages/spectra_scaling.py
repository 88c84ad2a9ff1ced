"""spectra_scaling stage: the scaling law of the Hessian's norm, spectra against RMT, gradient subspaces.

Usage: python stages/spectra_scaling.py

Reads measure/ only (curvature.json and krylov.pt of every measured run): fits
``||H||_2 = A n^alpha e^(beta L)`` over the ``scaling`` grid at init and after training (and
the same law for the trace, the bulk variance and the spike count), compares every
spectrum with a semicircle and a spiked model (spikes counted against C - 1 and C), and
tabulates the ``C ~ diag(H)`` correlations and gradient ranks across batch size. Writes
spectra_scaling/results.json (every number with its CI and n) and
spectra_scaling/metrics.json (alpha, beta and their CIs, for dvc metrics).
"""

from __future__ import annotations

import time

from _common import ROOT, ConfigError, fail, load_params, section

from landscape.io import write_json
from landscape.schema import parse_config
from landscape.stats.spectra_scaling import SpectraScalingConfig, headline, run_spectra_scaling


def main() -> None:
    started = time.perf_counter()
    params = load_params()
    try:
        cfg = parse_config(SpectraScalingConfig, section(params, "spectra_scaling"), "spectra_scaling")
        experiments, seeds = section(params, "experiments"), section(params, "seeds")
    except ConfigError as exc:
        fail(str(exc))
    try:
        results = run_spectra_scaling(ROOT, experiments, seeds, cfg)
    except ConfigError as exc:
        fail(str(exc))
    out = ROOT / "spectra_scaling"
    write_json(out / "results.json", {"profile": params.get("profile"), "seeds": seeds, **results})
    metrics = headline(results)
    write_json(out / "metrics.json", metrics)
    for key, m in metrics.items():
        if "alpha" in m:
            print(f"{key}: alpha={m['alpha']:.3g} [{m['alpha_ci_low']:.3g}, {m['alpha_ci_high']:.3g}] "
                  f"beta={m['beta']:.3g} [{m['beta_ci_low']:.3g}, {m['beta_ci_high']:.3g}] preferred={m['preferred']} n={m['n_configs']}")
    if "spikes" in metrics:
        s = metrics["spikes"]
        print(f"spikes: {s['n_runs']} runs, share C-1 = {s['share_c_minus_1']:.2f}, share C = {s['share_c']:.2f}")
    print(f"spectra_scaling: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
