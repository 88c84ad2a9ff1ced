"""Pinned CPU kernel dispatch: the same bits on every x86-64 machine with AVX2 of one CPU vendor.

PyTorch picks its CPU kernels by instruction set at the first operation (ATen's
``ATEN_CPU_CAPABILITY``, oneDNN's ``ONEDNN_MAX_CPU_ISA``). An AVX-512 machine and an AVX2
machine then sum in different orders, and every trained model differs in its last bits.
Pinning both to AVX2 makes an AVX-512 machine reproduce an AVX2 machine's ``model.pt``
bit for bit (measured: ``train_h1_batch@b1024-0`` and ``train_h2_arch@resnet_skip_bn-0``),
at the same speed. ``MKL_CBWR`` alone does not.

NumPy dispatches its ufuncs the same way (``X86_V4``: AVX-512 loops, SVML ``exp``/``log``
that differ from the AVX2 loops in the last bit): ``NPY_DISABLE_CPU_FEATURES`` keeps it on
the AVX2 (``X86_V3``) loops; read when numpy is imported. Measured: the default profile's
``spectra_scaling/results.json`` matches the AVX2 machine's md5 with this pin and differs
without it. NumPy skips, without error, a disabled target the machine lacks. OpenBLAS's
kernel choice (``OPENBLAS_CORETYPE``) changed no output here and is left alone.

``import landscape`` calls :func:`pin_cpu_kernels`, so every process that uses the library
(stage scripts, the scheduler's forks, tests, notebooks) gets the pins before its first
tensor operation. ATen reads its variable lazily, so that pin also holds when torch was
imported first, as long as no operation ran; NumPy's holds only if numpy was not imported
yet. :func:`check_cpu_kernels` verifies both.

Not across CPU vendors: PyTorch's CPU BLAS (MKL in the pinned wheels) picks its GEMM kernels
by processor vendor, not by ATen's pin, so an Intel and an AMD machine train different bits
(measured: the same MLP entry, ``model.pt`` ``486cfa32...`` on an Intel Xeon against
``107f8a43...`` on an AMD EPYC); ``MKL_CBWR`` settings changed the Intel bits but none gave the
AMD ones. :func:`device_record` names the vendor beside the scope.

Other processors (aarch64): nothing is pinned; results are bit-identical on the same
machine and equal within floating-point tolerance elsewhere.

On CUDA, :func:`configure_determinism` sets what makes a rerun bit-identical on the same
kind of device (deterministic algorithms, cuDNN without autotuning, a fixed cuBLAS
workspace, no TF32) and returns the settings as a dict that each stage records;
:func:`device_record` names the device, runtime and driver those bits belong to.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import warnings
from collections.abc import Iterator
from typing import Any

__all__ = [
    "PINNED_CPU_KERNELS",
    "pinning_applies",
    "pin_cpu_kernels",
    "check_cpu_kernels",
    "numpy_dispatch",
    "CUBLAS_WORKSPACE_CONFIG",
    "configure_determinism",
    "cpu_info",
    "cpu_vendor",
    "device_record",
    "NondeterministicOps",
    "record_nondeterministic_ops",
]

PINNED_CPU_KERNELS: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}
"""Environment settings read by ATen and oneDNN when they first dispatch a CPU kernel, and by
NumPy when it is imported."""

_X86 = {"x86_64", "amd64", "i686", "x86"}
OPT_OUT = "LANDSCAPE_NATIVE_CPU_KERNELS"
"""Set to 1 to keep PyTorch's own choice (faster on some machines, not reproducible across them)."""


def pinning_applies() -> bool:
    """True on x86 unless the user opted out with ``LANDSCAPE_NATIVE_CPU_KERNELS=1``."""
    return platform.machine().lower() in _X86 and os.environ.get(OPT_OUT, "") not in {"1", "true", "yes"}


def pin_cpu_kernels() -> dict[str, str]:
    """Set the pinned kernel variables in ``os.environ`` (inherited by child processes).

    Returns:
        The settings applied (empty where pinning does not apply).
    """
    if not pinning_applies():
        return {}
    os.environ.update(PINNED_CPU_KERNELS)
    return dict(PINNED_CPU_KERNELS)


def check_cpu_kernels() -> str:
    """The capability ATen dispatches with; raises if the pin did not take effect.

    Raises:
        RuntimeError: on x86 with pinning on, when ATen already chose another capability
            (torch ran an operation before ``landscape`` was imported).
    """
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    if pinning_applies() and capability not in {"AVX2", "DEFAULT"}:
        raise RuntimeError(
            f"PyTorch dispatches CPU kernels for {capability}, not the pinned AVX2: import landscape "
            f"(or set {PINNED_CPU_KERNELS}) before any torch operation, or set {OPT_OUT}=1 to accept "
            "results that differ across machines"
        )
    if pinning_applies() and "X86_V4" in numpy_dispatch():
        raise RuntimeError(
            "NumPy dispatches its AVX-512 (X86_V4) loops: it was imported before landscape; import landscape "
            f"first (or set NPY_DISABLE_CPU_FEATURES={PINNED_CPU_KERNELS['NPY_DISABLE_CPU_FEATURES']!r}), "
            f"or set {OPT_OUT}=1 to accept results that differ across machines"
        )
    return capability


def numpy_dispatch() -> list[str]:
    """NumPy's dispatch targets active in this process (e.g. ``['X86_V3']`` when pinned)."""
    import importlib

    umath = importlib.import_module("numpy._core._multiarray_umath")  # where numpy 2 reports its dispatch
    features = getattr(umath, "__cpu_features__", {})
    dispatch = getattr(umath, "__cpu_dispatch__", [])
    return [name for name in dispatch if features.get(name)]


# ---------------------------------------------------------------------------- CUDA determinism

CUBLAS_WORKSPACE_CONFIG = ":4096:8"
"""cuBLAS workspace setting that makes its GEMMs deterministic (CUDA >= 10.2; NVIDIA's
cuBLAS "Results reproducibility" notes): read when a cuBLAS handle is created, so it must be
in the environment before the first CUDA matrix product of the process."""

_DETERMINISTIC_WORKSPACES = {":4096:8", ":16:8"}


def configure_determinism(warn_only: bool = True) -> dict[str, Any]:
    """Set every switch that makes PyTorch results reproducible and return them as a record.

    Sets ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (unless already ``:4096:8`` or ``:16:8``),
    ``torch.backends.cudnn.deterministic = True``, ``torch.backends.cudnn.benchmark = False``
    (no autotuner: the same convolution algorithm every run),
    ``torch.use_deterministic_algorithms(True, warn_only=warn_only)`` and TF32 off for
    matrix products and cuDNN convolutions (float32 stays float32: curvature products need
    its 24-bit mantissa, TF32 keeps 10). All are process-wide; on a CPU-only machine the CUDA
    switches are recorded but change nothing, and CPU numerics are untouched.

    What is then bit-identical (the record's ``bit_identical_within``): on CPU, reruns on any
    x86-64 machine with AVX2 of the same CPU vendor (pinned kernels, :func:`pin_cpu_kernels`;
    MKL chooses by vendor) and the same library versions; on CUDA, reruns on the same GPU model with the same driver, CUDA, cuDNN and
    torch versions: training (with deterministic algorithms, or where ``warn_only`` let an op
    without a deterministic kernel run, everything except what that op touched; see
    :func:`record_nondeterministic_ops`) and curvature products (Hessian-vector products,
    Lanczos, trace and SLQ estimates, per-sample gradients). Nothing is bit-identical across
    GPU models, driver or library versions, or between CPU and GPU: those agree to
    floating-point tolerance only.

    Args:
        warn_only: an op with no deterministic implementation warns (True) instead of
            raising (False).

    Returns:
        The settings applied (JSON-ready).

    Raises:
        RuntimeError: CUDA is already initialised in this process and the cuBLAS
            workspace variable was not set to a deterministic value before it.
    """
    import torch

    if not isinstance(warn_only, bool):
        raise ValueError(f"warn_only must be True or False, got {warn_only!r}")
    workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if workspace not in _DETERMINISTIC_WORKSPACES:
        if torch.cuda.is_initialized():
            raise RuntimeError(
                f"CUDA is already initialised with CUBLAS_WORKSPACE_CONFIG={workspace!r}: call configure_determinism() "
                f"before the first CUDA operation, or export CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE_CONFIG} "
                f"(accepted: {sorted(_DETERMINISTIC_WORKSPACES)})"
            )
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = workspace = CUBLAS_WORKSPACE_CONFIG
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cublas_workspace_config": workspace,
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
    }


def _nvidia_driver() -> str | None:
    """The NVIDIA kernel driver version (from ``/proc``), or None where it cannot be read."""
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8") as f:
            match = re.search(r"Kernel Module\s+(?:for \S+\s+)?([0-9][0-9.]*)", f.read())
    except OSError:
        return None
    return match.group(1) if match else None


def cpu_info(field: str) -> str | None:
    """The first value of ``field`` in ``/proc/cpuinfo`` (e.g. ``"vendor_id"``, ``"model name"``),
    or None where the file or the field is missing."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == field:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_vendor() -> str:
    """The CPU vendor (``/proc/cpuinfo``'s ``vendor_id``: ``GenuineIntel``, ``AuthenticAMD``),
    else :func:`platform.processor`, else ``"unknown"``."""
    return cpu_info("vendor_id") or platform.processor() or "unknown"


def device_record(device: Any) -> dict[str, Any]:
    """What a result's bits depend on besides the code: the device and its runtime.

    CPU: the dispatched kernel capability (``"AVX2"`` when pinned), the CPU vendor and the
    scope of bit identity. CUDA: the GPU model, compute capability, CUDA runtime, cuDNN, driver and torch
    versions (initialises CUDA on ``device``).
    """
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return {
            "device": str(device),
            "gpu": props.name,
            "compute_capability": f"{props.major}.{props.minor}",
            "cuda_runtime": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "driver": _nvidia_driver(),
            "torch": torch.__version__.split("+")[0],
            "bit_identical_within": "the same GPU model, driver, CUDA, cuDNN and torch versions",
        }
    if device.type == "cpu":
        vendor = cpu_vendor()
        return {
            "device": "cpu",
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_vendor": vendor,
            "bit_identical_within": (
                f"any x86-64 machine with AVX2 from the same CPU vendor ({vendor}) and the same library versions"
                if pinning_applies() else "this machine"
            ),
        }
    return {"device": str(device), "bit_identical_within": "unknown for this device type"}


class NondeterministicOps(list[str]):
    """Ops that warned "does not have a deterministic implementation" (filled on exit)."""


_NONDETERMINISTIC = re.compile(r"^(\S+) does not have a deterministic implementation")


@contextlib.contextmanager
def record_nondeterministic_ops() -> Iterator[NondeterministicOps]:
    """Collect the ops that ran without a deterministic kernel (``warn_only=True``).

    Inside the block every warning is shown, each time it is raised (``"always"``), and the
    ops named by PyTorch's "<op> does not have a deterministic implementation" warnings are
    listed, sorted and without repeats, in the yielded list once the block ends.
    """
    found = NondeterministicOps()
    names: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        show = warnings.showwarning

        def record(message: Warning | str, *args: Any, **kwargs: Any) -> None:
            match = _NONDETERMINISTIC.match(str(message))
            if match:
                names.add(match.group(1))
            show(message, *args, **kwargs)

        warnings.showwarning = record
        try:
            yield found
        finally:
            found.extend(sorted(names))
