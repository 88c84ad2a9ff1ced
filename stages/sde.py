"""sde stage: basin occupancy of SGD and of its SDE on synthetic 2D surfaces (no trained runs).

Usage: python stages/sde.py

For every surface of ``probes.sde.surfaces``, every method (``sde``: Euler-Maruyama of
eq. (6); ``sgd``: plain SGD with exactly isotropic gradient noise) and every ``(eta, B)``
of ``probes.sde.settings``: simulated basin probabilities with Wilson intervals against
eq. (7) and the exact Gibbs masses. Writes probes/sde/: metrics.json (verdict counts and
where eq. (7) breaks), results.json (full studies), table.json and table.md (one row per
surface x method x setting), figures/*.png, config.json.
"""

from __future__ import annotations

import argparse
import dataclasses

from _common import ROOT, ConfigError, configure_torch, cpu_workers, fail, load_params, pick_device, section

from landscape.io import atomic_path, write_json, write_text
from landscape.probes.run_probes import SdeConfig, run_sde_study
from landscape.schema import parse_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args()
    params = load_params()
    try:
        cfg = parse_config(SdeConfig, section(params, "probes", "sde"), "probes.sde")
    except ConfigError as exc:
        fail(str(exc))
    configure_torch()
    device = pick_device()
    report = run_sde_study(cfg, device=device, workers=cpu_workers(device))
    out = ROOT / "probes" / "sde"
    for name, fig in report.figures().items():
        with atomic_path(out / "figures" / f"{name}.png") as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    write_json(out / "results.json", report.to_dict())
    write_json(out / "table.json", list(report.table))
    write_text(out / "table.md", report.markdown())
    write_json(out / "config.json", dataclasses.asdict(cfg))
    write_json(out / "metrics.json", report.summary)
    for key, s in report.summary.items():
        print(f"sde {key}: {s['agrees']} agree, {s['disagrees']} disagree, {s['not_mixed']} not mixed ({s['task_time_s']:.1f}s simulated)")


if __name__ == "__main__":
    main()
