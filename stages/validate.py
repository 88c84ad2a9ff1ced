"""validate stage: params.yaml as a whole, and dvc.yaml's currency, before any work.

Usage: python stages/validate.py [PARAMS_FILE] [--stamp]

Every dvc.yaml entry depends on this stage's output (data/params_validated.json, constant),
so plain `dvc repro` runs it first whenever params.yaml or the validation code changed: a bad
key, a value out of range, or a dvc.yaml stale against params.yaml (an experiment group with
no stages) stops the run here with the key, the value and what is allowed.
"""

import _common  # noqa: F401  (src/ on sys.path; import landscape pins the CPU kernels)

from landscape.pipeline import validate
from landscape.pipeline.cli import stage_main

if __name__ == "__main__":
    stage_main(validate.run, __doc__, [("params_file", {"nargs": "?", "default": None}),
                                       ("--stamp", {"action": "store_true", "help": "write data/params_validated.json"})])
