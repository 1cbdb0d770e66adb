"""The ``rerank-plugins`` command: argument parsing only; the work is done by the library modules.

One module per subcommand, each with ``NAME``, ``add_parser(subparsers)`` and ``run(args)``; shared arguments and
steps live in :mod:`rerank_plugins.cli._common`. Heavy imports (torch, models) stay inside ``run``, so that parsing
and ``--help`` stay fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from rerank_plugins.cli import adapt, distill, evaluate, index, quickstart, search, serve, train_bi, train_cross

_SUBCOMMANDS = (
    quickstart,
    index,
    search,
    train_bi,
    train_cross,
    adapt,
    distill,
    evaluate,
    serve,
)  # the order of --help
_RUN: dict[str, Callable[[argparse.Namespace], None]] = {module.NAME: module.run for module in _SUBCOMMANDS}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rerank-plugins",
        description="Two-stage retrieval: a first stage's candidates, then a cross-encoder rerank.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _SUBCOMMANDS:
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # bm25s sets its own logger to DEBUG when imported
        handler.setLevel(level)
    if not args.verbose:  # transformers' load reports and per-file progress bars; ours stay
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        _RUN[args.command](args)
    except (ValueError, TypeError, OSError, ImportError) as error:
        print(f"rerank-plugins {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0
