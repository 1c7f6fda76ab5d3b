"""What every command shares: exit codes, the operator's errors, how a command declares what it needs, the
parser's building blocks, and the few lines several commands print the same way."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Protocol, TypeAlias

from rpoguard.anchor import writer_from_config
from rpoguard.config import Config
from rpoguard.db import open_store
from rpoguard.db.store import RowProblem, Store
from rpoguard.outfile import OutputError, open_output

EXIT_OK = 0
EXIT_BLOCK = 1
EXIT_ERROR = 2
# What a shell reports for a program stopped by SIGINT (Ctrl-C) or SIGPIPE (its reader went away).
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
MAX_PROBLEMS_PRINTED = 200


class UsageError(Exception):
    """Bad arguments or data the operator can fix; printed without a traceback, exit 2."""


# -- what a command needs -------------------------------------------------------------------------------

Handler = Callable[[argparse.Namespace, Store, Config], Awaitable[int]]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # what add_subparsers returns


class Command(Protocol):
    """What main() runs for a parsed command line. Each command declares its needs by the kind it is:
    StoreCommand (the database opened for it), OwnStoreCommand (it opens its databases itself) or the
    runner's ServerCommand (a long-lived front end)."""

    def loop_factory(self, args: argparse.Namespace, config: Config) -> LoopFactory | None:
        """The event loop to run the command on; None: asyncio's default. Decided before the loop starts."""

    async def run(self, args: argparse.Namespace, config: Config) -> int: ...


@dataclass(frozen=True, slots=True)
class StoreCommand:
    """A command run against the database (--db), opened before it and closed after it.

    `creates_database`: the commands that store facts or settings create the database on first use; every
    other command only reads (or records decisions, which need the facts first), and on a missing database
    says so (exit 2)."""

    handler: Handler
    creates_database: bool = False

    def loop_factory(self, args: argparse.Namespace, config: Config) -> LoopFactory | None:
        return None

    async def run(self, args: argparse.Namespace, config: Config) -> int:
        # The decision writer anchors each group commit with it (rpoguard.anchor).
        anchor = writer_from_config(config.audit, config.db)
        async with open_store(config.db, create=self.creates_database, anchor=anchor) as store:
            return await self.handler(args, store, config)


@dataclass(frozen=True, slots=True)
class OwnStoreCommand:
    """A command that opens the databases it needs itself (`db copy`: a source and a target)."""

    handler: Callable[[argparse.Namespace, Config], Awaitable[int]]

    def loop_factory(self, args: argparse.Namespace, config: Config) -> LoopFactory | None:
        return None

    async def run(self, args: argparse.Namespace, config: Config) -> int:
        return await self.handler(args, config)


# -- building the parser --------------------------------------------------------------------------------

COMMAND_DEST = "cli_command"  # where the parsed command line keeps its Command


def declare(parser: argparse.ArgumentParser, command: Command) -> None:
    parser.set_defaults(**{COMMAND_DEST: command})


def group(commands: Subcommands, name: str, help_text: str) -> Subcommands:
    """A command group (`principal`, `consent`, ...) whose actions the caller adds."""
    sub = commands.add_parser(name, help=help_text, description=help_text)
    return sub.add_subparsers(dest="action", metavar="ACTION", required=True)


def command(where: Subcommands, name: str, run: Command, help_text: str) -> argparse.ArgumentParser:
    sub = where.add_parser(name, help=help_text, description=help_text)
    declare(sub, run)
    return sub


# -- shared output --------------------------------------------------------------------------------------

def print_problems(problems: Sequence[RowProblem], stored: bool) -> None:
    for problem in problems[:MAX_PROBLEMS_PRINTED]:
        print(f"  {'skipped' if stored else 'bad row'}: {problem}", file=sys.stderr)
    if len(problems) > MAX_PROBLEMS_PRINTED:
        print(f"  ... and {len(problems) - MAX_PROBLEMS_PRINTED} more", file=sys.stderr)


@contextlib.contextmanager
def output(path: str | None) -> Iterator[IO[str]]:
    """Standard output (no -o, or -), else by rpoguard.outfile's rules: a regular file appears only complete
    (a failed run leaves the previous file); a device or FIFO is written directly, never replaced."""
    try:
        with open_output(path) as out:
            yield out
    except OutputError as exc:
        raise UsageError(str(exc)) from None


def error(message: str) -> None:
    with contextlib.suppress(OSError):
        print(f"rpoguard: {message}", file=sys.stderr)
