"""phi_search stage: Phi(n, L, D) over an MLP grid, the Phi-guided choice vs a random one,
and Phi of the pipeline's trained runs against their test error.

Usage: python stages/phi_search.py

Data: Gaussian mixtures of dimensions ``phi.search.mixture_dims`` and the prepared data set
``phi.dataset`` (training split, flattened). Every (data set, seed, width, depth) candidate
is measured (Phi at initialisation) and trained with the same budget in forked workers;
the argmax choice is compared with a uniformly random grid member, and Phi is correlated
with test error, also over the runs of ``phi.run_experiments`` (``landscape.pipeline.phi_search``).
Writes phi_search/results.json (config, every candidate, the run table, the summary) and
phi_search/metrics.json (headline numbers).
"""

import _common  # noqa: F401

from landscape.pipeline import phi_search
from landscape.pipeline.cli import stage_main

if __name__ == "__main__":
    stage_main(phi_search.run, __doc__)
