"""db migrate|copy|backup: the database itself."""

from __future__ import annotations

import argparse

from rpoguard.cli.common import (
    EXIT_BLOCK,
    EXIT_OK,
    OwnStoreCommand,
    StoreCommand,
    Subcommands,
    UsageError,
    command,
    group,
)
from rpoguard.config import Config
from rpoguard.db.store import Store
from rpoguard.db.urls import display_name, is_postgres_url

PG_BACKUP_HINT = ("db backup copies a SQLite database; back up PostgreSQL with its own tool: "
                  "pg_dump --format=custom --file=FILE DBNAME (restore with pg_restore)")


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


async def cmd_db_backup(args: argparse.Namespace, config: Config) -> int:
    from rpoguard.db.backup import backup_sqlite  # noqa: PLC0415 -- only this command needs it

    if is_postgres_url(config.db):
        # Not shelled out: pg_dump's version must match the server's, which only the operator knows.
        raise UsageError(PG_BACKUP_HINT)
    report = await backup_sqlite(config.db, args.file, force=args.force)
    chain = report.chain
    print(f"data file: {report.data} ({report.data_bytes} bytes)")
    print(f"decision log: {report.audit} ({report.audit_bytes} bytes)")
    print(f"decision log: {chain.rows} row(s), head {chain.head_hash}, "
          f"{'intact' if chain.intact else 'NOT INTACT (as in the database backed up; see audit verify)'}")
    # A faithful copy of a broken log is still kept (it is evidence), but a scheduled backup must notice.
    return EXIT_OK if chain.intact else EXIT_BLOCK


def register(commands: Subcommands) -> None:
    database = group(commands, "db", "the database itself: schema, backups, moving from SQLite to PostgreSQL")
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
    p = command(database, "backup", OwnStoreCommand(cmd_db_backup),
                "copy the SQLite database (--db) and its decision log to FILE while it is in use; "
                "`--db FILE` opens the copy (PostgreSQL: pg_dump --format=custom)")
    p.add_argument("file", metavar="FILE",
                   help="the backup's data file; its decision log is written beside it, under the name the "
                        "database expects (FILE rpoguard.db: rpoguard.audit.db)")
    p.add_argument("--force", action="store_true", help="replace an existing FILE (never one in use)")
