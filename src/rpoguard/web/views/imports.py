"""Imports: the history of every import (CLI's and console's alike, from the store), the upload form for
operators and admins, and each console import's job page while it runs and after.

An upload is streamed part by part (web/upload.py) into a private folder, then handed to the application's
ImportJobs, which runs the CLI's own import of that kind in the background (web/jobs.py)."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from aiohttp import BodyPartReader, MultipartReader, web

from rpoguard.constants import IMPORT_KINDS, KIND_DIRECTORY, ROLE_OPERATOR, ROLE_VIEWER
from rpoguard.db.store import RPO_REGISTERED_LIST
from rpoguard.ingest.csvfile import DEFAULT_ENCODING, encoding_name
from rpoguard.timeutil import TimeFormatError, parse_time
from rpoguard.web.context import config_of, redirect, store_of
from rpoguard.web.jobs import (
    FILE_FIELD,
    IMPORT_JOBS,
    JOB_RUNNING,
    LIST_KINDS,
    SECOND_FILE_FIELD,
    ImportJobs,
    ImportParams,
    ImportRequestError,
)
from rpoguard.web.keys import CONFIG, STORE
from rpoguard.web.render import render
from rpoguard.web.security import MULTIPART_KEY, current_user, require, role_rank
from rpoguard.web.upload import (
    UploadedFile,
    UploadError,
    UploadTooLarge,
    new_upload_dir,
    read_field,
    remove_upload_dir,
    save_part,
    upload_root,
)

log = logging.getLogger(__name__)

PAGE_SIZE = 50
FILE_FIELDS = (FILE_FIELD, SECOND_FILE_FIELD)
TEXT_FIELDS = ("kind", "checked_at", "principal", "list_kind", "skip_invalid", "encoding", "column", "append",
               "listed_at", "allow_empty")
# Seconds between reloads of a running job's page.
REFRESH_SECONDS = 2


def setup(app: web.Application) -> None:
    """The application's import jobs: made when the console starts, their worker stopped (and the
    uploads of jobs that never ran deleted) when it stops."""
    app[IMPORT_JOBS] = ImportJobs(app[STORE], app[CONFIG])

    async def stop(app: web.Application) -> None:
        await app[IMPORT_JOBS].close()

    app.on_cleanup.append(stop)


def _jobs(request: web.Request) -> ImportJobs:
    return request.app[IMPORT_JOBS]


def _positive_int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() and int(text) > 0 else None


def _may_import(request: web.Request) -> bool:
    return role_rank(current_user(request).role) >= role_rank(ROLE_OPERATOR)


async def _page(request: web.Request, *, error: str | None = None, status: int = 200,
                form: dict[str, str] | None = None) -> web.Response:
    store = store_of(request)
    kind = request.query.get("kind") or None
    before = _positive_int(request.query.get("before"))
    history = await store.import_history(limit=PAGE_SIZE + 1, before_id=before, kind=kind)
    # Keyset paging: the next page starts below the last row shown.
    older = history[PAGE_SIZE - 1].id if len(history) > PAGE_SIZE else None
    may_import = _may_import(request)
    return render(
        request, "imports.html", status=status,
        history=history[:PAGE_SIZE], older=older, kind_filter=kind or "",
        can_import=may_import, kinds=IMPORT_KINDS, list_kinds=LIST_KINDS,
        principals=await store.principal_ids() if may_import else [],
        jobs=_jobs(request).jobs()[:10], error=error, form=form or {},
        max_upload=config_of(request).web.max_upload_bytes,
    )


@require(ROLE_VIEWER)
async def imports_page(request: web.Request) -> web.StreamResponse:
    return await _page(request)


async def _read_form(reader: MultipartReader, directory: Path, limit: int) -> tuple[dict[str, str],
                                                                                    list[UploadedFile]]:
    """The rest of the form after its csrf_token: text fields kept (bounded), file parts streamed to disk."""
    fields: dict[str, str] = {}
    files: list[UploadedFile] = []
    budget = limit
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise UploadError("a nested multipart body is not a form this page sends")
        name = part.name or ""
        if name in FILE_FIELDS:
            if not part.filename:
                # A file input left empty still sends its part, with no name and no bytes.
                await part.release()
                continue
            if any(f.field == name for f in files):
                raise UploadError(f"form field {name!r} sent twice")
            saved = await save_part(part, name, directory, budget)
            budget -= saved.size
            files.append(saved)
        elif name in TEXT_FIELDS:
            fields[name] = await read_field(part, name)
        else:
            raise UploadError(f"unknown form field {name[:40]!r}")
    return fields, files


def _moment(fields: dict[str, str], name: str) -> datetime | None:
    text = fields.get(name, "")
    if not text:
        return None
    try:
        return parse_time(text)
    except (TimeFormatError, ValueError) as exc:
        raise ImportRequestError(f"{name}: {exc}") from None


def params_from(fields: dict[str, str]) -> ImportParams:
    """The import's options from the form, checked as the CLI checks its options."""
    encoding = fields.get("encoding") or DEFAULT_ENCODING
    try:
        encoding = encoding_name(encoding)
    except ValueError as exc:
        raise ImportRequestError(f"encoding: {exc}") from None
    return ImportParams(
        checked_at=_moment(fields, "checked_at"),
        principal=fields.get("principal") or None,
        list_kind=fields.get("list_kind") or RPO_REGISTERED_LIST,
        skip_invalid=bool(fields.get("skip_invalid")),
        encoding=encoding,
        replace=not fields.get("append"),
        listed_at=_moment(fields, "listed_at"),
        allow_empty=bool(fields.get("allow_empty")),
        column=fields.get("column") or None,
    )


@require(ROLE_OPERATOR)
async def upload(request: web.Request) -> web.StreamResponse:
    reader: MultipartReader | None = request.get(MULTIPART_KEY)
    if reader is None:
        raise web.HTTPBadRequest(text="an upload is a multipart form whose first field is csrf_token")
    web_config = config_of(request).web
    user = current_user(request)
    try:
        directory = new_upload_dir(upload_root(web_config.upload_dir))
    except (UploadError, OSError) as exc:
        log.error("console upload by %s: no place for it: %s", user.name, exc)
        return await _page(request, error=str(exc), status=503)
    fields: dict[str, str] = {}
    try:
        fields, files = await _read_form(reader, directory, web_config.max_upload_bytes)
        kind = fields.get("kind", "")
        if kind == KIND_DIRECTORY and fields.get("checked_at") and not fields.get("listed_at"):
            # One date field serves every kind in the form: for a directory it is the extract's date.
            fields["listed_at"] = fields["checked_at"]
        job_id = _jobs(request).start(kind, files, params_from(fields), user.name, directory=directory)
    except UploadTooLarge as exc:
        remove_upload_dir(directory)
        log.warning("console upload by %s refused: %s", user.name, exc)
        # The rest of the body is not read: the connection closes after this answer.
        raise web.HTTPRequestEntityTooLarge(exc.limit, text=str(exc)) from None
    except (UploadError, ImportRequestError) as exc:
        remove_upload_dir(directory)
        return await _page(request, error=str(exc), status=400, form=fields)
    except BaseException:
        remove_upload_dir(directory)
        raise
    return redirect(f"/imports/jobs/{job_id}")


@require(ROLE_VIEWER)
async def job_page(request: web.Request) -> web.StreamResponse:
    jobs = _jobs(request)
    job = jobs.get(request.match_info["job_id"])
    if job is None:
        raise web.HTTPNotFound(text="no such import job (the console keeps its recent jobs until it restarts; "
                                    "every import stays in the history)")
    return render(request, "import_job.html", job=job, running=job.state == JOB_RUNNING,
                  ahead=jobs.waiting_before(job) if job.waiting else 0, refresh=REFRESH_SECONDS)


@require(ROLE_VIEWER)
async def job_json(request: web.Request) -> web.StreamResponse:
    job = _jobs(request).get(request.match_info["job_id"])
    if job is None:
        raise web.HTTPNotFound(text="no such import job")
    return web.json_response(job.as_json())


def routes() -> list[web.RouteDef]:
    return [
        web.get("/imports", imports_page),
        web.post("/imports", upload),
        web.get(r"/imports/jobs/{job_id:[0-9a-f]{16}}.json", job_json),
        web.get(r"/imports/jobs/{job_id:[0-9a-f]{16}}", job_page),
    ]
