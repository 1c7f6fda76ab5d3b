"""db migrate|copy: the database itself."""

from __future__ import annotations

import argparse

from rpoguard.cli.common import EXIT_OK, OwnStoreCommand, StoreCommand, Subcommands, command, group
from rpoguard.config import Config
from rpoguard.db.store import Store
from rpoguard.db.urls import display_name


async def cmd_db_migrate(args: argparse.Namespace, store: Store, config: Config) -> int:
    # Opening the store brought the schema up to date; a second run changes nothing.
    version = await store.schema_version()
    print(f"database {display_name(config.db)}: "
          f"schema up to date (version {version})")
    return EXIT_OK


async def cmd_db_copy(args: argparse.Namespace, config: Config) -> int:
    from rpoguard.db.copy import copy_database  # noqa: PLC0415 -- only this command needs it

    source = args.source or config.db
    report = await copy_database(source, args.target)
    where = display_name(args.target)
    for table, count in report.counts.items():
        print(f"{table}: {count} row(s)")
    print(f"copied to {where}; decision log: {report.target_chain.rows} row(s), head "
          f"{report.target_chain.head_hash}, {'intact' if report.target_chain.intact else 'NOT INTACT'} "
          "(as in the source)")
    return EXIT_OK


def register(commands: Subcommands) -> None:
    database = group(commands, "db", "the database itself: schema, moving from SQLite to PostgreSQL")
    command(database, "migrate", StoreCommand(cmd_db_migrate, creates_database=True),
            "create the database or bring its schema up to date (every command does it on open; this one "
            "does nothing else)")
    p = command(database, "copy", OwnStoreCommand(cmd_db_copy),
                "copy everything (principals, campaigns, imports and their files, RPO answers, listings, "
                "consents, contracts, the notes beside them, refusals, the decision log with its hash chain, the "
                "console's users and its record of changes) into an empty database")
    p.add_argument("--from", dest="source", metavar="URL",
                   help="the database to copy from: a SQLite file or postgresql://... (default: --db)")
    p.add_argument("--to", dest="target", required=True, metavar="URL",
                   help="the empty database to copy into: a SQLite file or postgresql://user:pass@host/db")
