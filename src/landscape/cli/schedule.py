"""``landscape schedule``: the repository's wave scheduler, run from the checkout's root.

Runs ``python -m tools.scheduler ARGS`` (stale, independent DVC stage entries N at a time,
each committed; see ``tools/scheduler``) as a subprocess with this interpreter, in the
root of the checkout that contains the working directory, and returns its exit code.
Every argument after ``schedule`` is passed through unchanged (``landscape schedule --help``
prints the scheduler's own help). The library never imports the repository's tooling:
``tools/`` exists only in a checkout, so outside one this command stops with an error.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from landscape.cli import _common as common

HELP = "run the repository's wave scheduler (python -m tools.scheduler) in the checkout's root; arguments pass through"

#: What marks the root of a checkout: the scheduler package the command runs.
SCHEDULER = Path("tools") / "scheduler" / "__main__.py"

#: ``landscape.cli.main`` hands every argument after ``schedule`` to :func:`run` as ``args.passthrough``, unparsed.
PASS_THROUGH = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Only for the listing in ``landscape --help``: the arguments themselves are not parsed here."""
    parser.add_argument("passthrough", nargs="*", metavar="ARGS",
                        help="arguments of python -m tools.scheduler: [--jobs N] [--no-preload] [WAVE ...]")


def find_checkout(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` that holds ``tools/scheduler/__main__.py``."""
    for directory in (start, *start.parents):
        if (directory / SCHEDULER).is_file():
            return directory
    return None


def run(args: argparse.Namespace) -> int:
    cwd = Path.cwd().resolve()
    root = find_checkout(cwd)
    if root is None:
        raise common.UsageError(f"landscape schedule runs the repository's scheduler ({SCHEDULER}), but no directory from {cwd} "
                                "up holds it; run it inside a checkout of the repository")
    env = dict(os.environ)
    # the scheduler calls dvc and the stage scripts by name: this interpreter's environment comes first
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    completed = subprocess.run([sys.executable, "-m", "tools.scheduler", *args.passthrough], cwd=root, env=env, check=False)
    return completed.returncode
