"""Helpers of the CLI tests (``from cli_helpers import ...``): the one-line error check, the
in-process run of a command, and tiny MLPs."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from pathlib import Path

import torch

#: The checkout these tests run from.
REPO = Path(__file__).resolve().parents[2]


def one_line_error(proc: subprocess.CompletedProcess, subcommand: str) -> str:
    """The single stderr line of a bad-input exit (code 2, no traceback, nothing on stdout)."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"landscape {subcommand}: error: "), lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    return lines[0]


def run_main(subcommand: str, *args: str | os.PathLike, cwd: Path) -> subprocess.CompletedProcess:
    """``landscape SUBCOMMAND ARGS`` run in ``cwd`` by ``landscape.cli.main`` in this process.

    The bad-input checks use it; each returns before any computation. They need the entry point
    that the console script calls, with its exit code and streams, not a fresh interpreter: one
    would spend 3.5 s importing torch and timm before the check. The installed script itself is
    run by the subprocess tests (``cli.run``). An exception that escapes ``main`` fails the test
    as the traceback of a subprocess would.
    """
    from landscape.cli import main

    argv = [subcommand, *map(str, args)]
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse's usage errors exit 2
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


# ----------------------------------------------------------------------------- small problems


def tiny_mlp(seed: int, width: int = 6) -> torch.nn.Module:
    """The registered ``mlp`` on 4 features, 3 classes, one hidden layer: P = 11 width + 3."""
    from landscape.models import build_model

    return build_model("mlp", num_classes=3, in_features=4, width=width, depth=1, seed=seed).double()


TINY_SPEC = {"name": "mlp", "width": 6, "depth": 1}
TINY_KWARGS = {"in_features": 4, "num_classes": 3}


def save_run_checkpoint(path: Path, model: torch.nn.Module, width: int = 6) -> Path:
    """``model.pt`` in the train stage's format (architecture recorded)."""
    torch.save({"state_dict": model.state_dict(), "model": dict(TINY_SPEC, width=width), "model_kwargs": dict(TINY_KWARGS),
                "seed": 0, "status": "completed"}, path)
    return path
