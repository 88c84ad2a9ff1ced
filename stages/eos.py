"""eos stage: full-batch gradient descent at the edge of stability (Cohen et al. 2021).

Usage: python stages/eos.py

On the first ``eos.num_examples`` training examples of ``eos.dataset``, GD at every step
size of ``eos.lrs`` from one network, with the train loss at every step and lambda_max of
the full-batch Hessian every ``eos.eig_every`` steps. Writes eos/: results.json
(trajectories and plateau analyses), metrics.json (per step size the plateau's
lambda_max * eta / 2 with a batch-means interval, onset, sharpening, loss behaviour),
config.json, figures/eos.png.
"""

import _common  # noqa: F401

from landscape.pipeline import eos
from landscape.pipeline.cli import stage_main

if __name__ == "__main__":
    stage_main(eos.run, __doc__)
