"""The console's imports, registry due and audit pages over real HTTP, on both backends: an upload streamed
and imported as the CLI imports it (recorded with its user, shown in the history with its SHA-256), the
roles and the CSRF token enforced, an upload over the limit refused with nothing left behind, the due list
and the audit export the same bytes as the CLI's, and "verify now" recorded with its outcome."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from rpoguard.audit import AuditEntry
from rpoguard.config import AuditConfig, Config, WebConfig
from rpoguard.constants import CHANGE_AUDIT_VERIFY, CHANGE_IMPORT, ROLE_ADMIN, ROLE_OPERATOR, ROLE_VIEWER
from rpoguard.db.store import ConsentRecord, Store
from rpoguard.timeutil import parse_time
from rpoguard.web.app import make_app
from rpoguard.web.jobs import IMPORT_JOBS, JOB_DONE, JOB_FAILED
from rpoguard.web.passwords import hash_password
from rpoguard.web.views.audit import AUDIT_VERIFIER, AuditVerifier

T = TypeVar("T")
PASSWORD = "correct horse battery staple"
NUM = "+390645678901"
OTHER = "+390212345678"
MOBILE = "+393331234567"
CHECKED = "2026-11-20"
LIMIT = 64 * 1024
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


async def collect(rows: AsyncIterator[T]) -> list[T]:
    return [row async for row in rows]


@dataclass
class Console:
    client: TestClient
    store: Store
    run: Callable[..., Any]
    uploads: Path
    store_url: str

    def login(self, name: str) -> str:
        """Log in as `name`; returns the session's CSRF token (read from the imports page)."""

        async def go() -> str:
            page = await (await self.client.get("/login")).text()
            token = _TOKEN.search(page).group(1)
            answer = await self.client.post("/login", data={"csrf_token": token, "username": name,
                                                            "password": PASSWORD, "next": "/imports"},
                                            allow_redirects=False)
            assert answer.status == 303, await answer.text()
            page = await (await self.client.get("/imports")).text()
            return _TOKEN.search(page).group(1)

        return self.run(go())

    def upload(self, token: str | None, fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> Any:
        """POST /imports as the browser does: csrf_token first, then the fields, then the files."""
        # Names as browsers send them: raw, not percent-encoded as aiohttp's client does by default.
        form = FormData(quote_fields=False)
        if token is not None:
            form.add_field("csrf_token", token)
        for name, value in fields.items():
            form.add_field(name, value)
        for name, (filename, data) in files.items():
            form.add_field(name, data, filename=filename, content_type="text/csv")

        async def go() -> tuple[int, str, str]:
            answer = await self.client.post("/imports", data=form, allow_redirects=False)
            return answer.status, answer.headers.get("Location", ""), await answer.text()

        return self.run(go())

    def get(self, path: str) -> tuple[int, str]:
        async def go() -> tuple[int, str]:
            answer = await self.client.get(path, allow_redirects=False)
            return answer.status, await answer.text()

        return self.run(go())

    def leftovers(self) -> list[Path]:
        return sorted(p for p in self.uploads.rglob("*") if p.is_file()) if self.uploads.exists() else []


@pytest.fixture
def console(store: Store, store_url: str, run: Callable[..., Any], tmp_path: Path) -> Iterator[Console]:
    run(store.add_principal("acme", "ACME Energia", []))
    now_us = time.time_ns() // 1000
    for name, role in (("vera", ROLE_VIEWER), ("otto", ROLE_OPERATOR), ("ada", ROLE_ADMIN)):
        run(store.add_user(name, role, hash_password(PASSWORD), now_us))
    uploads = tmp_path / "uploads"
    config = Config(db=store_url, web=WebConfig(upload_dir=str(uploads), max_upload_bytes=LIMIT))

    async def start() -> TestClient:
        client = TestClient(TestServer(make_app(store, config)))
        await client.start_server()
        return client

    client = run(start())
    try:
        yield Console(client, store, run, uploads, store_url)
    finally:
        run(client.close())


def wait_job(console: Console, location: str) -> Any:
    job_id = location.rsplit("/", 1)[-1]
    return console.run(console.client.app[IMPORT_JOBS].wait(job_id))


def test_an_operator_uploads_an_rpo_answer_and_sees_it_imported(console: Console) -> None:
    token = console.login("otto")
    data = f"number,status\n{NUM},registered\n{OTHER},not_registered\n".encode()
    status, location, _ = console.upload(token, {"kind": "registry", "checked_at": CHECKED, "principal": "acme"},
                                         {"file": ("risposta RPO.csv", data)})
    assert status == 303 and re.fullmatch(r"/imports/jobs/[0-9a-f]{16}", location)
    job = wait_job(console, location)
    assert job.state == JOB_DONE, job.error

    status, page = console.get(location)
    assert status == 200
    assert re.search(r'id="job-state"[^>]*>done<', page)
    assert re.search(r'id="rows-read">2<', page) and re.search(r'id="rows-stored">2<', page)
    status, body = console.get(location + ".json")
    assert status == 200 and '"state": "done"' in body

    sha = hashlib.sha256(data).hexdigest()
    status, page = console.get("/imports")
    body = page[page.index('id="imports"'):]
    body = body[body.index("<tbody>"):]
    first_row = body[:body.index("</tr>")]
    assert "risposta RPO.csv" in first_row and sha in first_row, first_row
    imports = console.run(console.store.import_history(limit=5))
    assert [(i.rows_stored, [f.name for f in i.files]) for i in imports] == [(2, ["risposta RPO.csv"])]

    changes = console.run(collect(console.store.list_changes(action=CHANGE_IMPORT)))
    assert [(c.user, c.target) for c in changes] == [("otto", str(imports[0].id))]
    assert changes[0].detail["files"][0]["sha256"] == sha
    assert console.leftovers() == []


def test_a_viewer_may_read_but_not_upload(console: Console) -> None:
    token = console.login("vera")
    status, page = console.get("/imports")
    assert status == 200 and 'id="imports"' in page and 'id="upload"' not in page
    status, _, _ = console.upload(token, {"kind": "registry", "checked_at": CHECKED},
                                  {"file": ("a.csv", f"{NUM},registered\n".encode())})
    assert status == 403
    assert console.run(console.store.import_history(limit=5)) == []
    assert console.leftovers() == []


def test_an_upload_without_its_csrf_token_is_refused(console: Console) -> None:
    console.login("otto")
    status, _, _ = console.upload(None, {"kind": "registry", "checked_at": CHECKED},
                                  {"file": ("a.csv", f"{NUM},registered\n".encode())})
    assert status == 403
    assert console.run(console.store.import_history(limit=5)) == []


def test_an_upload_over_the_limit_is_refused_and_nothing_stays(console: Console) -> None:
    token = console.login("otto")
    big = (f"{NUM},registered\n" * (LIMIT // 20 + 10)).encode()
    assert len(big) > LIMIT
    status, _, body = console.upload(token, {"kind": "registry", "checked_at": CHECKED},
                                     {"file": ("big.csv", big)})
    assert status == 413
    assert "max_upload_bytes" in body
    assert console.leftovers() == []
    assert console.run(console.store.import_history(limit=5)) == []


def test_a_form_the_cli_would_refuse_says_why(console: Console) -> None:
    token = console.login("otto")
    status, _, page = console.upload(token, {"kind": "registry"}, {"file": ("a.csv", f"{NUM},registered\n".encode())})
    assert status == 400
    assert re.search(r'role="alert"[^>]*>checked_at is required', page)
    status, _, page = console.upload(token, {"kind": "registry", "checked_at": "yesterday-ish"},
                                     {"file": ("a.csv", f"{NUM},registered\n".encode())})
    assert status == 400 and "checked_at:" in page
    assert console.leftovers() == []


def test_bad_rows_are_listed_with_their_lines(console: Console) -> None:
    token = console.login("otto")
    data = f"number,status\n{NUM},registered\nnot a number,registered\n".encode()
    status, location, _ = console.upload(token, {"kind": "registry", "checked_at": CHECKED},
                                         {"file": ("answers.csv", data)})
    assert status == 303
    job = wait_job(console, location)
    assert job.state == JOB_FAILED
    status, page = console.get(location)
    assert re.search(r'id="job-state"[^>]*>failed<', page)
    rows = re.findall(r'<tr><td class="num">(\d+)</td><td>([^<]*)</td></tr>', page)
    assert [line for line, _ in rows] == ["3"]
    assert console.run(console.store.import_history(limit=5)) == []


def test_a_two_list_answer_and_a_directory(console: Console) -> None:
    token = console.login("otto")
    status, location, _ = console.upload(
        token, {"kind": "registry-lists", "checked_at": CHECKED, "list_kind": "registered"},
        {"file": ("submitted.csv", f"{NUM}\n{OTHER}\n".encode()), "file2": ("registered.csv", f"{NUM}\n".encode())})
    assert status == 303
    job = wait_job(console, location)
    assert job.state == JOB_DONE, job.error
    assert [(f.role, f.name) for f in job.summary.files] == [("submitted", "submitted.csv"),
                                                             ("registered", "registered.csv")]
    # A directory's date comes in the one date field of the form.
    status, location, _ = console.upload(token, {"kind": "directory", "checked_at": "2026-11-01"},
                                         {"file": ("elenco.csv", f"{MOBILE}\n".encode()),
                                          "file2": ("", b"")})
    assert status == 303
    job = wait_job(console, location)
    assert job.state == JOB_DONE, job.error
    assert job.params.listed_at == parse_time("2026-11-01") and job.params.replace


def test_due_lists_the_same_numbers_as_the_cli(console: Console, run_cli: Callable[..., Any]) -> None:
    store, run = console.store, console.run
    for number in (NUM, OTHER, MOBILE):
        run(store.add_consent(ConsentRecord(number, "acme", parse_time("2026-01-05"), "form 17", False, None, None)))
    console.login("vera")
    status, page = console.get("/due")
    assert status == 200 and 'data-principal="acme"' in page and 'href="/due/acme.csv"' in page
    for query, options in (("", []), ("?national=1", ["--national"]), ("?within=7", ["--within", "7"])):
        status, body = console.get(f"/due/acme.csv{query}")
        assert status == 200
        code, out, err = run_cli("registry", "due", "--principal", "acme", *options,
                                 env={"RPOGUARD_DB": console.store_url})
        assert code == 0, err
        assert body == out
        assert len(body.splitlines()) == 3
    assert console.get("/due/nosuch.csv")[0] == 404
    assert console.get("/due/acme.csv?within=x")[0] == 400


def test_audit_verify_now_and_export(console: Console, make_entry: Callable[..., AuditEntry],
                                     run_cli: Callable[..., Any]) -> None:
    store, run = console.store, console.run
    for _ in range(3):
        run(store.append_decision(make_entry()))
    token = console.login("vera")
    status, page = console.get("/audit")
    assert status == 200 and 'id="verify"' not in page

    async def post_verify(token: str) -> int:
        answer = await console.client.post("/audit/verify", data={"csrf_token": token}, allow_redirects=False)
        return answer.status

    assert run(post_verify(token)) == 403
    token = console.login("otto")
    assert run(post_verify(token)) == 303
    run(console.client.app[AUDIT_VERIFIER].wait())
    changes = run(collect(store.list_changes(action=CHANGE_AUDIT_VERIFY)))
    assert [(c.user, c.detail["ok"], c.detail["rows"]) for c in changes] == [("otto", True, 3)]
    status, page = console.get("/audit")
    assert 'data-ok="true"' in page and "audit log intact: 3 decision(s)" in page

    status, body = console.get("/audit/export.csv")
    assert status == 200
    code, out, err = run_cli("audit", "export", env={"RPOGUARD_DB": console.store_url})
    assert code == 0, err
    # The CLI's output is read as text (universal newlines); csv writes CRLF either way.
    assert body.replace("\r\n", "\n") == out and len(body.splitlines()) == 4
    assert console.get("/audit/export.csv?from=nonsense")[0] == 400


def test_a_verification_that_cannot_read_its_anchors_is_not_a_pass(store: Store, store_url: str, tmp_path: Path,
                                                                  run: Callable[..., Any],
                                                                  make_entry: Callable[..., AuditEntry]) -> None:
    run(store.append_decision(make_entry()))
    missing = AuditVerifier(store, Config(db=store_url, audit=AuditConfig(anchor_file=str(tmp_path / "none"))))
    detail = run(missing.verify())
    assert detail["ok"] is False and detail["rows"] == 1
    assert "the anchor file does not exist" in " ".join(detail["report"])

    key = tmp_path / "anchor.key"
    key.write_text("k" * 64)
    key.chmod(0o644)
    open_key = AuditVerifier(store, Config(db=store_url, audit=AuditConfig(anchor_file=str(tmp_path / "anchors"),
                                                                           anchor_key_file=str(key))))
    detail = run(open_key.verify())
    assert detail["ok"] is False and detail["rows"] is None
    assert "is open to group or others" in detail["problem"]
