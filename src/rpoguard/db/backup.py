"""`db backup`: an online copy of a SQLite database (the data file and its decision log) while it is in use.

SQLite's backup API reads each file in one read transaction: in WAL mode that is a consistent snapshot of the
file, and the gate keeps writing meanwhile. The two files are two snapshots, taken one after the other (see
_copy_files for the order). The copies are made under temporary names beside the destination and renamed into
place only once complete and verified: an interrupted backup never leaves a partial file under the name given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from rpoguard.audit import VerifyReport, verify_chain
from rpoguard.db.sqlite import SqliteStore, audit_path
from rpoguard.db.store import DatabaseNotFound, StoreError

log = logging.getLogger(__name__)

# The backup holds phone numbers and evidence, as the database does: readable by its owner only.
BACKUP_FILE_MODE = 0o600
# How long the source may be locked (another process recovering its WAL index) before the backup gives up.
SOURCE_BUSY_TIMEOUT_S = 30.0
# What SQLite keeps beside a file in use (WAL mode).
_SIDE_FILES = ("-wal", "-shm")


@dataclass(frozen=True, slots=True)
class BackupReport:
    data: Path
    audit: Path
    data_bytes: int
    audit_bytes: int
    chain: VerifyReport


def _side_files(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in _SIDE_FILES]


def _check_destination(source: Path, target: Path, force: bool) -> None:
    """Refuse what would lose data: the source itself, an existing backup without --force, a database in use."""
    if not source.exists() or not audit_path(source).exists():
        missing = source if not source.exists() else audit_path(source)
        raise DatabaseNotFound(f"db backup: database not found: {missing}")
    if target.is_dir():
        raise StoreError(f"db backup: {target} is a folder; name the backup file (for example "
                         f"{target / source.name})")
    for mine, theirs in ((source, target), (audit_path(source), audit_path(target))):
        with contextlib.suppress(OSError):
            if theirs.exists() and mine.samefile(theirs):
                raise StoreError(f"db backup: {target} is the database being backed up; name another file")
    existing = [p for p in (target, audit_path(target)) if p.exists()]
    if existing and not force:
        raise StoreError(f"db backup: {existing[0]} already exists; give --force to replace it")
    # A write-ahead log beside the old file would be replayed into the new one: a database in use (or not
    # closed cleanly) is never replaced, with or without --force.
    in_use = [p for f in (target, audit_path(target)) for p in _side_files(f) if p.exists()]
    if in_use:
        raise StoreError(f"db backup: {in_use[0]} exists: the database at {target} is in use or was not closed "
                         "cleanly; stop what uses it or name another file")


def _create_private(path: Path) -> None:
    # O_EXCL: never write into a file someone else prepared under the temporary name.
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, BACKUP_FILE_MODE))


def _copy_one(source: Path, target: Path) -> None:
    # mode=rw: the source is never created when missing; query_only: the backup never writes it.
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None,
                          timeout=SOURCE_BUSY_TIMEOUT_S)
    try:
        src.execute("PRAGMA query_only = ON")
        dst = sqlite3.connect(target, isolation_level=None)
        try:
            # pages=-1: the whole file in one step, so one read transaction, so one snapshot (in WAL mode
            # writers go on meanwhile; a stepwise copy would restart at every write of another process).
            src.backup(dst, pages=-1)
        finally:
            dst.close()
    finally:
        src.close()
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_files(source: Path, tmp_data: Path) -> None:
    """The decision log first, the data file second. A decision points at facts (answers, listings,
    consents, imports) of the data file as they were when it was taken: a data file copied later holds all
    of them (and perhaps facts no decision has used yet). The other order could keep a decision whose facts
    arrived after the data file's snapshot."""
    tmp_audit = audit_path(tmp_data)
    for path in (tmp_audit, tmp_data):
        _create_private(path)
    _copy_one(audit_path(source), tmp_audit)
    _copy_one(source, tmp_data)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        # Not a folder: the destination's folder was never usable, so nothing was written there.
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            path.unlink()


def _install(tmp_data: Path, target: Path, force: bool) -> tuple[int, int]:
    """Rename the verified copies into place, the data file last: the name given appears only with a complete
    pair beside it. With --force the old data file goes first, so the old file never sits beside the new log."""
    # The check only read the copies; anything left in their write-ahead logs would be lost by the rename.
    leftover = [p for f in (tmp_data, audit_path(tmp_data)) for p in _side_files(f)[:1]
                if p.exists() and p.stat().st_size]
    if leftover:
        raise StoreError(f"db backup: {leftover[0]} was not folded into the copy; the backup was not installed")
    if force:
        _remove([target])
    os.replace(audit_path(tmp_data), audit_path(target))
    os.replace(tmp_data, target)
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return target.stat().st_size, audit_path(target).stat().st_size


async def _verify(tmp_data: Path) -> VerifyReport:
    """Open the copy as the store would (`--db FILE`) and walk its decision log."""
    store = SqliteStore(tmp_data, create=False)
    await store.open()
    try:
        return await verify_chain(store.audit_rows())
    finally:
        await store.close()


async def backup_sqlite(source: str | os.PathLike[str], target: str | os.PathLike[str], *,
                        force: bool = False) -> BackupReport:
    """Copy the SQLite database `source` (and its decision log) to `target` (and the log's name beside it)."""
    src, dst = Path(source), Path(target)
    await asyncio.to_thread(_check_destination, src, dst, force)
    tmp_data = dst.with_name(f".{dst.stem}.backup-{secrets.token_hex(4)}{dst.suffix}")
    temporary = [tmp_data, audit_path(tmp_data)]
    temporary += [side for path in list(temporary) for side in _side_files(path)]
    try:
        try:
            # The copies run in a worker thread: the backup API blocks for the whole file.
            await asyncio.to_thread(_copy_files, src, tmp_data)
        except OSError as exc:
            raise StoreError(f"db backup: cannot write beside {dst}: {exc.strerror or exc}") from None
        except sqlite3.Error as exc:
            raise StoreError(f"db backup: copying {src} to {dst} failed: {exc}") from None
        chain = await _verify(tmp_data)
        try:
            sizes = await asyncio.to_thread(_install, tmp_data, dst, force)
        except OSError as exc:
            raise StoreError(f"db backup: cannot write {dst}: {exc.strerror or exc}") from None
    finally:
        _remove(temporary)
    log.info("backed up %s to %s: %d decision(s), head %s", src, dst, chain.rows, chain.head_hash)
    return BackupReport(dst, audit_path(dst), *sizes, chain)
