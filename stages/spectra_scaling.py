"""spectra_scaling stage: the scaling law of the Hessian's norm, spectra against RMT, gradient subspaces.

Usage: python stages/spectra_scaling.py

Reads measure/ only (curvature.json and krylov.pt of every measured run): fits
``||H||_2 = A n^alpha e^(beta L)`` over the ``scaling`` grid at init and after training (and
the same law for the trace, the bulk variance and the spike count), compares every
spectrum with a semicircle and a spiked model (spikes counted against C - 1 and C), and
tabulates the ``C ~ diag(H)`` correlations and gradient ranks across batch size. Writes
spectra_scaling/results.json (every number with its CI and n) and
spectra_scaling/metrics.json (alpha, beta and their CIs, for dvc metrics).
"""

import _common  # noqa: F401

from landscape.pipeline import spectra_scaling
from landscape.pipeline.cli import stage_main

if __name__ == "__main__":
    stage_main(spectra_scaling.run, __doc__)
