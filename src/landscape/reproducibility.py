"""Pinned CPU kernel dispatch: the same bits on every x86-64 machine with AVX2.

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

Other processors (aarch64): nothing is pinned; results are bit-identical on the same
machine and equal within floating-point tolerance elsewhere.
"""

from __future__ import annotations

import os
import platform

__all__ = ["PINNED_CPU_KERNELS", "pinning_applies", "pin_cpu_kernels", "check_cpu_kernels", "numpy_dispatch"]

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
