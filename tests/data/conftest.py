"""Fixtures that WRITE small data sets in each set's own on-disk format under tmp_path
(the writers live in tests/data_files.py, shared with the paper_smoke end-to-end test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_files import (
    Written,
    write_cifar10,
    write_cifar100,
    write_mnist_family,
    write_tiny_imagenet,
    write_wikitext2,
)


@pytest.fixture
def written_mnist(tmp_path: Path) -> Written:
    return write_mnist_family(tmp_path, "MNIST", seed=1)


@pytest.fixture
def written_fashion_mnist(tmp_path: Path) -> Written:
    return write_mnist_family(tmp_path, "FashionMNIST", seed=2)


@pytest.fixture
def written_cifar10(tmp_path: Path) -> Written:
    return write_cifar10(tmp_path)


@pytest.fixture
def written_cifar100(tmp_path: Path) -> Written:
    return write_cifar100(tmp_path)


@pytest.fixture
def written_tiny_imagenet(tmp_path: Path) -> Written:
    return write_tiny_imagenet(tmp_path)


@pytest.fixture
def written_wikitext2(tmp_path: Path) -> Written:
    return write_wikitext2(tmp_path)
