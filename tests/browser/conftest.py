"""Fixtures of the browser tests: one chromium and one `rpoguard web` over the sample store per module, a fresh
browser context (its own cookies: its own session) per test, and a screenshot with the page's HTML saved for
every failing test, in the directory the failure output names ($RPOGUARD_ARTIFACTS, default
test-artifacts/browser/ in the repository).

Without chromium or Playwright these tests skip with the reason on a developer's machine; under CI=true they
fail: CI must run them (scripts/test installs both)."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.browser import (
    DEFAULT_TIMEOUT_MS,
    REPO,
    BrowserUnavailable,
    WebServer,
    chromium_executable,
    launch_args,
    sample_console,
)


def artifacts_dir() -> Path:
    return Path(os.environ.get("RPOGUARD_ARTIFACTS") or REPO / "test-artifacts" / "browser")


@pytest.fixture(scope="session")
def chromium() -> str:
    try:
        return chromium_executable()
    except BrowserUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser tests must run in CI: {exc}", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=launch_args())
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def console(cli_script: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """`rpoguard web` over the sample store (tests/support/browser.py), for every test of the module."""
    folder = tmp_path_factory.mktemp("console")
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(sample_console(cli_script, folder))
        except RuntimeError as exc:
            failed = str(exc)  # reported below, outside this handler: the message alone says what went wrong
        else:
            yield server
            return
    pytest.fail(failed, pytrace=False)


class Contexts:
    """Makes browser contexts (each with its own cookie jar: its own session) on the console and remembers
    them: the failure hook photographs their pages, the fixture closes them."""

    def __init__(self, browser: Any, base_url: str) -> None:
        self.browser = browser
        self.base_url = base_url
        self.made: list[Any] = []

    def __call__(self, **options: Any) -> Any:
        context = self.browser.new_context(base_url=self.base_url, locale="it-IT", timezone_id="Europe/Rome",
                                           **options)
        context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        self.made.append(context)
        return context

    def pages(self) -> list[Any]:
        return [page for context in self.made for page in context.pages if not page.is_closed()]


@pytest.fixture
def new_context(browser: Any, console: WebServer) -> Iterator[Contexts]:
    contexts = Contexts(browser, console.base_url)
    yield contexts
    for context in contexts.made:
        context.close()


@pytest.fixture
def page(new_context: Contexts) -> Any:
    return new_context().new_page()


def save_page(page: Any, stem: str) -> str:
    """A full-page screenshot and the HTML of `page`; says where they are, or why they could not be saved."""
    folder = artifacts_dir()
    folder.mkdir(parents=True, exist_ok=True)
    png, html = folder / f"{stem}.png", folder / f"{stem}.html"
    saved = [f"page at {page.url}"]
    try:
        page.screenshot(path=str(png), full_page=True)
        saved.append(f"  screenshot: {png}")
        html.write_text(page.content(), encoding="utf-8")
        saved.append(f"  html: {html}")
    except Exception as exc:  # the page may be what broke; the failure itself must still be reported
        saved.append(f"  could not save the page ({type(exc).__name__}: {exc})")
    return "\n".join(saved)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """A failing test leaves what its pages showed: a full-page screenshot and the HTML of each, named in the
    failure output."""
    report = yield
    if not (report.failed and report.when in ("setup", "call")):
        return report
    funcargs = getattr(item, "funcargs", {})
    pages = funcargs["new_context"].pages() if isinstance(funcargs.get("new_context"), Contexts) else []
    if funcargs.get("page") is not None and funcargs["page"] not in pages and not funcargs["page"].is_closed():
        pages.insert(0, funcargs["page"])
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)
    saved = [save_page(page, stem if n == 0 else f"{stem}.{n}") for n, page in enumerate(pages)]
    if saved:
        report.sections.append(("browser artifacts", "\n".join(saved)))
    server = funcargs.get("console")
    if isinstance(server, WebServer):
        report.sections.append(("rpoguard web log (last 40 lines)", "\n".join(server.log_text().splitlines()[-40:])))
    return report
