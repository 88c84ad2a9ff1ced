"""``landscape plan``: a profile's estimated peak device memory and GPU time, entry by entry.

Runs the planner (:mod:`landscape.pipeline.plan`) on a params file or profile: every
``dvc.yaml`` entry's estimated peak device memory, time and the products it spends, the
per-stage totals and the total GPU-hours; exit code 1, naming each entry and its need,
when one cannot fit ``--device-memory``. Every argument after ``plan`` is the planner's
(``landscape plan --help`` prints its help). Unit costs are measured once per network on
this CPU and cached (``--costs``); run it in the checkout, where ``data/prepared`` gives
the data sizes (published sizes otherwise).
"""

from __future__ import annotations

import argparse

HELP = "estimate a profile's peak device memory and GPU-hours per stage entry (python -m landscape.pipeline.plan)"

#: ``landscape.cli.main`` hands every argument after ``plan`` to :func:`run` as ``args.passthrough``, unparsed.
PASS_THROUGH = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Only for the listing in ``landscape --help``: the arguments themselves are not parsed here."""
    parser.add_argument("passthrough", nargs="*", metavar="ARGS",
                        help="arguments of the planner: --profile FILE --device-memory 80GiB [--device cpu|cuda] [--json FILE]")


def run(args: argparse.Namespace) -> int:
    from landscape.pipeline.plan import main

    return main(list(args.passthrough), prog="landscape plan")
