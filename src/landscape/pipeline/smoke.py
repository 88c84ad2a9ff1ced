"""``profiles/paper_smoke.yaml``, generated from ``profiles/paper.yaml`` by one shrinking rule set.

The smoke profile runs every code path of the paper profile on a CPU in a few minutes: the
same experiment groups (so the same ``dvc.yaml`` stages), the same model architectures
(ResNet-18/34, ViT-S/4, the LM, the MLP grid ...) and optimizers, the same data set loaders,
curvature sections, probe kinds and analyses. Configs that repeat a code path are dropped
and sizes shrink, by the rules below (a count is recognised by its key, wherever it sits):

* **configs** (:func:`select_configs`): per group, in the paper's order, each config that
  takes a code path no earlier kept config took (:func:`_code_paths`: its architecture, each
  value of its non-size model keys such as ``skip``, ``norm``, ``init_scale``, and its
  optimizer; sizes, ``SIZE_KEYS``, and training hyper-parameters are no path); in the groups
  an analysis compares across batch sizes (``hypotheses.h1_experiment``,
  ``spectra_scaling.batch_experiment``) also the next and the largest batch (H1's regression
  needs 3 sizes at 2 seeds), and in H1's group a second noise scale eta/B at the smallest kept
  batch (:func:`_noise_levels`: H1 regresses on log2(eta/B) and log2(B), which must not be
  collinear); in ``hypotheses.h2_experiment`` every skip / no-skip config at the group's
  shallowest and deepest depth (:func:`landscape.pipeline.depth.model_depth`; all of them where the
  configs have no depth: H2's depth x skip interaction needs two depths) and the normalisation
  arm ``hypotheses.h2_norm_configs``; in the scaling grid
  (``spectra_scaling.scaling_experiment``) the 5 smallest cells a width x depth power-law fit
  accepts (:func:`_grid_corner`); and the configs ``bounds.sanity``, ``escape.config`` and
  ``class_structure.spectrum_runs`` name. Sections that list configs (probe groups and kinds,
  ``spectra_scaling.plot_configs``, the optimizers' levels) keep the kept ones; ``bounds.runs`` keeps the sanity pair and the
  first run of each other architecture (:func:`_bounds_runs`).

* **seeds**: the first two, the fewest the analyses accept (barriers and trajectories pair
  seeds, the optimizers' and H2's tests pair over seeds), in ``seeds`` and every ``<...>_seeds``
  list (the class-structure stage's); ``min_pairs`` at most that. A group with its own seed
  list keeps two of the profile's seeds and two of its replication seeds (the others: H1-H3
  test their effect on both sets), :func:`_group_seeds`.
* **data**: ``download: false`` (the end-to-end test writes small files in each set's own
  format under ``root``), CIFAR md5 checks off (those files are not the release), images
  downsampled to 8 x 8 by the loaders' ``image_size`` (every architecture still applies:
  ViT-S/4 sees 2 x 2 patches, VGG's three poolings end at 1 x 1), at most 32 probe
  examples, at most 600 synthetic examples, WikiText-2 context / 4.
* **models**: every width / 32 (at least 4): ``width`` of our architectures, timm's
  ResNet ``channels`` (64, 128, 256, 512) and ``stem_width`` 64, the transformers'
  ``embed_dim`` (ViT-S 384, rounded up to a multiple of ``num_heads``); the Phi grid's
  ``widths`` too. Transformers keep ``TRANSFORMER_DEPTH`` = 2 blocks (every block runs the
  same attention code; ViT-S's 12 made its per-layer curvature alone over a minute);
  ``resnet_small`` keeps at most ``RESNET_MAX_BLOCKS`` = 2 blocks per stage (H2's ResNet-110,
  18 blocks a stage, took 30 s per probe entry; its grid's shallowest depth keeps 1 block, the
  deepest gets 2, so H2 still sees two depths). timm's ResNet-18 vs -34 block counts (their
  own architectures), heads, patch size and normalisation are kept.
* **training** of the runs: 1 epoch, batch sizes / 16 (at least 4, so the sizes stay
  distinct), evaluation batches at most 256, a checkpoint every epoch, weight snapshots
  every epoch where the paper keeps them. Along-training records (``track_every``) at every
  step, on at most 16 fixed examples for lambda_max; a train-to-target run's ``target_loss``
  becomes ``SMOKE_TARGET_LOSS``, which the first record reaches (one epoch reaches no paper
  target), so the stop, the converged lambda_max and H1's regression run.
* **everything else**: epochs, examples, batches, products, probes, steps, restarts,
  draws and search ranges capped at a few (``CAPS``), the SDE horizon at 10; Lanczos
  tolerances no finer than 0.1; the optimised PAC-Bayes posterior's Adam steps at 10 (``BOUNDS_SMOKE``);
  seed lists cut to two; the lists of ``LIST_CAPS`` (Phi's
  mixture sets and grid, the SDE's settings) cut; the bounds' grids and the analyses'
  settings otherwise kept.
* **per-layer curvature** (one Lanczos run per module, each product a full one: most of a
  measure entry's time) only in the curvature group whose kept configs span the most
  architectures (:func:`_widest_group`, ``h2_arch``: every architecture's modules), at
  ``per_layer_tol`` 0.5; the other groups would repeat it on the same architectures.

``shrink_profile`` is the transformation; ``python -m landscape.pipeline.smoke`` writes the
file and ``--check`` fails (naming the first difference) when it is stale, as a test does.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from landscape.pipeline.depth import model_depth
from landscape.pipeline.params import load_params

__all__ = ["CAPS", "WIDTH_DIVISOR", "BATCH_DIVISOR", "SMOKE_SEEDS", "select_configs", "shrink_profile", "render", "main"]

SMOKE_SEEDS = 2
WIDTH_DIVISOR = 32
BATCH_DIVISOR = 16
MIN_WIDTH = 4
MIN_BATCH = 4
#: timm ResNet defaults the paper profile leaves implicit (``timm.models.resnet.ResNet``).
TIMM_RESNET_CHANNELS = (64, 128, 256, 512)
TIMM_RESNET_STEM = 64
#: Widths our transformers default to (``vit_small_32``: ViT-S).
DEFAULT_EMBED_DIM = {"vit_small_32": 384, "lm_transformer": 128}
DEFAULT_HEADS = {"vit_small_32": 6, "lm_transformer": 4}
#: Blocks of every transformer (each block runs the same attention and MLP code).
TRANSFORMER_DEPTH = 2
#: Most residual blocks per stage of ``resnet_small`` (every block runs the same code): the
#: shallowest depth of H2's grid keeps its 1 and the deepest becomes 2, still two depths.
RESNET_MAX_BLOCKS = 2
TIMM_RESNETS = ("resnet18", "resnet34")
#: Model keys that only size a network (the same code path at any value).
SIZE_KEYS = ("width", "depth", "channels", "stem_width", "embed_dim", "blocks_per_stage")
#: Batch sizes kept in the groups H1 and the gradient-subspace analysis compare across batch sizes.
H1_BATCH_SIZES = 3
#: Configs of the scaling grid kept: the fewest ``scaling_law_fit`` fits (>= 5 config means).
SCALING_GRID_CONFIGS = 5

#: Upper bounds on counts, by the last key of their path (anywhere outside ``experiments``).
CAPS: dict[str, int] = {
    # examples
    "probe_size": 32, "num_examples": 16, "test_examples": 32, "recal_examples": 32, "train_examples": 64,
    "eval_examples": 32, "pilot_examples": 32, "mixture_test": 32, "noise_examples": 16, "n": 600,
    "dataset_size": 100, "model_samples": 500,
    # passes, products, probes, steps
    "epochs": 1, "batch_size": 16, "recal_batch_size": 16, "chunk_size": 16, "eval_batch_size": 256,
    "top_k": 8, "bottom_k": 4, "bottom_max_matvecs": 30, "trace_matvecs": 8, "slq_probes": 2, "slq_steps": 8,
    "per_layer_matvecs": 4, "diag_probes": 4,
    "eig_matvecs": 10, "along_training_matvecs": 4, "max_matvecs": 60, "diag_examples": 16, "sharpness_examples": 16,
    "steps": 10, "restarts": 1, "align_restarts": 1, "align_max_sweeps": 5, "num_samples": 3, "num_points": 5,
    "line_points": 5, "plane_points": 3, "minimax_points": 3, "num_pairs": 1, "barrier_points": 3, "check_every": 5,
    # draws, resamples, grids
    "mc_draws": 300, "test_draws": 2, "pilot_draws": 2, "num_runs": 100, "num_bootstrap": 200, "n_boot": 200,
    "quadrature_grid": 51, "num_params": 60, "num_constraints": 3, "d_min": 4, "d_max": 64,
    "min_pairs": SMOKE_SEEDS,
}
#: Entries kept of lists that only repeat one computation per entry, by key: the Phi search's
#: mixture data sets (one still takes the synthetic-mixture path) and its width x depth grid
#: (2 x 2: a rank correlation over several networks per data set), the SDE's (lr, batch) settings.
LIST_CAPS: dict[str, int] = {"mixture_dims": 1, "widths": 2, "depths": 2, "settings": 2}
#: Upper bounds on continuous sizes (the SDE's simulated time).
FLOAT_CAPS: dict[str, float] = {"horizon": 10.0}
#: Tolerances no finer than these (relative Ritz residuals).
MIN_TOL = {"eig_tol": 0.1, "per_layer_tol": 0.5}
#: The edge-of-stability study: lambda_max at every step of a short run, so the plateau rule has
#: points to work on (the paper's run measures every few steps of thousands).
EOS_SMOKE = {"steps": 60, "eig_every": 1, "min_points": 20, "num_batches": 5}
#: The bounds' settings the paper profile leaves at their defaults that set a count: the optimised
#: posterior's Adam steps (default 300, most of a ResNet run's bound time here; 10 still runs the
#: optimiser, its minibatches and its certificate).
BOUNDS_SMOKE = {"optimize_steps": 10}
#: Train-to-target runs: a cross-entropy every run is below at its first record (chance level is
#: ln C <= 5.3 for these sets; far below ``divergence_loss``), with a record at every step.
SMOKE_TARGET_LOSS = 100.0
#: Side of every image data set (area downsampling by the loader's own ``image_size``).
IMAGE_SIZE = 8
IMAGE_SETS = ("cifar10", "cifar100", "mnist", "fashion_mnist", "tiny_imagenet", "mnist5k")


def _width(value: int) -> int:
    return max(MIN_WIDTH, int(value) // WIDTH_DIVISOR)


def _batch(value: int) -> int:
    return max(MIN_BATCH, int(value) // BATCH_DIVISOR)


def _shrink_model(model: Mapping[str, Any]) -> dict[str, Any]:
    """Widths / ``WIDTH_DIVISOR`` for any registered architecture (module docstring)."""
    out = dict(model)
    name = out.get("name")
    if "width" in out:
        out["width"] = _width(out["width"])
    if "blocks_per_stage" in out:
        out["blocks_per_stage"] = min(int(out["blocks_per_stage"]), RESNET_MAX_BLOCKS)
    if name in TIMM_RESNETS:
        out["channels"] = [_width(c) for c in out.get("channels", TIMM_RESNET_CHANNELS)]
        out["stem_width"] = _width(out.get("stem_width", TIMM_RESNET_STEM))
    if name in DEFAULT_EMBED_DIM:
        out["depth"] = min(int(model_depth(out) or TRANSFORMER_DEPTH), TRANSFORMER_DEPTH)
        heads = int(out.get("num_heads", DEFAULT_HEADS[name]))
        dim = _width(out.get("embed_dim", DEFAULT_EMBED_DIM[name]))
        out["embed_dim"] = heads * math.ceil(dim / heads)
    return out


def _shrink_train(train: Mapping[str, Any]) -> dict[str, Any]:
    """A run's training: 1 epoch, batch / ``BATCH_DIVISOR``, checkpoints (and snapshots) every epoch,
    along-training records every step and a target loss the first one reaches."""
    capped = _capped({k: v for k, v in train.items() if k != "batch_size"})
    out = {k: (_batch(v) if k == "batch_size" else capped[k]) for k, v in train.items()}
    out["batch_size"] = _batch(train.get("batch_size", 128))
    out["checkpoint_every"] = 1
    if out.get("snapshot_every"):
        out["snapshot_every"] = 1
    if "power_steps" in out:
        out["power_steps"] = min(int(out["power_steps"]), 2)
    if out.get("track_every"):
        out["track_every"] = 1
    if out.get("target_loss") is not None:
        out["target_loss"] = SMOKE_TARGET_LOSS
    return out


def _shrink_dataset(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Local files only (no download, no release md5), few probe / synthetic examples, shorter LM context."""
    out = _capped(spec)
    if "download" in out:
        out["download"] = False
    options = dict(out.get("options") or {})
    if out.get("name") in ("cifar10", "cifar100"):
        options["verify_md5"] = False
    if out.get("name") in IMAGE_SETS:
        options["image_size"] = min(int(options.get("image_size") or IMAGE_SIZE), IMAGE_SIZE)
    if "context" in options:
        context = max(4, int(options["context"]) // 4)
        options["context"] = context
        options["stride"] = min(int(options.get("stride") or context), context)
    if options:
        out["options"] = options
    return out


def _capped(node: Any) -> Any:
    """Every count capped by ``CAPS``, tolerance floored at ``MIN_TOL``, seed list cut to
    ``SMOKE_SEEDS``, width (and the Phi grid's ``widths``) divided, model mapping shrunk; recursively."""
    if isinstance(node, list):
        return [_capped(v) for v in node]
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in CAPS and isinstance(value, int) and not isinstance(value, bool):
            out[key] = min(value, CAPS[key])
        elif key in MIN_TOL and isinstance(value, float):
            out[key] = max(value, MIN_TOL[key])
        elif (key == "seeds" or key.endswith("_seeds")) and isinstance(value, list):
            out[key] = list(value)[:SMOKE_SEEDS]
        elif key in FLOAT_CAPS and isinstance(value, float):
            out[key] = min(value, FLOAT_CAPS[key])
        elif key == "widths" and isinstance(value, list) and all(isinstance(w, int) for w in value):  # the Phi grid
            out[key] = sorted({_width(w) for w in value})[:LIST_CAPS[key]]
        elif key in LIST_CAPS and isinstance(value, list) and not any(isinstance(v, float) for v in value):  # not a surface's
            out[key] = [_capped(v) for v in value[:LIST_CAPS[key]]]
        elif key == "model" and isinstance(value, Mapping) and "name" in value:
            out[key] = _shrink_model(value)
        else:
            out[key] = _capped(value)
    return out


def _code_paths(cfg: Mapping[str, Any]) -> set[str]:
    """The code paths a config takes: its architecture with each of its non-size model keys'
    values (``resnet_small`` with ``skip=False``, with ``norm=none``, ...), and its optimizer."""
    name = cfg["model"]["name"]
    paths = {json.dumps([name, k, v], sort_keys=True) for k, v in cfg["model"].items() if k not in (*SIZE_KEYS, "name")}
    return paths | {json.dumps([name]), json.dumps(["optimizer", cfg["train"].get("optimizer", "sgd")])}


def _grid_corner(configs: Mapping[str, Any]) -> list[str]:
    """The scaling grid's smallest configs a width x depth power-law fit accepts: the two
    smallest widths x the two smallest depths, and the third width at the smallest depth."""
    cell = {n: (int(c["model"]["width"]), int(model_depth(c["model"]) or 0)) for n, c in configs.items()}
    widths = sorted({w for w, _ in cell.values()})
    depths = sorted({d for _, d in cell.values()})
    cells = {(w, d) for w in widths[:2] for d in depths[:2]} | {(w, depths[0]) for w in widths[2:3]}
    return [n for n in configs if cell[n] in cells][:SCALING_GRID_CONFIGS]


def _batch_levels(configs: Mapping[str, Any], keep: list[str]) -> list[str]:
    """Configs to add so that the kept ones span ``H1_BATCH_SIZES`` batch sizes (or all the group
    has): the largest batch, then the smallest ones not kept yet (H1 regresses sharpness on log
    batch size with 3 coefficients and seed effects: 3 sizes x 2 seeds are the fewest rows it fits)."""
    size = {n: int(c["train"].get("batch_size", 128)) for n, c in configs.items()}
    kept_sizes = {size[n] for n in keep}
    add: list[str] = []
    for name in [max(size, key=size.__getitem__), *sorted(size, key=size.__getitem__)]:
        if len(kept_sizes) >= min(H1_BATCH_SIZES, len(set(size.values()))):
            break
        if size[name] not in kept_sizes:
            kept_sizes.add(size[name])
            add.append(name)
    return add


def _noise_levels(configs: Mapping[str, Any], keep: list[str]) -> list[str]:
    """A config to add when the kept ones share one noise scale eta/B (``lr / batch_size``): the
    first config, in the paper's order, at the smallest kept batch size with another eta/B (H1's
    regression on log2(eta/B) and log2(B) needs eta/B to vary apart from B)."""
    def noise(name: str) -> float:
        train = configs[name]["train"]
        return float(train.get("lr", 0.0)) / int(train.get("batch_size", 128))

    kept = {noise(n) for n in keep}
    if len(kept) > 1 or not keep:
        return []
    smallest = min(int(configs[n]["train"].get("batch_size", 128)) for n in keep)
    return [n for n in configs if n not in keep and int(configs[n]["train"].get("batch_size", 128)) == smallest
            and noise(n) not in kept][:1]


def _depth_ends(configs: Mapping[str, Any], arm: set[str]) -> set[str]:
    """The configs with a ``skip`` key at the shallowest and the deepest depth of the group's
    factorial (the normalisation ``arm`` left out); all of them when no config has a depth."""
    cells = {n: model_depth(c["model"]) for n, c in configs.items() if "skip" in c["model"] and n not in arm}
    depths = sorted({d for d in cells.values() if d is not None})
    ends = {depths[0], depths[-1]} if depths else set()
    return {n for n, d in cells.items() if d is None or d in ends}


def select_configs(paper: Mapping[str, Any]) -> dict[str, list[str]]:
    """Per experiment group, the configs the smoke profile keeps (module docstring): in the
    paper's order, each config that takes a code path no earlier kept one took
    (:func:`_code_paths`); in the groups an analysis compares
    across batch sizes (``hypotheses.h1_experiment``, ``spectra_scaling.batch_experiment``)
    also two larger batches (:func:`_batch_levels`), in H1's also a second noise scale
    (:func:`_noise_levels`); in ``hypotheses.h2_experiment`` the configs with a ``skip`` model
    key at its shallowest and deepest depth (:func:`_depth_ends`) and ``hypotheses.h2_norm_configs``;
    in ``spectra_scaling.scaling_experiment`` the grid corner of :func:`_grid_corner`; and the
    configs ``bounds.sanity``, ``escape.config`` and ``class_structure.spectrum_runs`` name."""
    named = set(((paper.get("bounds") or {}).get("sanity") or {}).values())
    named |= set((paper.get("class_structure") or {}).get("spectrum_runs") or [])
    if "escape" in paper:
        from landscape.pipeline.escape import SOURCE_EXPERIMENT

        named.add(f"{SOURCE_EXPERIMENT}/{paper['escape']['config']}")
    hyp = paper.get("hypotheses") or {}
    batch_groups = {hyp.get("h1_experiment"), (paper.get("spectra_scaling") or {}).get("batch_experiment")}
    h2_group = hyp.get("h2_experiment")
    h2_arm = set(hyp.get("h2_norm_configs") or [])
    scaling_group = (paper.get("spectra_scaling") or {}).get("scaling_experiment")
    out: dict[str, list[str]] = {}
    for group, spec in paper["experiments"].items():
        configs = spec.get("configs") or {}
        if group == scaling_group:
            out[group] = _grid_corner(configs)
            continue
        seen: set[str] = set()
        keep = []
        h2_cells = _depth_ends(configs, h2_arm) | (h2_arm & set(configs)) if group == h2_group else set()
        for name, cfg in configs.items():
            paths = _code_paths(cfg)
            paired = name in h2_cells  # H2's skip / no-skip pairs at two depths, every norm setting, its norm arm
            if not paths <= seen or f"{group}/{name}" in named or paired:
                seen |= paths
                keep.append(name)
        if group in batch_groups:
            keep.extend(_batch_levels(configs, keep))
        if group == hyp.get("h1_experiment"):
            keep.extend(_noise_levels(configs, keep))
        out[group] = [n for n in configs if n in keep]  # the paper's order
    return out


def _group_seeds(group: list[int], profile: list[int]) -> list[int]:
    """A group's own seed list cut to ``SMOKE_SEEDS`` of the profile's seeds (the primary set)
    and ``SMOKE_SEEDS`` of the others (the replication set), in the group's order."""
    primary = [s for s in group if s in profile][:SMOKE_SEEDS]
    replication = [s for s in group if s not in profile][:SMOKE_SEEDS]
    return [s for s in group if s in primary or s in replication]


def _widest_group(paper: Mapping[str, Any], kept: Mapping[str, list[str]]) -> str | None:
    """The curvature group with per-layer curvature whose kept configs span the most
    architectures (first such in the paper's order); None when no group has it."""
    groups = [g for g, c in (paper.get("curvature") or {}).items() if c.get("per_layer", True) and g in kept]
    archs = {g: {paper["experiments"][g]["configs"][n]["model"]["name"] for n in kept[g]} for g in groups}
    return max(groups, key=lambda g: len(archs[g]), default=None)


def _bounds_runs(paper: Mapping[str, Any], bounds: Mapping[str, Any]) -> list[str]:
    """``bounds.runs`` cut to the sanity pair and the first run of each other architecture
    (H4 pairs the bounds over runs and seeds; its minimum of 3 is met by the sanity pair's seeds)."""
    sanity = set((bounds.get("sanity") or {}).values())
    seen: set[str] = set()
    out = []
    for run in bounds.get("runs") or []:
        group, config = run.split("/", 1)
        arch = paper["experiments"][group]["configs"][config]["model"]["name"]
        if run in sanity or arch not in seen:
            seen.add(arch)
            out.append(run)
    return out


def _kept_references(section: Any, kept: Mapping[str, list[str]], group: str | None = None) -> Any:
    """``section`` with the configs lists (``configs`` of a probe group and its kinds, the
    ``"<group>/<config>"`` lists of bounds and spectra_scaling, the optimizers' levels)
    restricted to ``kept``."""
    runs = {f"{g}/{c}" for g, cs in kept.items() for c in cs}
    if isinstance(section, Mapping):
        out = {}
        for key, value in section.items():
            if key == "configs" and isinstance(value, list) and group is not None:
                out[key] = [c for c in value if c in kept[group]]
            elif key in ("runs", "plot_configs") and isinstance(value, list):
                out[key] = [r for r in value if r in runs]
            else:
                out[key] = _kept_references(value, kept, group)
        return out
    return section


def shrink_profile(paper: Mapping[str, Any]) -> dict[str, Any]:
    """The smoke profile of ``paper`` (a loaded params mapping): same structure, tiny sizes.

    Args:
        paper: ``profiles/paper.yaml`` as loaded (merge keys resolved).

    Returns:
        A new params mapping: ``profile: paper_smoke``, the configs of :func:`select_configs`
        and every size shrunk by the rules of the module docstring; stage groups, model
        architectures, data set loaders and analyses exactly as in ``paper``. The
        ``templates`` block is dropped (its anchors are resolved already).

    Raises:
        ValueError: ``paper`` is not a params mapping with ``experiments``.
    """
    if not isinstance(paper, Mapping) or not isinstance(paper.get("experiments"), Mapping):
        raise ValueError(f"paper must be a params mapping with an `experiments` section, got {type(paper).__name__}")
    paper = copy.deepcopy(dict(paper))
    out = _capped({k: v for k, v in paper.items() if k not in ("templates", "datasets", "experiments")})
    out["profile"] = "paper_smoke"
    kept = select_configs(paper)
    per_layer_group = _widest_group(paper, kept)
    for group, c in (out.get("curvature") or {}).items():
        if c.get("per_layer", True) and group == per_layer_group:
            c["per_layer_tol"] = max(float(c.get("per_layer_tol", 0.0)), MIN_TOL["per_layer_tol"])
        elif c.get("per_layer", True):
            c["per_layer"] = False
    out["datasets"] = {name: _shrink_dataset(spec) for name, spec in (paper.get("datasets") or {}).items()}
    out["experiments"] = {
        group: {**spec, **({"seeds": _group_seeds(spec["seeds"], paper["seeds"])} if "seeds" in spec else {}),
                "configs": {name: {**cfg, "model": _shrink_model(cfg["model"]), "train": _shrink_train(cfg["train"])}
                            for name, cfg in (spec.get("configs") or {}).items() if name in kept[group]}}
        for group, spec in paper["experiments"].items()
    }
    for key in ("bounds", "spectra_scaling"):
        if key in out:
            out[key] = _kept_references(out[key], kept)
    if "bounds" in out:
        out["bounds"]["runs"] = _bounds_runs(paper, out["bounds"])
        out["bounds"]["settings"] = {**(out["bounds"].get("settings") or {}), **BOUNDS_SMOKE}
    if "eos" in out:
        out["eos"].update(EOS_SMOKE)
    if "probes" in out:
        out["probes"] = {g: (_kept_references(s, kept, g) if g in kept else s) for g, s in out["probes"].items()}
    if "optimizers" in out:
        group = out["optimizers"]["experiment"]
        levels = {lv: [c for c in cs if c in kept[group]] for lv, cs in out["optimizers"]["levels"].items()}
        out["optimizers"]["levels"] = {lv: cs for lv, cs in levels.items() if cs}
    return {key: out[key] for key in paper if key in out}  # the paper profile's section order


HEADER = """\
# GENERATED from profiles/paper.yaml by `python -m landscape.pipeline.smoke`; do not edit by hand.
# The paper profile's groups, configs, models, data set loaders and analyses at tiny sizes
# (rules: landscape/pipeline/smoke.py), for a CPU end-to-end run (tests/pipeline/test_paper_smoke.py
# writes the data files in each set's own format under data/raw). Apply: make profile PROFILE=paper_smoke.
"""


def render(paper: Mapping[str, Any]) -> str:
    """``paper_smoke.yaml`` text for the loaded paper profile."""
    return HEADER + yaml.safe_dump(shrink_profile(paper), sort_keys=False, default_flow_style=None, width=140)


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                return f"{path}.{key}".lstrip(".") + (" only in the generated profile" if key in a else " only in the file")
            found = _first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    return None if a == b else f"{path.lstrip('.')}: generated {a!r}, file {b!r}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper", default="profiles/paper.yaml", help="the paper profile (default: %(default)s)")
    parser.add_argument("--out", default="profiles/paper_smoke.yaml", help="the smoke profile (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="exit 1 if --out differs from the generated profile")
    args = parser.parse_args(argv)
    paper = load_params(args.paper)
    out = Path(args.out)
    if args.check:
        have = load_params(out) if out.is_file() else {}
        diff = _first_difference(shrink_profile(paper), have)
        if diff:
            print(f"{out} is stale against {args.paper}: {diff}; regenerate it with `python -m landscape.pipeline.smoke`",
                  file=sys.stderr)
            return 1
        return 0
    from landscape.io import write_text

    write_text(out, render(paper))
    print(f"wrote {out} from {args.paper}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
