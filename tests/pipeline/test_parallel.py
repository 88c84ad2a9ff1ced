"""Tests of landscape.pipeline.parallel: forked task maps give the serial results, in order."""

from __future__ import annotations

import os

import pytest
import torch

from landscape.pipeline.parallel import map_forked


def test_forked_map_returns_serial_results_in_task_order_from_other_processes():
    weights = torch.arange(6.0)  # a closure over a tensor: inherited by the fork, never pickled

    def task(i):
        return float(weights[i] ** 2), os.getpid()

    serial = map_forked(task, range(6), workers=1)
    forked = map_forked(task, range(6), workers=2)
    assert [v for v, _ in forked] == [v for v, _ in serial] == [0.0, 1.0, 4.0, 9.0, 16.0, 25.0]
    assert {pid for _, pid in serial} == {os.getpid()}
    assert os.getpid() not in {pid for _, pid in forked}
    assert map_forked(task, [], workers=2) == []


def test_forked_map_errors():
    with pytest.raises(ValueError, match=r"workers must be an int >= 1, got 0"):
        map_forked(abs, [1], workers=0)

    def nested(i):
        return map_forked(abs, [i, -i], workers=2)

    with pytest.raises(RuntimeError, match="map_forked is not re-entrant"):
        map_forked(nested, [1, 2], workers=2)

    def boom(i):
        raise ArithmeticError(f"task {i} failed")

    with pytest.raises(ArithmeticError, match=r"task [12] failed"):
        map_forked(boom, [1, 2], workers=2)
