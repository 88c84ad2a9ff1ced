"""Validate params.yaml as a whole before `dvc repro` starts any work.

Usage: python stages/validate.py [params.yaml]
"""

from __future__ import annotations

import sys

import yaml
from _common import ROOT, ConfigError, fail, load_params

from landscape.config import validate_pipeline_params
from landscape.probes.run_probes import validate_probe_params


def probe_sections() -> list[str]:
    """Keys of ``probes`` that dvc.yaml's stages read: ``probe_<experiment>``, ``intrinsic_dim``, ``sde``."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8")).get("stages", {})
    return [name[len("probe_"):] for name in stages if name.startswith("probe_")] + [n for n in ("intrinsic_dim", "sde") if n in stages]


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else None
    try:
        params = load_params(path)
        checked = validate_pipeline_params(params)
        probes = validate_probe_params(params, required=probe_sections())
    except (ConfigError, FileNotFoundError) as exc:
        fail(str(exc))
    print(f"params ok: {len(checked['datasets'])} data sets, {len(checked['runs'])} run configs, "
          f"probes for {sum(len(c.configs) for c in probes['probe'].values())} configs")


if __name__ == "__main__":
    main()
