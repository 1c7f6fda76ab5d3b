"""web/jobs.py on both backends: a console import is the CLI's import (same ImportMeta: the uploaded name and
SHA-256, rows, rejected rows with their lines), run in the background one at a time, with its progress,
its outcome or a clear error, its upload deleted afterwards, and recorded as a change of its user."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from rpoguard.config import Config
from rpoguard.constants import (
    CHANGE_IMPORT,
    CHANGE_IMPORT_FAILED,
    KIND_CONSENTS,
    KIND_DIRECTORY,
    KIND_REGISTRY,
    KIND_REGISTRY_LISTS,
)
from rpoguard.db.store import RPO_CLEANSED_LIST, Store
from rpoguard.ingest import registry as registry_import
from rpoguard.timeutil import parse_time
from rpoguard.web.jobs import (
    JOB_DONE,
    JOB_FAILED,
    JOB_RUNNING,
    ImportJobs,
    ImportParams,
    ImportRequestError,
    check_request,
)
from rpoguard.web.upload import UploadedFile, new_upload_dir

T = TypeVar("T")
CHECKED = parse_time("2026-11-20")
NUM = "+390645678901"
OTHER = "+390212345678"
MOBILE = "+393331234567"


async def collect(rows: AsyncIterator[T]) -> list[T]:
    return [row async for row in rows]


def upload(directory: Path, name: str, content: str, field: str = "file") -> UploadedFile:
    """What upload.save_part leaves: the file in the request's folder, with its size and SHA-256."""
    folder = directory / field
    folder.mkdir(exist_ok=True)
    path = folder / name
    data = content.encode()
    path.write_bytes(data)
    return UploadedFile(field, name, path, len(data), hashlib.sha256(data).hexdigest())


@pytest.fixture
def jobs(store: Store, store_url: str, run: Callable[..., Any]) -> Iterator[ImportJobs]:
    run(store.add_principal("acme", "ACME Energia", []))
    made = ImportJobs(store, Config(db=store_url))
    yield made
    run(made.close())


@pytest.fixture
def request_dir(tmp_path: Path) -> Path:
    root = tmp_path / "uploads"
    root.mkdir(mode=0o700)
    return new_upload_dir(root)


def start_and_wait(jobs: ImportJobs, run: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    async def go() -> Any:
        return await jobs.wait(jobs.start(*args, **kwargs))

    return run(go())


def test_an_rpo_answer_is_the_clis_import_with_the_uploaded_name(jobs: ImportJobs, store: Store, request_dir: Path,
                                                                 run: Callable[..., Any]) -> None:
    file = upload(request_dir, "risposta RPO.csv", f"number,status\n{NUM},registered\n{OTHER},not_registered\n")
    job = start_and_wait(jobs, run, KIND_REGISTRY, [file], ImportParams(checked_at=CHECKED), "mario",
                         directory=request_dir)
    assert job.state == JOB_DONE, job.error
    assert job.error is None and job.record_error is None
    summary = job.summary
    assert (summary.rows_read, summary.rows_stored, summary.rows_rejected) == (2, 2, 0)
    assert [(f.name, f.size, f.sha256) for f in summary.files] == [("risposta RPO.csv", file.size, file.sha256)]
    # Progress: the rows the store counted, and the whole file read.
    assert job.progress.rows == 2
    assert job.progress.bytes_read() == job.progress.total_bytes == file.size
    # The upload is gone once the job ends.
    assert not request_dir.exists()
    # The same bytes through the CLI's path are the same import: recognised, nothing changes.
    again = request_dir.parent / "again.csv"
    again.write_text(f"number,status\n{NUM},registered\n{OTHER},not_registered\n")
    repeat, _ = run(registry_import.import_csv(store, again, CHECKED, "acme", False))
    assert repeat.already_imported and repeat.import_id == summary.import_id

    changes = run(collect(store.list_changes()))
    assert [(c.user, c.action, c.target) for c in changes] == [("mario", CHANGE_IMPORT, str(summary.import_id))]
    detail = changes[0].detail
    assert detail["kind"] == KIND_REGISTRY and detail["rows_stored"] == 2
    assert detail["files"] == [{"field": "file", "name": "risposta RPO.csv", "size": file.size,
                                "sha256": file.sha256}]
    shown = job.as_json()
    assert shown["state"] == JOB_DONE and shown["import_id"] == summary.import_id and shown["rows_read"] == 2


def test_bad_rows_refuse_the_file_with_their_lines_and_name_the_upload(jobs: ImportJobs, store: Store,
                                                                       request_dir: Path,
                                                                       run: Callable[..., Any]) -> None:
    file = upload(request_dir, "answers.csv", f"number,status\n{NUM},registered\nnot a number,registered\n"
                                              f"{OTHER},maybe\n")
    job = start_and_wait(jobs, run, KIND_REGISTRY, [file], ImportParams(checked_at=CHECKED), "mario",
                         directory=request_dir)
    assert job.state == JOB_FAILED
    assert job.summary is None
    assert "import rejected: 2 bad row(s); nothing was imported" in job.error
    assert [p.line for p in job.problems] == [3, 4] and job.problems_total == 2
    assert run(store.evidence(NUM, "acme")) == []
    changes = run(collect(store.list_changes()))
    assert [(c.user, c.action, c.target) for c in changes] == [("mario", CHANGE_IMPORT_FAILED, "")]
    assert not request_dir.exists()

    # With skip_invalid the good row lands and the bad ones are listed with their lines.
    retry_dir = new_upload_dir(request_dir.parent)
    file = upload(retry_dir, "answers.csv", f"number,status\n{NUM},registered\nnot a number,registered\n")
    job = start_and_wait(jobs, run, KIND_REGISTRY, [file], ImportParams(checked_at=CHECKED, skip_invalid=True),
                         "mario", directory=retry_dir)
    assert job.state == JOB_DONE
    assert (job.summary.rows_stored, job.summary.rows_rejected) == (1, 1)
    assert [p.line for p in job.problems] == [3]
    assert job.as_json()["rejected"][0]["line"] == 3


def test_a_file_error_names_the_upload_not_where_it_is_kept(jobs: ImportJobs, request_dir: Path,
                                                            run: Callable[..., Any]) -> None:
    file = upload(request_dir, "consensi.csv", "numero,chi\n+390645678901,acme\n")
    job = start_and_wait(jobs, run, KIND_CONSENTS, [file], ImportParams(), "anna", directory=request_dir)
    assert job.state == JOB_FAILED
    assert job.error.startswith("consensi.csv: line 1: the header must name the columns")
    assert str(request_dir) not in job.error


def test_an_unknown_principal_and_a_two_list_answer(jobs: ImportJobs, store: Store, request_dir: Path,
                                                    run: Callable[..., Any]) -> None:
    file = upload(request_dir, "answers.csv", f"{NUM},registered\n")
    job = start_and_wait(jobs, run, KIND_REGISTRY, [file], ImportParams(checked_at=CHECKED, principal="nosuch"),
                         "mario", directory=request_dir)
    assert job.state == JOB_FAILED and "principal 'nosuch' does not exist" in job.error

    pair_dir = new_upload_dir(request_dir.parent)
    files = [upload(pair_dir, "list.csv", f"{NUM}\n{OTHER}\n{MOBILE}\n"),
             upload(pair_dir, "list.csv", f"{OTHER}\n", field="file2")]
    job = start_and_wait(jobs, run, KIND_REGISTRY_LISTS, files,
                         ImportParams(checked_at=CHECKED, list_kind=RPO_CLEANSED_LIST, principal="acme"),
                         "mario", directory=pair_dir)
    assert job.state == JOB_DONE, job.error
    assert [(f.role, f.name) for f in job.summary.files] == [("submitted", "list.csv"), ("cleansed", "list.csv")]
    # Cleansed: absent from the cleaned list means registered.
    assert job.summary.detail == {"registered": 2, "not_registered": 1}


def test_jobs_run_one_at_a_time_in_order(jobs: ImportJobs, tmp_path: Path, request_dir: Path,
                                         run: Callable[..., Any]) -> None:
    first = upload(request_dir, "directory.csv", f"{NUM}\n{OTHER}\n")
    second_dir = new_upload_dir(request_dir.parent)
    second = upload(second_dir, "consents.csv", "number,principal,given_at,evidence\n"
                                                f"{NUM},acme,2026-01-05,form 17\n")

    async def go() -> tuple[Any, Any, int, bool]:
        one = jobs.start(KIND_DIRECTORY, [first], ImportParams(), "anna", directory=request_dir)
        two = jobs.start(KIND_CONSENTS, [second], ImportParams(), "anna", directory=second_dir)
        queued = jobs.get(two)
        ahead, waiting = jobs.waiting_before(queued), queued.waiting
        await jobs.wait(two)
        return jobs.get(one), jobs.get(two), ahead, waiting

    one, two, ahead, waiting = run(go())
    assert ahead == 1 and waiting
    assert one.state == two.state == JOB_DONE
    # Every kind reports its rows as the store reads them, not only RPO answers.
    assert (one.progress.rows, two.progress.rows) == (2, 1)
    assert two.started_us >= one.finished_us
    assert [j.id for j in jobs.jobs()] == [two.id, one.id]
    assert jobs.get("nosuch") is None


def test_what_the_cli_refuses_as_usage_is_refused_before_it_runs(request_dir: Path) -> None:
    file = upload(request_dir, "a.csv", "x\n")
    with pytest.raises(ImportRequestError, match="unknown import kind 'rpo'"):
        check_request("rpo", [file], ImportParams())
    with pytest.raises(ImportRequestError, match="checked_at is required"):
        check_request(KIND_REGISTRY, [file], ImportParams())
    with pytest.raises(ImportRequestError, match=r"takes the submitted list \(file\) and the RPO's list \(file2\)"):
        check_request(KIND_REGISTRY_LISTS, [file], ImportParams(checked_at=CHECKED))
    with pytest.raises(ImportRequestError, match="list_kind must be registered or cleansed"):
        check_request(KIND_REGISTRY_LISTS, [file, upload(request_dir, "b.csv", "y\n", "file2")],
                      ImportParams(checked_at=CHECKED, list_kind="other"))
    with pytest.raises(ImportRequestError, match=r"takes one file \(file\); received no file"):
        check_request(KIND_CONSENTS, [], ImportParams())


def test_closing_deletes_the_uploads_of_jobs_that_never_ran(store: Store, store_url: str, request_dir: Path,
                                                            run: Callable[..., Any]) -> None:
    jobs = ImportJobs(store, Config(db=store_url))
    file = upload(request_dir, "directory.csv", f"{NUM}\n")

    async def go() -> str:
        # Started and closed before the worker ever ran.
        job_id = jobs.start(KIND_DIRECTORY, [file], ImportParams(), "anna", directory=request_dir)
        await jobs.close()
        return job_id

    job_id = run(go())
    assert jobs.get(job_id).state == JOB_RUNNING
    assert not request_dir.exists()
