"""The compliance console in Debian's chromium, as an operator or a DPO uses it: log in, search a number, import
an RPO answer, the roles, CSRF, the overview's chart, the two languages, log out.

The server is a real `rpoguard web` over a store built with the CLI (tests/support/browser.py); the pages follow
the console's DOM contract (ids and names), never their wording, except where the wording is what is tested."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from support.browser import (
    CHECKS,
    DEFAULT_TIMEOUT_MS,
    SEARCHED_E164,
    SEARCHED_NATIONAL,
    USERS,
    WebServer,
    log_in,
    wait_for_chart,
)

# The session cookie is whatever the server sets at login; a page that needs a login sends the browser here.
LOGIN_PATH = "/login"


def path_of(page: Any) -> str:
    """The page's path, decoded (a number's page may show as /numbers/%2B39...)."""
    return unquote(urlsplit(page.url).path)


def logged_in(new_context: Any, console: WebServer, username: str) -> Any:
    """A page in a context of its own, logged in as `username` and on the overview."""
    page = new_context().new_page()
    log_in(page, console.base_url, username)
    page.wait_for_url(f"{console.base_url}/")
    return page


def csrf_token_of(page: Any) -> str:
    """The CSRF token the current page's forms carry (the logout form is on every page once logged in)."""
    token = page.get_attribute("form#logout input[name=csrf_token]", "value")
    assert token, "the logout form carries no csrf_token"
    return str(token)


def still_logged_in(page: Any, console: WebServer) -> bool:
    """Whether the page's cookies still open the overview: a session that has ended is sent to the login."""
    response = page.request.get(f"{console.base_url}/", max_redirects=0)
    if response.status in (302, 303) and urlsplit(response.headers["location"]).path == LOGIN_PATH:
        return False
    assert response.status == 200, f"GET / answered {response.status}, neither the overview nor the login"
    return True


def test_log_in_lands_on_the_overview_with_the_user_named(page: Any, console: WebServer) -> None:
    log_in(page, console.base_url, "operator")

    page.wait_for_url(f"{console.base_url}/")
    assert page.inner_text("span#whoami").find("operator") >= 0
    assert page.locator("form#logout").count() == 1
    assert page.locator("form#search input[name=number]").count() == 1


def test_a_wrong_password_is_refused_with_a_message_and_no_session(page: Any, console: WebServer) -> None:
    log_in(page, console.base_url, "operator", password=USERS["admin"])

    alert = page.locator("[role=alert]")
    alert.wait_for(state="visible")
    assert alert.inner_text().strip()
    assert path_of(page) == LOGIN_PATH
    assert page.locator("span#whoami").count() == 0
    overview = page.request.get(f"{console.base_url}/", max_redirects=0)
    assert overview.status in (302, 303)
    assert overview.headers["location"].split("?", 1)[0].endswith(LOGIN_PATH)


def test_a_number_searched_in_national_form_opens_its_page(new_context: Any, console: WebServer) -> None:
    page = logged_in(new_context, console, "viewer")

    page.fill("form#search input[name=number]", SEARCHED_NATIONAL)
    page.press("form#search input[name=number]", "Enter")

    page.wait_for_url(re.compile(r".*/numbers/(\+|%2B)390645678901$"))
    assert path_of(page) == f"/numbers/{SEARCHED_E164}"
    assert SEARCHED_E164 in page.inner_text("h1")
    kinds = page.eval_on_selector_all("ol#timeline > li.event", "items => items.map(i => i.dataset.kind)")
    # The sample store holds for this number an RPO answer, a directory listing and its recorded decisions.
    assert {"answer", "listing", "decision"} <= set(kinds), kinds
    assert page.locator("table#decisions tbody tr").count() == CHECKS[SEARCHED_NATIONAL]
    assert page.locator("a#export-csv").count() == 1
    assert page.locator("a#export-pdf").count() == 1


def test_an_rpo_answer_uploaded_is_in_the_history_and_the_numbers_timeline(
    new_context: Any, console: WebServer, tmp_path: Path
) -> None:
    # A number the sample store knows nothing of: its timeline has no answer before the upload.
    answers = tmp_path / "risposte-rpo-browser.csv"
    answers.write_text("number,status,registered_at\n+39 011 765 4321,registered,2025-06-01\n", encoding="utf-8")
    sha256 = hashlib.sha256(answers.read_bytes()).hexdigest()
    page = logged_in(new_context, console, "operator")
    page.goto("/numbers/+390117654321")
    assert page.locator("ol#timeline > li.event[data-kind=answer]").count() == 0

    page.goto("/imports")
    form = page.locator("form#upload")
    assert form.locator("input").first.get_attribute("name") == "csrf_token"
    form.locator("select[name=kind]").select_option("registry")
    form.locator("input[name=file]").set_input_files(str(answers))
    form.locator("input[name=checked_at]").fill(page.evaluate("() => new Date().toISOString().slice(0, 10)"))
    form.locator("select[name=principal]").select_option("acme")
    form.locator("[type=submit]").click()

    page.wait_for_url(re.compile(r".*/imports/jobs/[^/]+$"))
    # The job page refreshes itself while the import runs.
    # Playwright is imported only once the fixtures found it (without it these tests skip or, in CI, fail).
    from playwright.sync_api import expect

    # The job page refreshes itself while the import runs; the locator is read again after each reload.
    expect(page.locator("#job-state")).to_have_text(re.compile(r"^\s*(done|failed)\s*$"), timeout=DEFAULT_TIMEOUT_MS)
    assert page.inner_text("#job-state").strip() == "done", page.inner_text("body")

    page.goto("/imports")
    newest = page.locator("table#imports tbody tr").first.inner_text()
    assert answers.name in newest
    assert sha256 in newest
    page.goto("/numbers/+390117654321")
    assert page.locator("ol#timeline > li.event[data-kind=answer]").count() == 1


def test_a_viewer_is_refused_an_upload(new_context: Any, console: WebServer) -> None:
    page = logged_in(new_context, console, "viewer")
    page.goto("/imports")
    assert page.locator("table#imports").count() == 1
    assert page.locator("form#upload").count() == 0

    # A post the form would have made, carrying the viewer's own valid CSRF token first: the role refuses it.
    upload = {
        "csrf_token": csrf_token_of(page),
        "kind": "registry",
        "checked_at": "2026-11-20",
        "principal": "acme",
        "file": {"name": "rpo.csv", "mimeType": "text/csv", "buffer": b"number,status\n+39 06 4567 8901,registered\n"},
    }
    refused = page.request.post(f"{console.base_url}/imports", multipart=upload, max_redirects=0)
    assert refused.status == 403

    # The same post from an operator is taken (to its job page): the 403 above is the role's, not the form's.
    operator = logged_in(new_context, console, "operator")
    upload["csrf_token"] = csrf_token_of(operator)
    taken = operator.request.post(f"{console.base_url}/imports", multipart=upload, max_redirects=0)
    assert taken.status == 303
    assert re.search(r"/imports/jobs/[^/]+$", taken.headers["location"])


def test_a_form_posted_without_its_csrf_token_is_refused(new_context: Any, console: WebServer) -> None:
    page = logged_in(new_context, console, "operator")

    missing = page.request.post(f"{console.base_url}/logout", form={}, max_redirects=0)
    wrong = page.request.post(f"{console.base_url}/logout", form={"csrf_token": "0" * 43}, max_redirects=0)

    assert missing.status == 403
    assert wrong.status == 403
    # Neither post logged the user out; the real form (with its token) does.
    assert still_logged_in(page, console)
    page.click("form#logout [type=submit]")
    page.wait_for_url(re.compile(r".*/login(\?.*)?$"))
    assert not still_logged_in(page, console)


def test_the_overview_chart_is_drawn_with_the_recorded_decisions(new_context: Any, console: WebServer) -> None:
    page = logged_in(new_context, console, "viewer")

    wait_for_chart(page)
    points = page.evaluate(
        """() => Chart.getChart('decisions-chart').data.datasets.flatMap(d => d.data)
                 .map(p => (p !== null && typeof p === 'object') ? p.y : p)"""
    )
    assert len(points) > 0
    assert sum(float(p or 0) for p in points) >= sum(CHECKS.values())
    for part in ("table#blocks-by-reason", "section#freshness", "table#latest-imports", "section#audit-state"):
        assert page.locator(part).count() == 1, part


def test_italian_by_default_and_english_on_request(new_context: Any, console: WebServer) -> None:
    page = logged_in(new_context, console, "viewer")
    assert page.get_attribute("html", "lang") == "it"
    italian_nav = page.inner_text("nav")
    assert "Panoramica" in italian_nav

    page.click("a[hreflang=en]")
    page.wait_for_function("() => document.documentElement.lang === 'en'")
    english_nav = page.inner_text("nav")
    assert "Overview" in english_nav
    assert "Panoramica" not in english_nav
    # The choice stays for the next page.
    page.goto("/decisions")
    assert page.get_attribute("html", "lang") == "en"
    assert page.inner_text("nav") == english_nav

    page.click("a[hreflang=it]")
    page.wait_for_function("() => document.documentElement.lang === 'it'")
    assert page.inner_text("nav") == italian_nav


def test_log_out_ends_the_session_for_the_old_cookie_too(new_context: Any, console: WebServer) -> None:
    page = logged_in(new_context, console, "admin")
    cookies = page.context.cookies()
    assert cookies

    page.click("form#logout [type=submit]")
    page.wait_for_url(re.compile(r".*/login(\?.*)?$"))

    # The cookies from before the logout, replayed by another browser, open nothing.
    replay = new_context()
    replay.add_cookies(cookies)
    stale = replay.new_page()
    stale.goto("/")
    assert path_of(stale) == LOGIN_PATH
    assert stale.locator("span#whoami").count() == 0


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_every_role_sees_the_main_pages(new_context: Any, console: WebServer, role: str) -> None:
    page = logged_in(new_context, console, role)
    for path in ("/", "/decisions", "/imports", f"/numbers/{SEARCHED_E164}"):
        response = page.goto(path)
        assert response is not None
        assert response.status == 200, path
        assert page.get_attribute("html", "lang") == "it", path


def test_a_numbers_evidence_downloads_as_csv_and_pdf(new_context: Any, console: WebServer) -> None:
    page = logged_in(new_context, console, "viewer")
    page.goto(f"/numbers/{SEARCHED_E164}")

    with page.expect_download() as csv_started:
        page.click("a#export-csv")
    with page.expect_download() as pdf_started:
        page.click("a#export-pdf")

    csv_file, pdf_file = csv_started.value, pdf_started.value
    assert re.fullmatch(r"rpoguard-evidence-390645678901-\S+\.csv", csv_file.suggested_filename)
    assert re.fullmatch(r"rpoguard-evidence-390645678901-\S+\.pdf", pdf_file.suggested_filename)
    with Path(csv_file.path()).open(encoding="utf-8", newline="") as rows:
        kinds = [row["kind"] for row in csv.DictReader(rows)]
    assert "rpo_answer" in kinds
    assert kinds.count("decision") == CHECKS[SEARCHED_NATIONAL]
    assert Path(pdf_file.path()).read_bytes().startswith(b"%PDF-")
