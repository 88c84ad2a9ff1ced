"""probe stage: landscape probes of one (experiment, config), all seeds.

Usage: python stages/probe.py --experiment h2_arch --config mlp_none

Reads runs/<exp>/<cfg>/seed<k>/{model.pt, metrics.json} (diverged runs are recorded and
skipped), the cached Hessian Ritz vectors measure/<exp>/<cfg>/seeds/seed<k>/krylov.pt when
present, and the prepared splits; runs the probes that ``probes.<exp>`` selects for this
config (barriers, Bezier curves, scans, sharpness, invariance audit, trajectory) and writes
probes/<exp>/<cfg>/: metrics.json (headline numbers), results.json (everything, keyed by
seed / seed pair, with settings and BN policy), arrays.npz, figures/*.png, config.json.
"""

import _common  # noqa: F401

from landscape.pipeline import probe
from landscape.pipeline.cli import stage_main

if __name__ == "__main__":
    stage_main(probe.run, __doc__, [("--experiment", {"required": True}), ("--config", {"required": True})])
