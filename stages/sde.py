"""sde stage: basin occupancy of SGD and of its SDE on synthetic 2D surfaces (no trained runs).

Usage: python stages/sde.py

For every surface of ``probes.sde.surfaces``, every method (``sde``: Euler-Maruyama of
eq. (6); ``sgd``: plain SGD with exactly isotropic gradient noise) and every ``(eta, B)``
of ``probes.sde.settings``: simulated basin probabilities with Wilson intervals against
eq. (7) and the exact Gibbs masses. Writes probes/sde/: metrics.json (verdict counts and
where eq. (7) breaks), results.json (full studies), table.json and table.md (one row per
surface x method x setting), figures/*.png, config.json.
"""

import _common  # noqa: F401

from landscape.pipeline import sde
from landscape.pipeline.cli import stage_main

if __name__ == "__main__":
    stage_main(sde.run, __doc__)
