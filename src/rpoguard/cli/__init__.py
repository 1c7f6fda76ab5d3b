"""The `rpoguard` command (docs/architecture.md §4). Exit codes: 0 success / ALLOW, 1 BLOCK (or a broken audit
chain), 2 a usage or data error, with a message that names what and where.

main() parses the command line (parser.py assembles it from one module per command group), then runs the
Command the chosen command declared: against the database opened for it (common.StoreCommand), opening
its own (common.OwnStoreCommand), or as a long-lived front end started by the runner (runner.ServerCommand).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

from rpoguard.cli.common import (
    COMMAND_DEST,
    EXIT_BROKEN_PIPE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    Command,
    UsageError,
    error,
    print_problems,
)
from rpoguard.cli.parser import build_parser
from rpoguard.config import Config, ConfigError, load_config
from rpoguard.db.store import ImportRejected, StoreError
from rpoguard.gate import GateError
from rpoguard.ingest.csvfile import FileError
from rpoguard.logformat import configure as configure_logging

__all__ = ["agi_main", "build_parser", "main", "run"]

log = logging.getLogger(__name__)


async def _run(command: Command, args: argparse.Namespace, config: Config) -> int:
    return await command.run(args, config)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(verbose=args.verbose, log_format=args.log_format, stream=sys.stderr)
    command: Command = getattr(args, COMMAND_DEST)
    try:
        config = load_config(args.config, args.db)
        with asyncio.Runner(loop_factory=command.loop_factory(args, config)) as runner:
            return runner.run(_run(command, args, config))
    except ImportRejected as exc:
        print_problems(exc.problems, stored=False)
        remedy = ("Fix the rows above, or use --skip-invalid to import the rest." if exc.skippable else
                  "Fix the rows above: a two-list answer is read whole or not at all (--skip-invalid does not "
                  "apply).")
        error(f"import rejected: {exc}. {remedy}")
    except (UsageError, ConfigError, StoreError, FileError, GateError, ValueError) as exc:
        error(str(exc))
    except KeyboardInterrupt:
        # Imports and output files are transactions: an interrupted one left the previous state in place.
        error("interrupted; nothing was changed by the unfinished step")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head -1`): stop quietly, as Unix tools do, and keep Python from
        # complaining when it flushes standard output at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        # A file or folder the operator named: missing, unreadable, not writable, a directory...
        where = f" {exc.filename}" if exc.filename else ""
        error(f"{exc.strerror or exc}:{where}" if where else str(exc.strerror or exc))
    except Exception as exc:
        # A bug, not the operator's mistake: one line, and the traceback for a report with -v.
        log.debug("internal error", exc_info=True)
        error(f"internal error: {type(exc).__name__}: {exc} (run with -v for the details, and please report it)")
    return EXIT_ERROR


def run() -> None:
    sys.exit(main())


def agi_main() -> int:
    """`rpoguard-agi`: what Asterisk runs from agi-bin; the same as `rpoguard agi`. Its command-line
    arguments are Asterisk's copies of the AGI arguments, read from the environment instead."""
    return main(["agi"])
