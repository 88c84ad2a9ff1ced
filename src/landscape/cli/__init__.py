"""The ``landscape`` command: the toolkit on a user's own networks and data, without DVC.

``landscape <subcommand> [options]``; ``landscape <subcommand> --help`` lists the options.
Each subcommand is one module of this package with ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> exit code``; adding one is a new module plus its name in :data:`COMMANDS`.
The modules import torch and the library only inside ``run``, so ``--help`` and argument
errors answer at once. Bad input (an unknown model or data set, a checkpoint that does not
match its architecture, data of the wrong shape, an unknown option value) ends with one line
``landscape <subcommand>: error: <what was wrong; what is accepted>`` on stderr and exit
code 2, no traceback. Results go to ``--out`` as JSON (written atomically) or to stdout,
figures to ``--plot`` as PNG, progress bars to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from landscape.cli._common import Parser, UsageError

__all__ = ["COMMANDS", "main", "build_parser"]

#: Subcommands, each the module ``landscape.cli.<name>``, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = (
    "curvature",
    "scan",
    "connect",
    "trajectory",
    "plan",
    "schedule",
)


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"landscape.cli.{name}")


def build_parser() -> Parser:
    """The ``landscape`` parser with one subparser per entry of :data:`COMMANDS`."""
    from landscape import __version__

    parser = Parser(prog="landscape", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"landscape {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", parser_class=Parser)
    for name in COMMANDS:
        module = _module(name)
        command = sub.add_parser(name, help=module.HELP, description=module.__doc__, add_help=not getattr(module, "PASS_THROUGH", False),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``landscape`` console script; returns the exit code.

    Args:
        argv: arguments (``sys.argv[1:]`` when None).
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in COMMANDS and getattr(_module(args_list[0]), "PASS_THROUGH", False):
        # e.g. schedule: every later argument (--help included) belongs to the program it runs
        args = argparse.Namespace(command=args_list[0], passthrough=args_list[1:], run=_module(args_list[0]).run)
    else:
        args = build_parser().parse_args(args_list)
    if getattr(args, "run", None) is None:
        build_parser().print_help(sys.stderr)
        return 2
    try:
        return int(args.run(args))
    except UsageError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the library's message held
        print(f"landscape {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"landscape {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
