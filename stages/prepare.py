"""prepare stage: load one named data set, split it, write splits.pt and meta.json.

Usage: python stages/prepare.py --dataset KEY   (KEY names an entry of params.yaml `datasets`)
"""

from __future__ import annotations

import argparse

from _common import ConfigError, data_config, fail, load_params, prepared_path

from landscape.data import DATASETS, load_dataset, make_splits
from landscape.io import torch_save, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True)
    args = parser.parse_args()
    try:
        cfg = data_config(load_params(), args.dataset)
        options = dict(cfg.options)
        if cfg.name in DATASETS and "download" in DATASETS[cfg.name].options():
            options["download"] = cfg.download
        ds = load_dataset(cfg.name, root=cfg.root, **options)
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(f"datasets.{args.dataset}: {exc}")
    splits = make_splits(
        ds,
        test_fraction=cfg.test_fraction,
        probe_size=cfg.probe_size,
        seed=cfg.split_seed,
        max_train=cfg.max_train,
        normalize=cfg.normalize,
        official_split=cfg.official_split,
    )
    out = prepared_path(args.dataset)
    torch_save(
        out,
        {
            "train": splits.train,
            "test": splits.test,
            "probe": splits.probe,
            "probe_index": splits.probe_index,
            "num_classes": ds.num_classes,
            "meta": splits.meta,
        },
    )
    summary = splits.to_dict()
    summary.update({"dataset_key": args.dataset, "num_classes": ds.num_classes,
                    "input_shape": list(splits.train[0].shape[1:]), "source": ds.to_dict()})
    write_json(out.parent / "meta.json", summary)
    print(f"prepared {args.dataset}: {summary['num_train']} train / {summary['num_test']} test / "
          f"{summary['num_probe']} probe, hash {summary['content_hash']['train'][:12]}")


if __name__ == "__main__":
    main()
