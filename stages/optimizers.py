"""optimizers stage: compare the optimizers of one experiment group over seeds.

Usage: python stages/optimizers.py

Reads runs/<group>/<config>/seed<k>/ (metrics.json and the DVCLive logs) of the group
named by ``optimizers.experiment``, runs ``landscape.pipeline.optimizers`` and writes
optimizers/results.json (table per config, paired tests per comparison, test-error
curves) and optimizers/metrics.json (headline numbers, for dvc metrics).
"""

import _common  # noqa: F401

from landscape.pipeline import optimizers
from landscape.pipeline.cli import stage_main

if __name__ == "__main__":
    stage_main(optimizers.run, __doc__)
