"""prepare stage: load one named data set, split it, write ``splits.pt`` and ``meta.json``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from landscape.data import DATASETS, load_dataset, make_splits
from landscape.data.config import DataConfig
from landscape.io import torch_save, write_json
from landscape.pipeline.cli import StageError
from landscape.pipeline.layout import Layout
from landscape.pipeline.params import section
from landscape.schema import ConfigError, parse_config

__all__ = ["data_config", "run"]


def data_config(params: Mapping[str, Any], key: str) -> DataConfig:
    """The ``datasets.<key>`` section as a :class:`DataConfig`."""
    return parse_config(DataConfig, section(params, "datasets", key), f"datasets.{key}")


def run(params: Mapping[str, Any], layout: Layout, dataset: str) -> None:
    """Prepare the data set ``datasets.<dataset>``: deterministic train/test/probe splits."""
    try:
        cfg = data_config(params, dataset)
        options = dict(cfg.options)
        if cfg.name in DATASETS and "download" in DATASETS[cfg.name].options():
            options["download"] = cfg.download
        ds = load_dataset(cfg.name, root=cfg.root, **options)
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as exc:
        raise StageError(f"datasets.{dataset}: {exc}") from None
    splits = make_splits(ds, test_fraction=cfg.test_fraction, probe_size=cfg.probe_size, seed=cfg.split_seed,
                         max_train=cfg.max_train, normalize=cfg.normalize, official_split=cfg.official_split)
    torch_save(layout.prepared(dataset), {
        "train": splits.train,
        "test": splits.test,
        "probe": splits.probe,
        "probe_index": splits.probe_index,
        "num_classes": ds.num_classes,
        "meta": splits.meta,
    })
    summary = splits.to_dict()
    summary.update({"dataset_key": dataset, "num_classes": ds.num_classes,
                    "input_shape": list(splits.train[0].shape[1:]), "source": ds.to_dict()})
    write_json(layout.prepared_meta(dataset), summary)
    print(f"prepared {dataset}: {summary['num_train']} train / {summary['num_test']} test / "
          f"{summary['num_probe']} probe, hash {summary['content_hash']['train'][:12]}")
