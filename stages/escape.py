"""escape stage: H3's dose-response experiment, escape from converged minima.

Usage: python stages/escape.py

For each seed of ``h3_minima``/``escape.config`` (the group's own seeds: primary and
replication), loads runs/<exp>/<cfg>/seed<k>/model.pt, checks that it is a minimum (loss and
gradient norm on the landscape), computes the top-k Hessian basis by Lanczos and runs
``landscape.dynamics.escape.escape_study``: SGD noise with its top-k component scaled by each
factor of ``escape.settings.scales`` at fixed energy, and isotropic noise. Writes
escape/results.json (every trial with its checks and each start point), escape/trials.json
(one row per trial with its seed set, read by the hypotheses stage) and escape/metrics.json
(escape counts per arm, start points, skipped seeds). Seeds run in forked workers.
"""

import _common  # noqa: F401

from landscape.pipeline import escape
from landscape.pipeline.cli import stage_main

if __name__ == "__main__":
    stage_main(escape.run, __doc__)
