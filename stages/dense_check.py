"""dense_check stage: the measure stage's estimates against exact spectra of the small nets.

Usage: python stages/dense_check.py

For each <experiment>/<config> of dense_check.runs (seed dense_check.seed): the dense Hessian
of the measured loss (the measure stage's probe data and bn_mode) by double-backward products,
all its eigenvalues in float64, and against them the estimates in
measure/<exp>/<cfg>/seeds/seed<k>/{curvature.json, krylov.pt}: W1 of the SLQ measure, top-k
and bottom-k Ritz values vs their certificates, the trace vs its interval, the log-det
curvature part. Writes dense_check/{results.json, metrics.json} and
dense_check/spectra/<exp>/<cfg>/seed<k>.npz.
"""

import _common  # noqa: F401  (src/ on sys.path; import landscape pins the CPU kernels)

from landscape.pipeline import dense_check
from landscape.pipeline.cli import stage_main

if __name__ == "__main__":
    stage_main(dense_check.run, __doc__)
