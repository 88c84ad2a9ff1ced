"""Determinism switches (landscape.reproducibility) and the runtime of a stage entry
(landscape.pipeline.runtime): what is set, what is recorded, which device each seed gets."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

from landscape.pipeline.runtime import (
    DistributedContext,
    assign_devices,
    configure_torch,
    device_for,
    distributed_context,
    pick_device,
    visible_devices,
)
from landscape.reproducibility import (
    CUBLAS_WORKSPACE_CONFIG,
    configure_determinism,
    device_record,
    pinning_applies,
    record_nondeterministic_ops,
)


@pytest.fixture
def restore_torch_flags(monkeypatch):
    """The switches are process-wide: put them back after each test."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
     torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) = saved[2:]


def test_configure_determinism_sets_and_records_every_switch(restore_torch_flags):
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    settings = configure_determinism(warn_only=False)
    assert settings == {
        "deterministic_algorithms": True,
        "deterministic_warn_only": False,
        "cudnn_deterministic": True,
        "cudnn_benchmark": False,
        "cublas_workspace_config": ":4096:8",
        "tf32_matmul": False,
        "tf32_cudnn": False,
    }
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE_CONFIG
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert configure_determinism()["deterministic_warn_only"] is True


def test_an_explicit_deterministic_workspace_is_kept_and_bad_input_named(restore_torch_flags, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    assert configure_determinism()["cublas_workspace_config"] == ":16:8"
    with pytest.raises(ValueError, match="warn_only must be True or False, got 'yes'"):
        configure_determinism(warn_only="yes")  # type: ignore[arg-type]


def test_configure_torch_adds_the_thread_count(restore_torch_flags, monkeypatch):
    monkeypatch.setenv("LANDSCAPE_THREADS", "1")
    settings = configure_torch()
    assert settings["threads"] == 1 == torch.get_num_threads() and settings["deterministic_algorithms"] is True


def test_cpu_device_record_names_the_vendor_its_bits_hold_for():
    """MKL picks GEMM kernels by vendor: the scope names the vendor /proc/cpuinfo reports."""
    record = device_record("cpu")
    assert record["device"] == "cpu" and record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    vendor = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("vendor_id")), None)
    if vendor is not None:  # x86 Linux; elsewhere the record falls back to platform.processor()
        assert record["cpu_vendor"] == vendor
    if pinning_applies():
        assert f"same CPU vendor ({record['cpu_vendor']})" in record["bit_identical_within"]


def test_nondeterministic_ops_are_listed_and_warnings_still_shown(recwarn):
    # ATen's alert text ("<op> does not have a deterministic implementation, but you set ..."); no
    # CPU kernel of torch 2.14.1 raises it, so the CUDA message is replayed here
    message = ("upsample_bilinear2d_backward_out_cuda does not have a deterministic implementation, but you set "
               "'torch.use_deterministic_algorithms(True, warn_only=True)'.")
    with record_nondeterministic_ops() as found:
        for _ in range(2):
            warnings.warn(message, UserWarning, stacklevel=1)
        warnings.warn("index_add_cuda_ does not have a deterministic implementation, but ...", UserWarning, stacklevel=1)
        warnings.warn("an unrelated warning", UserWarning, stacklevel=1)
        assert found == []  # filled when the block ends
    assert found == ["index_add_cuda_", "upsample_bilinear2d_backward_out_cuda"]
    shown = [str(w.message) for w in recwarn]  # passed on to the warning machinery (here pytest's recorder)
    assert sum("upsample_bilinear2d" in m for m in shown) == 2 and "an unrelated warning" in shown and len(shown) == 4


# ----------------------------------------------------------------------------- devices


def test_seed_i_goes_to_device_i_mod_k():
    assert assign_devices(7, 3) == [0, 1, 2, 0, 1, 2, 0]
    assert assign_devices(2, 4) == [0, 1] and assign_devices(0, 2) == []
    gpus = [torch.device("cuda", j) for j in range(3)]
    assert [device_for(i, gpus).index for i in range(7)] == assign_devices(7, 3)
    with pytest.raises(ValueError, match="num_devices must be an int >= 1, got 0"):
        assign_devices(3, 0)
    with pytest.raises(ValueError, match="index must be an int >= 0, got -1"):
        device_for(-1, gpus)
    with pytest.raises(ValueError, match="devices must not be empty"):
        device_for(0, [])


def test_visible_devices_follow_landscape_device_else_the_machine(monkeypatch):
    monkeypatch.setenv("LANDSCAPE_DEVICE", "cpu")
    assert visible_devices() == [torch.device("cpu")] and pick_device() == torch.device("cpu")
    monkeypatch.delenv("LANDSCAPE_DEVICE")
    expected = [torch.device("cuda", i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else [torch.device("cpu")]
    assert visible_devices() == expected


def test_distributed_context_from_torchrun_variables(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert distributed_context() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed_context() is None
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ctx = distributed_context()
    assert ctx == DistributedContext(rank=3, world_size=4, local_rank=1) and not ctx.is_main
    assert ctx.backend(torch.device("cpu")) == "gloo" and ctx.backend(torch.device("cuda", 1)) == "nccl"
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match=r"RANK must be in \[0, WORLD_SIZE=4\), got 4"):
        distributed_context()
    monkeypatch.delenv("RANK")
    with pytest.raises(ValueError, match="torchrun environment is incomplete"):
        distributed_context()
