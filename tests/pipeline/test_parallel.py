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


# ---------------------------------------------------------------- tasks spread over devices


def _task_on(task: int, device: torch.device) -> tuple[float, str, int, bool]:
    """A seeded task: its result depends on the task only (module level: spawned workers import it)."""
    g = torch.Generator().manual_seed(task)
    value = float(torch.randn(50, generator=g, dtype=torch.float64).pow(2).sum())
    return value, str(device), os.getpid(), torch.are_deterministic_algorithms_enabled()


def test_cpu_devices_use_the_forked_pool_and_results_do_not_depend_on_workers():
    from landscape.pipeline.parallel import map_on_devices

    one = map_on_devices(_task_on, range(5), [torch.device("cpu")], workers=1)
    two = map_on_devices(_task_on, range(5), [torch.device("cpu")], workers=2)
    assert [r[0] for r in one] == [r[0] for r in two] == [_task_on(i, torch.device("cpu"))[0] for i in range(5)]
    assert {r[1] for r in one + two} == {"cpu"} and {r[2] for r in one} == {os.getpid()}
    assert os.getpid() not in {r[2] for r in two}


def test_k_devices_run_task_i_on_device_i_mod_k_in_spawned_processes():
    """The multi-GPU branch, exercised with two CPU 'devices' (the branch is device-agnostic):
    one spawned process per device runs tasks j, j + k, ... with the process-wide settings of
    ``configure_torch``, and the results equal the serial ones."""
    from landscape.pipeline.parallel import _map_spawned
    from landscape.pipeline.runtime import configure_torch

    devices = [torch.device("cpu", 0), torch.device("cpu", 1)]
    out = _map_spawned(_task_on, list(range(5)), devices, configure_torch)
    assert [r[0] for r in out] == [_task_on(i, torch.device("cpu"))[0] for i in range(5)]
    assert [r[1] for r in out] == ["cpu:0", "cpu:1", "cpu:0", "cpu:1", "cpu:0"]
    pids = [r[2] for r in out]
    assert pids[0] == pids[2] == pids[4] != pids[1] == pids[3] and os.getpid() not in pids
    assert all(r[3] for r in out)  # configure_torch ran in each worker


def test_map_on_devices_rejects_mixed_or_no_devices():
    from landscape.pipeline.parallel import map_on_devices

    with pytest.raises(ValueError, match="devices must be all CPU or all accelerators"):
        map_on_devices(_task_on, [1, 2], [torch.device("cpu"), torch.device("cuda", 0)])
    with pytest.raises(ValueError, match="devices must not be empty"):
        map_on_devices(_task_on, [1], [])
