"""Validate params.yaml as a whole before `dvc repro` starts any work.

Usage: python stages/validate.py [params.yaml]
"""

from __future__ import annotations

import sys

from _common import ConfigError, fail, load_params

from landscape.config import validate_pipeline_params


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else None
    try:
        checked = validate_pipeline_params(load_params(path))
    except (ConfigError, FileNotFoundError) as exc:
        fail(str(exc))
    print(f"params ok: {len(checked['datasets'])} data sets, {len(checked['runs'])} run configs")


if __name__ == "__main__":
    main()
