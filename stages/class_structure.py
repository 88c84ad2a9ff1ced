"""class_structure stage: top-k spectra of the GGN and the Hessian (the C - 1 outliers and the
C(C - 1) tier, Papyan 2019, 2020) and the diagonals of Sigma, F_emp, G and H across batch sizes.

Usage: python stages/class_structure.py

For each <experiment>/<config> of class_structure.spectrum_runs and seed of spectrum_seeds: the
top-k eigenpairs of G and H on the measure stage's probe data, spike counts against C - 1, the
gap tests at C - 1 and C^2 - 1. For each config of diag_experiment and seed of diag_seeds: exact
diag(Sigma), diag(F_emp), diag(G) and a Hutchinson diag(H) (G as control variate), with
standard errors, compared pairwise. Writes class_structure/{results.json, metrics.json} and
class_structure/spectra/<exp>/<cfg>/seed<k>.npz.
"""

import _common  # noqa: F401  (src/ on sys.path; import landscape pins the CPU kernels)

from landscape.pipeline import class_structure
from landscape.pipeline.cli import stage_main

if __name__ == "__main__":
    stage_main(class_structure.run, __doc__)
