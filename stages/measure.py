"""measure stage: curvature of every trained run of one (experiment, config), all seeds.

Usage: python stages/measure.py --experiment h1_batch --config b64

For each seed: loads runs/<exp>/<cfg>/seed<k>/model.pt, measures the Hessian on the fixed
probe subset (top-k eigenpairs with residual bounds, trace, SLQ density, log-det, RMT bulk
fit, per-layer figures, gradient-noise covariance and its alignment) and writes
measure/<exp>/<cfg>/seeds/seed<k>/{curvature.json, krylov.pt}. A diverged run is recorded as
skipped, never measured. measure/<exp>/<cfg>/metrics.json summarises the seeds.
"""

import _common  # noqa: F401  (src/ on sys.path; import landscape pins the CPU kernels)

from landscape.pipeline import measure
from landscape.pipeline.cli import stage_main

if __name__ == "__main__":
    stage_main(measure.run, __doc__, [("--experiment", {"required": True}), ("--config", {"required": True})])
