"""prepare stage: load one named data set, split it, write splits.pt and meta.json.

Usage: python stages/prepare.py --dataset KEY   (KEY names an entry of params.yaml `datasets`)
"""

import _common  # noqa: F401  (src/ on sys.path; import landscape pins the CPU kernels)

from landscape.pipeline import prepare
from landscape.pipeline.cli import stage_main

if __name__ == "__main__":
    stage_main(prepare.run, __doc__, [("--dataset", {"required": True})])
