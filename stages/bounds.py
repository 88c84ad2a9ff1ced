"""bounds stage: PAC-Bayes and parameter-count bounds (H4) of the runs named in params.

Usage: python stages/bounds.py

For every run ``<exp>/<cfg>`` in ``bounds.runs`` and every seed: the trained network, its
initialisation (rebuilt from the seed) and the measure stage's Ritz pairs and trace go to
``landscape.pipeline.bounds.bounds_for_run`` (labels as trained, the prior trained with
the run's own recipe). Seeds run in forked workers (``LANDSCAPE_WORKERS``, default
min(2, CPUs)). Writes bounds/runs/<exp>/<cfg>/seed<k>/bounds.json per seed (a diverged or
unmeasured run is recorded as skipped) and bounds/metrics.json (per run: mean/sd of each
bound, test errors, orderings; the random-label sanity pair ``bounds.sanity``). A bound
below the posterior's test error stops the stage with an error.
"""

import _common  # noqa: F401

from landscape.pipeline import bounds
from landscape.pipeline.cli import stage_main

if __name__ == "__main__":
    stage_main(bounds.run, __doc__)
