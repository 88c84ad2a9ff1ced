"""train stage: train one (experiment, config, seed) entry of the sweep.

Usage: python stages/train.py --experiment h1_batch --config b64 --seed 0

Writes runs/<experiment>/<config>/seed<k>/: model.pt (final weights + config),
metrics.json (status, final metrics, state hash), dvclive/ (per-epoch curves) and
checkpoints/last.pt (kept by DVC between runs, so a killed run resumes).
A diverged run is recorded with ``status: diverged`` and the stage still succeeds.
"""

import _common  # noqa: F401  (src/ on sys.path; import landscape pins the CPU kernels)

from landscape.pipeline import train
from landscape.pipeline.cli import stage_main

if __name__ == "__main__":
    stage_main(train.run, __doc__, [("--experiment", {"required": True}), ("--config", {"required": True}),
                                    ("--seed", {"type": int, "required": True})])
