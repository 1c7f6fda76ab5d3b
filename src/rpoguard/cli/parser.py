"""The command line's grammar: the global options every (sub)command takes, and the command groups in the
order `rpoguard --help` lists them, each contributed by its own module."""

from __future__ import annotations

import argparse
from typing import Any

from rpoguard import __version__
from rpoguard.cli import (
    audit,
    campaign,
    check,
    consent,
    contract,
    database,
    dialplan,
    directory,
    evidence,
    findings,
    optout,
    principal,
    reconcile,
    registry,
    servers,
    user,
    watch,
    web,
)
from rpoguard.constants import LOG_FORMAT_TEXT, LOG_FORMATS

DESCRIPTION = """\
rpoguard decides, before an outbound marketing call leaves the PBX, whether Italian law lets it go:
the RPO (Registro Pubblico delle Opposizioni) answers you imported, consents, contracts, refusals,
calling hours and caller ID. Every decision is recorded as evidence.

Typical order: principal add -> campaign add -> registry import / directory import / consent add
-> check or scrub. Numbers may be written +39..., 0039..., 39..., 06..., 3..., with spaces or dashes.
Times are ISO 8601 (2026-11-28 or 2026-11-28T14:30); without an offset they mean Europe/Rome."""


class CommandParser(argparse.ArgumentParser):
    """Every parser of the command tree takes the global options, so they may come before or after the
    command: `rpoguard --db X consent list` and `rpoguard consent list --db X`. Below the top their default
    is SUPPRESS: a (sub)command that does not repeat one leaves the value given before it alone, and one
    given after the command wins. argparse makes the subcommands' parsers of this class too."""

    def __init__(self, *args: Any, top: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        unset: Any = None if top else argparse.SUPPRESS
        flag: Any = False if top else argparse.SUPPRESS
        options = self.add_argument_group("global options (before or after the command)")
        options.add_argument("--db", default=unset,
                             help="database file, or postgresql://user:pass@host/db for several PBXs (env "
                                  "RPOGUARD_DB; default ./rpoguard.db, created by the first command that stores "
                                  "data; commands that only read never create one)")
        options.add_argument("--config", default=unset, help="TOML configuration file (env RPOGUARD_CONFIG)")
        options.add_argument("-v", "--verbose", action="store_true", default=flag,
                             help="log what happens on standard error")
        options.add_argument("-q", "--quiet", action="store_true", default=flag,
                             help="no progress, summaries or notes; errors, results and the rows a command "
                                  "lists still print")
        options.add_argument("--log-format", choices=LOG_FORMATS, default=LOG_FORMAT_TEXT if top else argparse.SUPPRESS,
                             help="how log lines are written: text (default) or json, one object per line with "
                                  "time, level, logger, message (for log shippers)")



# The order of `rpoguard --help`: setting up, the facts, deciding, the gates, the log, the database.
GROUPS = (principal, campaign, registry, directory, consent, contract, optout, evidence, check, servers, watch,
          reconcile, findings, dialplan, web, user, audit, database)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="rpoguard", description=DESCRIPTION,
                           formatter_class=argparse.RawDescriptionHelpFormatter, top=True)
    parser.add_argument("--version", action="version", version=f"rpoguard {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in GROUPS:
        module.register(commands)
    return parser
