"""The console's handlers over a real socket: login, sessions, CSRF, roles, the number page and its exports,
the decision search, the fact forms and the record of changes, the language, the headers. The browser tests
(tests/browser) drive the same pages in chromium."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rpoguard.audit import AuditEntry
from rpoguard.config import Config, WebConfig
from rpoguard.constants import (
    CHANGE_CONSENT_ADD,
    CHANGE_OPTOUT_ADD,
    CHANGE_USER_ADD,
    ROLE_ADMIN,
    ROLE_OPERATOR,
    ROLE_VIEWER,
)
from rpoguard.db.store import ImportMeta, RpoAnswer, Store
from rpoguard.timeutil import to_us
from rpoguard.web.passwords import hash_password
from rpoguard.web.security import SESSION_COOKIE
from support.aio import Runner
from support.console_client import ConsoleClient

PASSWORD = "correct horse battery"
NUMBER = "+390645678901"
MOBILE = "+393331234567"


@pytest.fixture(scope="module")
def password_hash() -> str:
    return hash_password(PASSWORD)  # argon2 is slow by design: once for the module


@pytest.fixture
def seeded(store: Store, run: Runner, password_hash: str, make_entry: Callable[..., AuditEntry]) -> Store:
    now = datetime.now(UTC)
    run(store.add_principal("acme", "ACME Energia", ["0694801234"]))
    run(store.add_campaign("spring", "acme", False, None, None))
    meta = ImportMeta(kind="rpo", file_name="answers.csv", sha256="ab" * 32, checked_at=now - timedelta(days=1),
                      principal_id="acme")
    run(store.import_rpo([RpoAnswer(NUMBER, False, None, 2), RpoAnswer(MOBILE, True, None, 3)], meta))
    for role in (ROLE_VIEWER, ROLE_OPERATOR, ROLE_ADMIN):
        run(store.add_user(role, role, password_hash, to_us(now)))
    for minutes in range(3):
        run(store.append_decision(make_entry(number=NUMBER, ts_us=to_us(now - timedelta(minutes=minutes)),
                                             campaign_id="spring", principal_id="acme")))
    run(store.append_decision(make_entry(number=MOBILE, ts_us=to_us(now), decision="block",
                                         reasons="rpo_registered,unlisted_no_consent", basis=None,
                                         campaign_id="spring", principal_id="acme")))
    return store


@pytest.fixture
def config(db_path: Path) -> Config:
    return Config(db=str(db_path))


@pytest.fixture
def browser(seeded: Store, config: Config, run: Runner) -> Iterator[ConsoleClient]:
    client = ConsoleClient(seeded, config, run)
    yield client
    client.close()


# -- logging in -------------------------------------------------------------------------------------------

def test_a_page_without_a_session_goes_to_the_login_form(browser: ConsoleClient) -> None:
    page = browser.get("/decisions")
    assert page.url.startswith("/login?next=") and page.url.endswith("decisions")
    assert 'name="username"' in page.text and 'name="password"' in page.text


def test_login_with_the_right_password_opens_the_overview(browser: ConsoleClient) -> None:
    page = browser.login("viewer", PASSWORD)
    assert page.status == 200 and page.url == "/"
    assert 'id="whoami"' in page.text and "viewer" in page.text


def test_a_wrong_password_is_refused_and_gives_no_session(browser: ConsoleClient) -> None:
    page = browser.login("viewer", "not the password")
    assert page.status == 401
    assert 'role="alert"' in page.text
    assert browser.get("/decisions").url.startswith("/login")


def test_an_unknown_user_reads_like_a_wrong_password(browser: ConsoleClient) -> None:
    unknown = browser.login("nobody", PASSWORD)
    wrong = browser.login("viewer", "nope nope nope")
    assert unknown.status == wrong.status == 401


@pytest.mark.sqlite_only
def test_failed_logins_are_throttled_even_with_the_right_password(seeded: Store, db_path: Path,
                                                                   run: Runner) -> None:
    config = Config(db=str(db_path), web=WebConfig(login_attempts=3))
    client = ConsoleClient(seeded, config, run)
    try:
        for _ in range(3):
            assert client.login("operator", "wrong wrong wrong").status == 401
        throttled = client.login("operator", PASSWORD)
        assert throttled.status == 429
        assert client.get("/decisions").url.startswith("/login")
    finally:
        client.close()


@pytest.mark.sqlite_only
def test_a_disabled_user_loses_an_open_session_at_once(browser: ConsoleClient, seeded: Store,
                                                        run: Runner) -> None:
    browser.login("operator", PASSWORD)
    assert browser.get("/decisions").status == 200
    run(seeded.update_user("operator", at_us=to_us(datetime.now(UTC)), disabled=True))
    assert browser.get("/decisions").url.startswith("/login")


@pytest.mark.sqlite_only
def test_logout_ends_the_session_on_the_server(browser: ConsoleClient) -> None:
    browser.login("viewer", PASSWORD)
    cookie = browser.client.session.cookie_jar.filter_cookies(browser.client.make_url("/"))[SESSION_COOKIE].value
    browser.post("/logout")
    browser.client.session.cookie_jar.update_cookies({SESSION_COOKIE: cookie})
    assert browser.get("/decisions").url.startswith("/login")


@pytest.mark.sqlite_only
def test_the_session_cookie_is_httponly_samesite_and_secure_behind_tls(seeded: Store, db_path: Path,
                                                                         run: Runner) -> None:
    for web_config, secure in ((WebConfig(), False), (WebConfig(behind_proxy=True), True)):
        client = ConsoleClient(seeded, Config(db=str(db_path), web=web_config), run)
        try:
            # The login form's own (anonymous) session: a Secure cookie never comes back over plain HTTP.
            cookie = client.get("/login").headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
            assert ("Secure" in cookie) is secure
        finally:
            client.close()


def test_login_moves_to_a_new_session_id(browser: ConsoleClient) -> None:
    browser.get("/login")
    before = browser.client.session.cookie_jar.filter_cookies(browser.client.make_url("/"))[SESSION_COOKIE].value
    browser.post("/login", {"username": "viewer", "password": PASSWORD})
    after = browser.client.session.cookie_jar.filter_cookies(browser.client.make_url("/"))[SESSION_COOKIE].value
    assert before != after


def test_login_goes_back_to_the_page_asked_for_but_never_off_site(browser: ConsoleClient) -> None:
    browser.get("/login")
    page = browser.post("/login", {"username": "viewer", "password": PASSWORD, "next": "//evil.example/x"})
    assert page.url == "/"


# -- CSRF and roles ---------------------------------------------------------------------------------------

def test_a_form_without_its_csrf_token_is_refused(browser: ConsoleClient, seeded: Store, run: Runner) -> None:
    browser.login("operator", PASSWORD)
    page = browser.post(f"/numbers/{NUMBER}/optouts", {}, csrf=False)
    assert page.status == 403
    page = browser.post(f"/numbers/{NUMBER}/optouts", {"csrf_token": "forged"}, csrf=False)
    assert page.status == 403
    assert run(_optouts(seeded, NUMBER)) == 0


def test_a_post_from_another_site_is_refused_even_with_the_token(browser: ConsoleClient) -> None:
    browser.login("operator", PASSWORD)
    browser.get(f"/numbers/{NUMBER}")
    page = browser.post(f"/numbers/{NUMBER}/optouts", {}, headers={"Origin": "https://evil.example"})
    assert page.status == 403


def test_a_viewer_cannot_record_a_fact(browser: ConsoleClient, seeded: Store, run: Runner) -> None:
    browser.login("viewer", PASSWORD)
    page = browser.get(f"/numbers/{NUMBER}")
    assert 'id="optout-form"' not in page.text
    assert browser.post(f"/numbers/{NUMBER}/optouts", {}).status == 403
    assert run(_optouts(seeded, NUMBER)) == 0


def test_an_operator_cannot_manage_users_or_principals(browser: ConsoleClient) -> None:
    browser.login("operator", PASSWORD)
    assert browser.get("/users").status == 403
    assert browser.post("/principals", {"id": "x", "name": "X"}).status == 403


# -- the number page --------------------------------------------------------------------------------------

def test_the_search_box_takes_a_national_number_to_its_page(browser: ConsoleClient) -> None:
    browser.login("viewer", PASSWORD)
    page = browser.get("/numbers", params={"number": "06 4567 8901"})
    assert page.url in ("/numbers/%2B390645678901", f"/numbers/{NUMBER}")
    assert f"<h1>Numero {NUMBER}</h1>" in page.text
    assert page.text.count('data-kind="decision"') == 3
    assert 'data-kind="answer"' in page.text and "answers.csv" in page.text


def test_a_number_that_is_not_italian_is_explained(browser: ConsoleClient) -> None:
    browser.login("viewer", PASSWORD)
    page = browser.get("/numbers", params={"number": "hello"})
    assert page.status == 400 and 'role="alert"' in page.text


def test_each_reason_is_explained_with_its_legal_source(browser: ConsoleClient) -> None:
    browser.login("viewer", PASSWORD)
    browser.get("/lang/en")
    page = browser.get(f"/numbers/{MOBILE}")
    assert "registered in the RPO and no consent to this principal" in page.text
    assert "L. 5/2018 art. 1" in page.text


def test_the_evidence_exports_as_csv_and_pdf(browser: ConsoleClient) -> None:
    browser.login("viewer", PASSWORD)
    status, headers, body = browser.get_bytes(f"/numbers/{MOBILE}/evidence.csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    lines = body.decode().splitlines()
    assert lines[0] == "time,kind,principal,description,detail"
    assert sum(",decision," in line for line in lines) == 1 and any(",rpo_answer," in line for line in lines)
    status, headers, body = browser.get_bytes(f"/numbers/{MOBILE}/evidence.pdf")
    assert status == 200 and headers["Content-Type"] == "application/pdf" and body.startswith(b"%PDF-")
    assert "attachment" in headers["Content-Disposition"]


def test_an_operator_records_a_refusal_with_their_name(browser: ConsoleClient, seeded: Store,
                                                       run: Runner) -> None:
    browser.login("operator", PASSWORD)
    browser.get(f"/numbers/{NUMBER}")
    page = browser.post(f"/numbers/{NUMBER}/optouts", {"principal": "acme", "reference": "call 42"})
    assert page.status == 200 and 'data-kind="optout"' in page.text
    assert run(_optouts(seeded, NUMBER)) == 1
    change = run(_latest_change(seeded))
    assert (change.user, change.action, change.target) == ("operator", CHANGE_OPTOUT_ADD, NUMBER)
    assert change.detail["reference"] == "call 42"


def test_a_consent_in_the_future_is_refused_and_nothing_is_stored(browser: ConsoleClient, seeded: Store,
                                                                   run: Runner) -> None:
    browser.login("operator", PASSWORD)
    browser.get(f"/numbers/{NUMBER}")
    future = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    page = browser.post(f"/numbers/{NUMBER}/consents", {"principal": "acme", "given_at": future, "evidence": "x"})
    assert 'role="alert"' in page.text and "future" in page.text
    assert run(_consents(seeded, NUMBER)) == 0
    page = browser.post(f"/numbers/{NUMBER}/consents",
                        {"principal": "acme", "given_at": "2026-11-02T10:00", "evidence": "rec-7"})
    assert run(_consents(seeded, NUMBER)) == 1
    assert run(_latest_change(seeded)).action == CHANGE_CONSENT_ADD


# -- decisions --------------------------------------------------------------------------------------------

def test_decisions_page_by_keyset_and_filter(browser: ConsoleClient) -> None:
    browser.login("viewer", PASSWORD)
    page = browser.get("/decisions", params={"decision": "block"})
    assert page.text.count("<tr><td>") == 1 and MOBILE in page.text
    page = browser.get("/decisions", params={"reason": "unlisted_no_consent"})
    assert MOBILE in page.text and f">{NUMBER}<" not in page.text


def test_a_rare_match_is_reached_page_by_page_without_a_long_walk(
        browser: ConsoleClient, seeded: Store, run: Runner, make_entry: Callable[..., AuditEntry],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rpoguard.web.views.decisions.SCAN_LIMIT", 2)
    old = to_us(datetime.now(UTC) - timedelta(minutes=30))
    run(seeded.append_decision(make_entry(number=NUMBER, ts_us=old, source="agi", campaign_id="spring",
                                          principal_id="acme")))
    browser.login("viewer", PASSWORD)
    page = browser.get("/decisions", params={"source": "agi"})
    assert 'id="partial-search"' in page.text and page.text.count("<tr><td>") == 0
    pages = 0
    while 'id="next-page"' in page.text and page.text.count("<tr><td>") == 0 and pages < 10:
        next_url = re.search(r'id="next-page" href="([^"]+)"', page.text)
        assert next_url is not None
        page = browser.get(html.unescape(next_url.group(1)))
        pages += 1
    assert page.text.count("<tr><td>") == 1 and ">agi<" in page.text


def test_decisions_export_every_match_as_csv(browser: ConsoleClient) -> None:
    browser.login("viewer", PASSWORD)
    status, headers, body = browser.get_bytes(f"/decisions.csv?number={NUMBER}")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    rows = body.decode().splitlines()
    assert rows[0].startswith("seq,decision_id,time,number")
    assert len(rows) == 4 and all(NUMBER in row for row in rows[1:])


# -- admin ------------------------------------------------------------------------------------------------

def test_an_admin_adds_a_user_who_can_then_log_in(browser: ConsoleClient, seeded: Store, run: Runner) -> None:
    browser.login("admin", PASSWORD)
    browser.get("/users")
    page = browser.post("/users", {"username": "dora", "role": "operator", "password": "a long enough one"})
    assert "dora" in page.text
    change = run(_latest_change(seeded))
    assert (change.user, change.action, change.target) == ("admin", CHANGE_USER_ADD, "dora")
    assert "a long enough one" not in str(change.detail)
    other = ConsoleClient(seeded, Config(db="unused"), run)
    try:
        assert other.login("dora", "a long enough one").url == "/"
    finally:
        other.close()


def test_a_short_password_is_refused(browser: ConsoleClient, seeded: Store, run: Runner) -> None:
    browser.login("admin", PASSWORD)
    browser.get("/users")
    page = browser.post("/users", {"username": "eve", "role": "viewer", "password": "short"})
    assert 'role="alert"' in page.text
    assert run(seeded.get_user("eve")) is None


# -- language, headers ------------------------------------------------------------------------------------

def test_italian_by_default_english_on_request(browser: ConsoleClient) -> None:
    page = browser.get("/login")
    assert '<html lang="it">' in page.text and "Accedi" in page.text
    page = browser.get("/lang/en?next=/login")
    assert '<html lang="en">' in page.text and "Log in" in page.text
    assert browser.get("/lang/xx").status == 404


def test_every_page_carries_the_security_headers(browser: ConsoleClient) -> None:
    page = browser.get("/login")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Referrer-Policy"] == "same-origin"
    assert page.headers["Cache-Control"] == "no-store"


async def _optouts(store: Store, number: str) -> int:
    return len([o async for o in store.list_optouts(number=number)])


async def _consents(store: Store, number: str) -> int:
    return len([c async for c in store.list_consents(number=number)])


async def _latest_change(store: Store) -> object:
    async for change in store.list_changes(limit=1):
        return change
    raise AssertionError("no change recorded")



