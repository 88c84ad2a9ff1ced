"""hypotheses stage: test H1-H4 and the curvature-generalisation regressions on every output.

Usage: python stages/hypotheses.py

Reads runs/, measure/, probes/, bounds/ and escape/ (whatever exists; a missing input is
recorded as ``not tested: input missing``), runs ``landscape.stats.family.run_family`` and
writes hypotheses/results.json (every test: statement, test, effect, CI, p, Holm p,
verdict, n, extras) and hypotheses/metrics.json (the headline numbers, for dvc metrics).
"""

from __future__ import annotations

from _common import ROOT, ConfigError, fail, load_params, section

from landscape.io import write_json
from landscape.schema import parse_config
from landscape.stats.family import HypothesesConfig, headline, run_family


def main() -> None:
    params = load_params()
    try:
        cfg = parse_config(HypothesesConfig, section(params, "hypotheses"), "hypotheses")
        experiments, seeds = section(params, "experiments"), section(params, "seeds")
    except ConfigError as exc:
        fail(str(exc))
    results = run_family(ROOT, experiments, seeds, cfg)
    out = ROOT / "hypotheses"
    write_json(out / "results.json", {"profile": params.get("profile"), "seeds": seeds, **results})
    write_json(out / "metrics.json", headline(results))
    for entry in results["hypotheses"]:
        if entry["status"] == "tested":
            print(f"{entry['name']}: effect={entry['effect']:.4g} [{entry['ci_low']:.4g}, {entry['ci_high']:.4g}] "
                  f"p={entry['p_value']:.3g} p_holm={entry['p_holm']:.3g} supported={entry['supported']} n={entry['n_runs']}")
        else:
            print(f"{entry['name']}: {entry['status']}")


if __name__ == "__main__":
    main()
