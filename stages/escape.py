"""escape stage: continue training from sharp minima under three noise models (H3's experiment).

Usage: python stages/escape.py

For each seed of ``h1_batch``/``escape.config`` (a large-batch run: a sharp minimum), loads
runs/<exp>/<cfg>/seed<k>/model.pt and the measure stage's top Ritz vectors
(measure/<exp>/<cfg>/seeds/seed<k>/krylov.pt), and runs
``landscape.dynamics.escape.escape_study`` on the fixed probe subset. Writes
escape/results.json (every trial with its checks), escape/trials.json (one row per trial,
read by the hypotheses stage) and escape/metrics.json (escape rate, alignment and
lambda_max ratio per noise type). A diverged or unmeasured run is recorded as skipped.
Seeds run in forked workers on the CPU, as in the measure stage.
"""

import _common  # noqa: F401

from landscape.pipeline import escape
from landscape.pipeline.cli import stage_main

if __name__ == "__main__":
    stage_main(escape.run, __doc__)
