"""Console imports: each upload becomes a job that runs the CLI's own import in the background, one at a time.

A job calls the same ingest functions as `rpoguard registry|consent|contract|optout|directory import` (so
the import is the same atomic, reported import, with the same ImportMeta: file name, size, SHA-256, rows
and rejected rows with their lines) on a store opened for it, on an event loop of its own in a thread of
its own: reading and normalising millions of rows is Python work that would otherwise hold the console's
event loop for minutes, and every page must keep answering meanwhile. The CLI does exactly this in a
process of its own.

Jobs run one after another (an import holds the store's write transaction throughout: a second one
would only wait for it); the page of a queued job says so. Finished jobs are kept in memory, the last
KEEP_FINISHED of them; what stays is the import record in the store (Store.import_history). Each
finished job is recorded as a console change with the user who uploaded it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from rpoguard.config import Config
from rpoguard.constants import (
    CHANGE_IMPORT,
    CHANGE_IMPORT_FAILED,
    IMPORT_KINDS,
    KIND_CONSENTS,
    KIND_CONTRACTS,
    KIND_DIRECTORY,
    KIND_OPTOUTS,
    KIND_REGISTRY,
    KIND_REGISTRY_LISTS,
)
from rpoguard.db import open_store
from rpoguard.db.store import (
    RPO_CLEANSED_LIST,
    RPO_REGISTERED_LIST,
    ConsoleChange,
    ImportRejected,
    ImportResult,
    ImportSummary,
    RowProblem,
    Store,
    StoreError,
)
from rpoguard.db.supervisor import SupervisedStore
from rpoguard.ingest import consents as consent_import
from rpoguard.ingest import contracts as contract_import
from rpoguard.ingest import directory as directory_import
from rpoguard.ingest import optouts as optout_import
from rpoguard.ingest import registry as registry_import
from rpoguard.ingest.csvfile import DEFAULT_ENCODING, BytesRead, FileError, read_observer
from rpoguard.web.upload import UploadedFile, remove_upload_dir

log = logging.getLogger(__name__)
T = TypeVar("T")

JOB_RUNNING = "running"
JOB_DONE = "done"
JOB_FAILED = "failed"
# The rejected rows a job's page lists (the CLI prints as many); the count says how many there were.
MAX_PROBLEMS_SHOWN = 200
KEEP_FINISHED = 200
LIST_KINDS = (RPO_REGISTERED_LIST, RPO_CLEANSED_LIST)
# The form's file fields: one file, or the submitted list and the RPO's list for a two-list answer.
FILE_FIELD = "file"
SECOND_FILE_FIELD = "file2"

StoreOpener = Callable[[], Store]


def current_store(source: Store | SupervisedStore) -> Store:
    """The store open now: the console's may be supervised (reopened when its files change)."""
    return source.current() if isinstance(source, SupervisedStore) else source


class ImportRequestError(ValueError):
    """A console import asked for something the CLI would refuse as usage: the message says what."""


@dataclass(frozen=True, slots=True)
class ImportParams:
    """The options of one import, as the CLI's command for its kind takes them."""

    # registry, registry-lists: when the RPO checked the list, and for which principal (None: the only one).
    checked_at: datetime | None = None
    principal: str | None = None
    # registry-lists: what the second file is (the registered numbers, or the cleaned list).
    list_kind: str = RPO_REGISTERED_LIST
    skip_invalid: bool = False
    encoding: str = DEFAULT_ENCODING
    # directory: replace the listings (default) or append to them; the extract's date; an empty file.
    replace: bool = True
    listed_at: datetime | None = None
    allow_empty: bool = False
    # registry-lists, directory: the number column (--column NAME|N).
    column: str | None = None


def check_request(kind: str, files: Sequence[UploadedFile], params: ImportParams) -> None:
    """Refuse, before anything runs, what the CLI refuses as usage (ImportRequestError)."""
    if kind not in IMPORT_KINDS:
        raise ImportRequestError(f"unknown import kind {kind!r}; one of {', '.join(IMPORT_KINDS)}")
    fields = [f.field for f in files]
    wanted = [FILE_FIELD, SECOND_FILE_FIELD] if kind == KIND_REGISTRY_LISTS else [FILE_FIELD]
    if sorted(fields) != sorted(wanted):
        what = ("the submitted list (file) and the RPO's list (file2)" if kind == KIND_REGISTRY_LISTS
                else "one file (file)")
        raise ImportRequestError(f"a {kind} import takes {what}; received {', '.join(fields) or 'no file'}")
    if kind in (KIND_REGISTRY, KIND_REGISTRY_LISTS) and params.checked_at is None:
        raise ImportRequestError("checked_at is required: when the RPO checked the list")
    if kind == KIND_REGISTRY_LISTS and params.list_kind not in LIST_KINDS:
        raise ImportRequestError(f"list_kind must be {' or '.join(LIST_KINDS)}, not {params.list_kind!r}")


class JobProgress:
    """How far a job got: the rows the store has read (RPO answers report them, as to the CLI's progress
    display) and the bytes the readers consumed of the files (csvfile.read_observer), both read by the
    console's event loop while the job's thread updates them."""

    def __init__(self, total_bytes: int) -> None:
        self.total_bytes = total_bytes
        self.rows: int | None = None
        self._read = BytesRead()
        self.opened = self._read.opened

    def __call__(self, count: int) -> None:
        self.rows = count

    def bytes_read(self) -> int:
        return min(self._read.total(), self.total_bytes)


@dataclass(slots=True)
class ImportJob:
    id: str
    kind: str
    user: str
    files: tuple[UploadedFile, ...]
    params: ImportParams
    created_us: int
    directory: Path | None = None
    state: str = JOB_RUNNING
    # Queued behind another import (state stays running: it will run without anyone's action).
    waiting: bool = True
    started_us: int | None = None
    finished_us: int | None = None
    summary: ImportSummary | None = None
    problems: list[RowProblem] = field(default_factory=list)
    problems_total: int = 0
    error: str | None = None
    # Set when the import landed but the console change could not be recorded.
    record_error: str | None = None
    progress: JobProgress = field(default_factory=lambda: JobProgress(0))
    finished: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def as_json(self) -> dict[str, object]:
        """What the job's page script polls (/imports/jobs/<id>.json)."""
        summary = self.summary
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "waiting": self.waiting,
            "user": self.user,
            "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in self.files],
            "rows": self.progress.rows,
            "bytes_read": self.progress.bytes_read(),
            "bytes_total": self.progress.total_bytes,
            "import_id": summary.import_id if summary else None,
            "already_imported": summary.already_imported if summary else None,
            "rows_read": summary.rows_read if summary else None,
            "rows_stored": summary.rows_stored if summary else None,
            "rows_rejected": summary.rows_rejected if summary else None,
            "details": dict(summary.detail) if summary else None,
            "notes": list(summary.notes) if summary else [],
            "rejected": [{"line": p.line, "problem": p.message} for p in self.problems],
            "rejected_total": self.problems_total,
            "error": self.error,
            "record_error": self.record_error,
            "created_us": self.created_us,
            "started_us": self.started_us,
            "finished_us": self.finished_us,
        }


def _now_us() -> int:
    return time.time_ns() // 1_000


async def run_import(store: Store, kind: str, files: Sequence[UploadedFile], params: ImportParams,
                     progress: JobProgress, validity_days: int) -> ImportResult:
    """The CLI's import for `kind`, with the CLI's options: the one path both take."""
    by_field = {f.field: str(f.path) for f in files}
    path = by_field[FILE_FIELD]
    if kind == KIND_REGISTRY:
        assert params.checked_at is not None
        principal = await registry_import.rpo_principal(store, params.principal)
        return await registry_import.import_csv(store, path, params.checked_at, principal, params.skip_invalid,
                                                progress, encoding=params.encoding, validity_days=validity_days)
    if kind == KIND_REGISTRY_LISTS:
        assert params.checked_at is not None
        principal = await registry_import.rpo_principal(store, params.principal)
        return await registry_import.import_lists(store, path, by_field[SECOND_FILE_FIELD], params.list_kind,
                                                  params.checked_at, principal, progress, encoding=params.encoding,
                                                  validity_days=validity_days)
    if kind == KIND_CONSENTS:
        return await consent_import.import_file(store, path, params.skip_invalid, params.encoding, progress)
    if kind == KIND_CONTRACTS:
        return await contract_import.import_file(store, path, params.skip_invalid, params.encoding, progress)
    if kind == KIND_OPTOUTS:
        return await optout_import.import_file(store, path, params.skip_invalid, params.encoding, progress)
    if kind == KIND_DIRECTORY:
        return await directory_import.import_file(store, path, params.replace, params.skip_invalid,
                                                  params.listed_at, params.allow_empty, encoding=params.encoding,
                                                  column=params.column, progress=progress)
    raise ImportRequestError(f"unknown import kind {kind!r}")


def in_own_thread(work: Callable[[], Coroutine[Any, Any, T]]) -> asyncio.Future[T]:
    """Run `work` on a new event loop in a daemon thread, for long Python work (an import, a walk of the
    decision log) that must not hold the console's loop. A daemon: stopping the console need not wait for
    it, since an import is one transaction (an unfinished one leaves the previous data in place)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def body() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = asyncio.run(work())
        except BaseException as exc:  # handed to the waiting task, which reports it
            error = exc
        # The console may have stopped meanwhile: nobody is left to tell.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=body, name="rpoguard-background", daemon=True).start()
    return future


def own_store(config: Config) -> StoreOpener:
    """A store of its own for work run by in_own_thread, on the configured database. Without an anchor
    writer: imports and the log's verification never write the decision log."""
    return lambda: open_store(config.db, create=False)


class ImportJobs:
    """The console's imports (one instance per application): start() queues a job, a worker runs the
    jobs one at a time, get() tells how one is doing. `store` is the console's own (where the changes
    are recorded); each import opens its own with `opener` (default: the configured database)."""

    def __init__(self, store: Store | SupervisedStore, config: Config, *, opener: StoreOpener | None = None) -> None:
        self.store = store
        self.config = config
        self._opener = opener or own_store(config)
        self._jobs: OrderedDict[str, ImportJob] = OrderedDict()
        self._queue: asyncio.Queue[ImportJob] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def start(self, kind: str, files: Sequence[UploadedFile], params: ImportParams, user: str, *,
              directory: Path | None = None) -> str:
        """Queue an import of the uploaded `files`; returns the job's id. `directory`: the upload's folder,
        removed with the files when the job ends. Raises ImportRequestError for what the CLI refuses as
        usage (the files are then left to the caller)."""
        check_request(kind, files, params)
        job = ImportJob(secrets.token_hex(8), kind, user, tuple(files), params, _now_us(), directory,
                        progress=JobProgress(sum(f.size for f in files)))
        self._jobs[job.id] = job
        self._forget_old()
        self._queue.put_nowait(job)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work(), name="rpoguard-import-jobs")
        log.info("import job %s queued: %s by %s (%s)", job.id, kind, user, ", ".join(f.name for f in files))
        return job.id

    def get(self, job_id: str) -> ImportJob | None:
        return self._jobs.get(job_id)

    async def wait(self, job_id: str) -> ImportJob:
        """The job once it has finished (done or failed) and its change is recorded."""
        job = self._jobs[job_id]
        await job.finished.wait()
        return job

    def jobs(self) -> list[ImportJob]:
        """The jobs known, newest first."""
        return list(reversed(self._jobs.values()))

    def waiting_before(self, job: ImportJob) -> int:
        """How many jobs run or wait ahead of a queued one."""
        ahead = 0
        for other in self._jobs.values():
            if other is job:
                break
            ahead += other.state == JOB_RUNNING
        return ahead

    async def close(self) -> None:
        """Stop the worker; the uploads of jobs that never ran are deleted."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while not self._queue.empty():
            self._discard_files(self._queue.get_nowait())

    def _forget_old(self) -> None:
        finished = [job_id for job_id, job in self._jobs.items() if job.state != JOB_RUNNING]
        for job_id in finished[:max(0, len(finished) - KEEP_FINISHED)]:
            del self._jobs[job_id]

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._run(job)
            finally:
                self._discard_files(job)
                job.finished.set()

    async def _run(self, job: ImportJob) -> None:
        job.waiting = False
        job.started_us = _now_us()

        async def work() -> ImportResult:
            # Set in this task's context only: the readers of this import report to this job.
            read_observer.set(job.progress.opened)
            async with self._opener() as store:
                return await run_import(store, job.kind, job.files, job.params, job.progress,
                                        self.config.rpo_validity_days)

        try:
            summary, problems = await in_own_thread(work)
        except ImportRejected as exc:
            self._fail(job, f"import rejected: {exc}. " + (
                "Fix the rows listed, or tick 'skip invalid rows' to import the rest." if exc.skippable else
                "Fix the rows listed: a two-list answer is read whole or not at all."), exc.problems)
        except (FileError, StoreError, ValueError, OSError) as exc:
            self._fail(job, str(exc), [])
        except Exception as exc:
            log.exception("import job %s: internal error", job.id)
            self._fail(job, f"internal error: {type(exc).__name__}: {self._plain(job, str(exc))}", [])
        else:
            job.summary = summary
            job.problems_total = 0 if summary.already_imported else len(problems)
            job.problems = [] if summary.already_imported else problems[:MAX_PROBLEMS_SHOWN]
            job.state = JOB_DONE
            log.info("import job %s done: import #%s, %d row(s) read, %d stored, %d rejected", job.id,
                     summary.import_id, summary.rows_read, summary.rows_stored, summary.rows_rejected)
        job.finished_us = _now_us()
        await self._record(job)

    def _fail(self, job: ImportJob, message: str, problems: Sequence[RowProblem]) -> None:
        job.state = JOB_FAILED
        job.error = self._plain(job, message)
        job.problems_total = len(problems)
        job.problems = list(problems[:MAX_PROBLEMS_SHOWN])
        log.info("import job %s failed: %s", job.id, job.error)

    @staticmethod
    def _plain(job: ImportJob, message: str) -> str:
        """Name the uploaded files as the user knows them, not by where the console keeps them."""
        for file in job.files:
            message = message.replace(str(file.path), file.name)
        return message

    def _change(self, job: ImportJob) -> ConsoleChange:
        summary = job.summary
        detail: dict[str, object] = {
            "kind": job.kind,
            "files": [{"field": f.field, "name": f.name, "size": f.size, "sha256": f.sha256} for f in job.files],
            "job": job.id,
        }
        if job.params.principal is not None:
            detail["principal"] = job.params.principal
        if summary is not None:
            detail.update(rows_read=summary.rows_read, rows_stored=summary.rows_stored,
                          rows_rejected=summary.rows_rejected, already_imported=summary.already_imported)
        else:
            detail.update(error=job.error, rows_rejected=job.problems_total)
        target = str(summary.import_id) if summary is not None and summary.import_id is not None else ""
        action = CHANGE_IMPORT if job.state == JOB_DONE else CHANGE_IMPORT_FAILED
        return ConsoleChange(at_us=job.finished_us or _now_us(), user=job.user, action=action, target=target,
                             detail=detail)

    async def _record(self, job: ImportJob) -> None:
        try:
            await current_store(self.store).record_change(self._change(job))
        except Exception as exc:
            # The import stands (it is committed); the missing record is said on the job's page and logged.
            log.error("import job %s: the console change could not be recorded: %s", job.id, exc)
            job.record_error = f"the console could not record this import as a change of {job.user}: {exc}"

    @staticmethod
    def _discard_files(job: ImportJob) -> None:
        if job.directory is not None:
            remove_upload_dir(job.directory)
            return
        for file in job.files:
            with contextlib.suppress(FileNotFoundError):
                file.path.unlink()


# Where the application keeps its ImportJobs (views/imports.py makes it at start-up).
IMPORT_JOBS = web.AppKey("import_jobs", ImportJobs)
