"""The one entry point of the stage scripts: argv -> params -> ``run`` -> exit code.

A stage script is ``stage_main(module.run, __doc__, [("--experiment", {...}), ...])``:
the parsed arguments become keyword arguments of ``run(params, layout, **arguments)``.
Bad input (a params error, a missing input file, a :class:`StageError`) ends the process
with ``error: <message>`` on stderr and exit code 2, before or instead of a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from landscape.pipeline.layout import Layout
from landscape.pipeline.params import load_params
from landscape.schema import ConfigError

__all__ = ["StageError", "stage_main", "fail"]


class StageError(RuntimeError):
    """A stage cannot run: an input is missing or inconsistent; the message says which and why."""


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error for the user and exit non-zero."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def stage_main(
    run: Callable[..., Any],
    doc: str | None,
    arguments: Sequence[tuple[str, Mapping[str, Any]]] = (),
    argv: Sequence[str] | None = None,
    layout: Layout | None = None,
) -> None:
    """Parse ``arguments`` from ``argv``, read ``params.yaml`` and call ``run``.

    Args:
        run: ``run(params, layout, **parsed_arguments)`` of a ``landscape.pipeline`` stage.
        doc: the stage script's docstring (``--help``).
        arguments: ``(flag, argparse keyword arguments)`` pairs; an argument named
            ``params_file`` replaces ``params.yaml`` and is not passed to ``run``.
        argv: the arguments (``sys.argv[1:]`` when None).
        layout: the artifact tree (the repository's when None).
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, options in arguments:
        parser.add_argument(flag, **dict(options))
    parsed = vars(parser.parse_args(argv))
    layout = layout or Layout()
    params_file = parsed.pop("params_file", None) or layout.params_file  # a stage may take another file
    try:
        params = load_params(params_file)
        run(params, layout, **parsed)
    except (ConfigError, StageError, FileNotFoundError) as exc:
        fail(str(exc))
