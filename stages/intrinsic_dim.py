"""intrinsic_dim stage: d_int90 by random-subspace training, with a bootstrap CI across seeds.

Usage: python stages/intrinsic_dim.py

Two tasks (``probes.intrinsic_dim``): Li et al.'s toy problem of known intrinsic dimension,
and a network of the pipeline (``model``: name + options, trained from its seed's
initialisation on the prepared data set ``model.dataset``); dense and sparse projections.
No trained run is read. Writes probes/intrinsic_dim/: metrics.json (d_int mean and interval
per task and projection), results.json (every search), figures/*.png, config.json.
"""

import _common  # noqa: F401

from landscape.pipeline import intrinsic_dim
from landscape.pipeline.cli import stage_main

if __name__ == "__main__":
    stage_main(intrinsic_dim.run, __doc__)
