"""Fixtures of the browser tests: one chromium and one `rpoguard web` over the sample store per module, a fresh
browser context (its own cookies: its own session) per test, and a screenshot with the page's HTML saved for
every failing test, in the directory the failure output names ($RPOGUARD_ARTIFACTS, default
test-artifacts/browser/ in the repository).

Without chromium or Playwright these tests skip with the reason on a developer's machine; under CI=true they
fail: CI must run them (scripts/test installs both)."""

from __future__ import annotations

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
    try:
        with sample_console(cli_script, folder) as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def new_context(browser: Any, console: WebServer) -> Iterator[Any]:
    """Make browser contexts (each with its own cookie jar) on the console; all closed after the test."""
    made: list[Any] = []

    def make(**options: Any) -> Any:
        context = browser.new_context(base_url=console.base_url, locale="it-IT", timezone_id="Europe/Rome",
                                      **options)
        context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()


@pytest.fixture
def page(new_context: Any) -> Any:
    return new_context().new_page()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """A failing test leaves what its page showed: a full-page screenshot and the HTML, named in the report."""
    report = yield
    page = getattr(item, "funcargs", {}).get("page")
    if report.failed and report.when in ("setup", "call") and page is not None and not page.is_closed():
        folder = artifacts_dir()
        folder.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)
        png, html = folder / f"{stem}.png", folder / f"{stem}.html"
        saved = []
        try:
            page.screenshot(path=str(png), full_page=True)
            saved.append(f"screenshot: {png}")
            html.write_text(page.content(), encoding="utf-8")
            saved.append(f"html: {html}")
        except Exception as exc:  # the page may be what broke; the failure itself must still be reported
            saved.append(f"could not save the page ({type(exc).__name__}: {exc})")
        report.sections.append(("browser artifacts", f"page at {page.url}\n" + "\n".join(saved)))
    return report
