"""hypotheses stage: test H1-H4 and the curvature-generalisation regressions on every output.

Usage: python stages/hypotheses.py

Reads runs/, measure/, probes/, bounds/ and escape/ (whatever exists; a missing input is
recorded as ``not tested: input missing``), runs ``landscape.pipeline.hypotheses`` and
writes hypotheses/results.json (every test: statement, test, effect, CI, p, Holm p,
verdict, n, extras) and hypotheses/metrics.json (the headline numbers, for dvc metrics).
"""

import _common  # noqa: F401

from landscape.pipeline import hypotheses
from landscape.pipeline.cli import stage_main

if __name__ == "__main__":
    stage_main(hypotheses.run, __doc__)
