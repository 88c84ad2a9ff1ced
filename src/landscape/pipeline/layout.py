"""The artifact tree: every path a stage writes or reads, in one place.

Stages, table readers, notebooks and ``dvc.yaml`` generation take their paths from a
:class:`Layout`; nothing else spells a path of the tree.

```
data/prepared/<dataset>/{splits.pt, meta.json}
runs/<experiment>/<config>/seed<k>/{model.pt, metrics.json, checkpoints/, dvclive/, tb/}
measure/<experiment>/<config>/{metrics.json, seeds/seed<k>/{curvature.json, krylov.pt}}
probes/<experiment>/<config>/{results.json, arrays.npz, config.json, figures/, metrics.json}
probes/{intrinsic_dim, sde}/...
bounds/{runs/<experiment>/<config>/seed<k>/bounds.json, priors/..., metrics.json}
escape/ eos/ phi_search/ optimizers/ spectra_scaling/ hypotheses/ reports/
dense_check/{results.json, metrics.json, spectra/<experiment>/<config>/seed<k>.npz}
class_structure/{results.json, metrics.json, spectra/<experiment>/<config>/seed<k>.npz}
reports/{<page>.html, headline.json}
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Layout", "RunPaths", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parents[3]
"""The checkout this package lives in (``src/landscape/pipeline`` -> the repository)."""


@dataclass(frozen=True)
class RunPaths:
    """The files of one trained run (experiment, config, seed)."""

    dir: Path

    @property
    def model(self) -> Path:
        return self.dir / "model.pt"

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.json"

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def dvclive(self) -> Path:
        return self.dir / "dvclive"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files of the per-epoch curves (``train.tensorboard: true``)."""
        return self.dir / "tb"

    @property
    def logged_metrics(self) -> Path:
        """DVCLive's per-epoch logs, one ``<metric>.tsv`` (columns ``step``, ``<metric>``) each."""
        return self.dvclive / "plots" / "metrics"

    def logged(self, metric: str) -> Path:
        return self.logged_metrics / f"{metric}.tsv"


@dataclass(frozen=True)
class Layout:
    """Paths of the artifact tree under ``root`` (the repository by default)."""

    root: Path = REPO_ROOT

    # ------------------------------------------------------------------ data
    def prepared_dir(self, dataset: str) -> Path:
        return self.root / "data" / "prepared" / dataset

    def prepared(self, dataset: str) -> Path:
        """The splits file of a prepared data set."""
        return self.prepared_dir(dataset) / "splits.pt"

    def prepared_meta(self, dataset: str) -> Path:
        return self.prepared_dir(dataset) / "meta.json"

    # ------------------------------------------------------------------ training
    def experiment_runs(self, experiment: str) -> Path:
        return self.root / "runs" / experiment

    def config_runs(self, experiment: str, config: str) -> Path:
        return self.experiment_runs(experiment) / config

    def run(self, experiment: str, config: str, seed: int) -> RunPaths:
        return RunPaths(self.config_runs(experiment, config) / f"seed{seed}")

    # ------------------------------------------------------------------ curvature
    def measure_dir(self, experiment: str, config: str) -> Path:
        return self.root / "measure" / experiment / config

    def measure_seeds(self, experiment: str, config: str) -> Path:
        return self.measure_dir(experiment, config) / "seeds"

    def measure_seed(self, experiment: str, config: str, seed: int) -> Path:
        return self.measure_seeds(experiment, config) / f"seed{seed}"

    def curvature(self, experiment: str, config: str, seed: int) -> Path:
        return self.measure_seed(experiment, config, seed) / "curvature.json"

    def krylov(self, experiment: str, config: str, seed: int) -> Path:
        return self.measure_seed(experiment, config, seed) / "krylov.pt"

    # ------------------------------------------------------------------ probes and studies
    def probes_dir(self, experiment: str, config: str) -> Path:
        return self.root / "probes" / experiment / config

    def probe_results(self, experiment: str, config: str) -> Path:
        return self.probes_dir(experiment, config) / "results.json"

    def probe_arrays(self, experiment: str, config: str) -> Path:
        return self.probes_dir(experiment, config) / "arrays.npz"

    def probe_figures_dir(self, experiment: str, config: str) -> Path:
        return self.probes_dir(experiment, config) / "figures"

    def probe_figure(self, experiment: str, config: str, name: str) -> Path:
        """One PNG figure of the probe stage (``name`` as its ``results.json`` records it)."""
        return self.probe_figures_dir(experiment, config) / f"{name}.png"

    def probe_metrics(self, experiment: str, config: str) -> Path:
        """The probe stage's metrics (including the invariance audit's verdicts)."""
        return self.probes_dir(experiment, config) / "metrics.json"

    @property
    def intrinsic_dim_dir(self) -> Path:
        return self.root / "probes" / "intrinsic_dim"

    @property
    def intrinsic_dim_results(self) -> Path:
        return self.intrinsic_dim_dir / "results.json"

    @property
    def sde_dir(self) -> Path:
        return self.root / "probes" / "sde"

    @property
    def sde_table(self) -> Path:
        return self.sde_dir / "table.json"

    @property
    def sde_metrics(self) -> Path:
        return self.sde_dir / "metrics.json"

    @property
    def bounds_dir(self) -> Path:
        return self.root / "bounds"

    def bounds_run(self, experiment: str, config: str, seed: int) -> Path:
        """One seed's bounds of a run listed in ``bounds.runs``."""
        return self.bounds_dir / "runs" / experiment / config / f"seed{seed}" / "bounds.json"

    @property
    def bounds_priors(self) -> Path:
        """Prior networks of the bounds (checkpoints and finished priors), kept between runs."""
        return self.bounds_dir / "priors"

    def bounds_prior(self, experiment: str, config: str, seed: int) -> Path:
        """Directory of one seed's prior network (``landscape.pipeline.bounds_prior``)."""
        return self.bounds_priors / experiment / config / f"seed{seed}"

    @property
    def bounds_metrics(self) -> Path:
        """Per-run summaries of the bounds and the random-label sanity pair."""
        return self.bounds_dir / "metrics.json"

    @property
    def escape_dir(self) -> Path:
        return self.root / "escape"

    @property
    def escape_results(self) -> Path:
        """Every escape trial with its checks, per seed."""
        return self.escape_dir / "results.json"

    @property
    def escape_trials(self) -> Path:
        """One row per escape trial (read by the hypotheses stage)."""
        return self.escape_dir / "trials.json"

    @property
    def escape_metrics(self) -> Path:
        """Escape rate, alignment and lambda_max ratio per noise type."""
        return self.escape_dir / "metrics.json"

    @property
    def eos_dir(self) -> Path:
        """The ``eos`` stage: results.json, metrics.json, config.json, figures/."""
        return self.root / "eos"

    @property
    def eos_metrics(self) -> Path:
        """Plateau ratio ``lambda_max * eta / 2`` with its interval per step size."""
        return self.eos_dir / "metrics.json"

    @property
    def phi_dir(self) -> Path:
        return self.root / "phi_search"

    @property
    def optimizers_dir(self) -> Path:
        return self.root / "optimizers"

    @property
    def spectra_scaling_dir(self) -> Path:
        return self.root / "spectra_scaling"

    @property
    def hypotheses_dir(self) -> Path:
        return self.root / "hypotheses"

    @property
    def dense_check_dir(self) -> Path:
        return self.root / "dense_check"

    def dense_spectrum(self, experiment: str, config: str, seed: int) -> Path:
        """Exact eigenvalues and the SLQ quadrature of one run (``dense_check`` stage, ``.npz``)."""
        return self.dense_check_dir / "spectra" / experiment / config / f"seed{seed}.npz"

    @property
    def class_structure_dir(self) -> Path:
        return self.root / "class_structure"

    def class_structure_spectrum(self, experiment: str, config: str, seed: int) -> Path:
        """Top-k Ritz values of G and H of one run (``class_structure`` stage, ``.npz``)."""
        return self.class_structure_dir / "spectra" / experiment / config / f"seed{seed}.npz"

    def results(self, study: str) -> Path:
        """``<study>/results.json`` of a study stage (escape, eos, phi_search, optimizers,
        spectra_scaling, hypotheses, dense_check, class_structure)."""
        return self._study_dir(study) / "results.json"

    def metrics(self, study: str) -> Path:
        """``<study>/metrics.json`` of a study stage (its headline numbers, for ``dvc metrics``)."""
        return self._study_dir(study) / "metrics.json"

    def _study_dir(self, study: str) -> Path:
        dirs = {"escape": self.escape_dir, "eos": self.eos_dir, "phi_search": self.phi_dir, "optimizers": self.optimizers_dir,
                "spectra_scaling": self.spectra_scaling_dir, "hypotheses": self.hypotheses_dir,
                "dense_check": self.dense_check_dir, "class_structure": self.class_structure_dir}
        if study not in dirs:
            raise ValueError(f"unknown study {study!r}; studies with results.json: {sorted(dirs)}")
        return dirs[study]

    # ------------------------------------------------------------------ code and report
    @property
    def params_file(self) -> Path:
        return self.root / "params.yaml"

    @property
    def dvc_file(self) -> Path:
        return self.root / "dvc.yaml"

    @property
    def notebooks_dir(self) -> Path:
        return self.root / "notebooks"

    def notebook(self, page: str) -> Path:
        return self.notebooks_dir / f"{page}.ipynb"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    def report(self, page: str) -> Path:
        return self.reports_dir / f"{page}.html"

    @property
    def headline(self) -> Path:
        """``reports/headline.json``: the report's headline tables, one key per section."""
        return self.reports_dir / "headline.json"

    def relative(self, path: Path) -> str:
        """``path`` relative to the root, with forward slashes (as ``dvc.yaml`` writes it)."""
        return Path(path).relative_to(self.root).as_posix()
