"""The console in a real browser: Debian's chromium driven by Playwright, against a real `rpoguard web` child
process on a loopback port it picks itself, over a sample SQLite database built with the product's own CLI.

tests/browser/ and scripts/console-screenshot both use this module. Nothing here skips or fails a test, so
the screenshot script can report a plain error; the tests turn `BrowserUnavailable` into a skip (a failure under
CI=true) and a RuntimeError (a command or the server that failed, with its output) into a failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from support.serve_process import catches, stop

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
START_TIMEOUT = 30.0
CLI_TIMEOUT = 60.0
# Playwright's waits: long enough for a loaded 2-core machine; each ends as soon as its condition holds.
DEFAULT_TIMEOUT_MS = 20_000
ROME = ZoneInfo("Europe/Rome")
# `rpoguard web`'s start-up line, written after the bind: "rpoguard X: console on http://HOST:PORT/ (database ...".
LISTENING = re.compile(rb"console on http://[^\s/]+:(\d+)/ \(")

# One user per role; the passwords are long enough for the console's minimum.
USERS: Mapping[str, str] = {
    "viewer": "vera-viewer-password-1",
    "operator": "otto-operator-password-1",
    "admin": "ada-admin-password-1",
}
# The numbers the sample database decides (the quick start's numbers), and how many recorded decisions each gets.
CHECKS: Mapping[str, int] = {
    "06 4567 8901": 2,
    "02 1234 5678": 1,
    "333 123 4567": 1,
    "347 765 4321": 1,
}
SEARCHED_NATIONAL = "06 4567 8901"
SEARCHED_E164 = "+390645678901"


class BrowserUnavailable(RuntimeError):
    """Chromium or Playwright is not installed: the browser tests cannot run here."""


def chromium_executable() -> str:
    """Debian's chromium (Playwright's own browser download cannot be used: it is fetched from outside PyPI)."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
    if found is None:
        raise BrowserUnavailable("Debian's chromium is not installed (scripts/apt-install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        raise BrowserUnavailable(f"Playwright for Python is not installed (pip install -e '.[test]'): {exc}") from exc
    return found


def launch_args() -> list[str]:
    """Chromium's extra arguments. Chromium refuses to start as root with its sandbox on (CI runs as root);
    an unprivileged user keeps the sandbox."""
    return ["--no-sandbox"] if os.geteuid() == 0 else []


def clean_env(db: Path) -> dict[str, str]:
    """The host's environment with only this database: no RPOGUARD_* setting from the host leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPOGUARD_")}
    env["RPOGUARD_DB"] = str(db)
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def cli(script: str, env: Mapping[str, str], folder: Path, *args: str | os.PathLike[str],
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real console script; returns the finished process (code, stdout, stderr), never raises on exit."""
    return subprocess.run([script, *map(str, args)], capture_output=True, text=True, encoding="utf-8",
                          env=dict(env), cwd=folder, input=stdin, timeout=CLI_TIMEOUT, check=False)


def prepare_console_db(script: str, env: Mapping[str, str], folder: Path,
                       earlier: Sequence[tuple[Mapping[str, str], str]] = (), max_attempts: int = 3) -> None:
    """The sample store: the quick start's principal, campaign, RPO answers (checked two days ago), directory
    and consents; recorded decisions for CHECKS (made now, as the gate makes them); one user per role.

    `earlier`: decisions recorded before those, each (extra environment that sets the command's clock, number),
    in the order given (the screenshot's chart shows them); `max_attempts`: the campaign's cap in 7 days.
    Raises RuntimeError naming the command when one fails."""
    checked = (datetime.now(ROME).date() - timedelta(days=2)).isoformat()
    Step = tuple[tuple[str | os.PathLike[str], ...], str | None, tuple[int, ...], Mapping[str, str]]
    steps: list[Step] = [
        (("principal", "add", "acme", "--name", "ACME Energia S.p.A.", "--caller-id", "06 9480 1234"),
         None, (0,), {}),
        (("campaign", "add", "autunno26", "--principal", "acme", "--max-attempts", str(max_attempts),
          "--per-days", "7"),
         None, (0,), {}),
        (("registry", "import", EXAMPLES / "rpo-answers.csv", "--checked-at", checked), None, (0,), {}),
        (("directory", "import", EXAMPLES / "directory.txt", "--listed-at", checked), None, (0,), {}),
        (("consent", "import", EXAMPLES / "consents.csv"), None, (0,), {}),
    ]
    # 0 ALLOW, 1 BLOCK: both are recorded decisions (the hour of the run decides which).
    steps += [(("check", number, "--campaign", "autunno26"), None, (0, 1), clock) for clock, number in earlier]
    for number, times in CHECKS.items():
        steps += [(("check", number, "--campaign", "autunno26"), None, (0, 1), {})] * times
    for role, password in USERS.items():
        steps.append((("user", "add", role, "--role", role, "--password-stdin"), password + "\n", (0,), {}))
    for args, stdin, ok, extra in steps:
        done = cli(script, {**env, **extra}, folder, *args, stdin=stdin)
        if done.returncode not in ok:
            shown = " ".join(map(str, args))
            raise RuntimeError(f"`rpoguard {shown}` exited {done.returncode}:\n{done.stdout}{done.stderr}")


@dataclasses.dataclass(frozen=True)
class WebServer:
    proc: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_web(script: str, env: Mapping[str, str], folder: Path, args: Sequence[str] = ()) -> WebServer:
    """Start `rpoguard web` on a free loopback port and wait until it is ready.

    `--port 0`: the kernel picks a free port at the bind, so no other process can take it in between (a
    port picked here and bound later could be). Ready means: the log names the port (written after the
    bind) and the process catches SIGTERM (a SIGTERM any earlier would kill it instead of stopping it)."""
    log = folder / f"web-{secrets.token_hex(4)}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([script, "web", "--host", "127.0.0.1", "--port", "0", *args], env=dict(env),
                                stdout=out, stderr=subprocess.STDOUT, cwd=folder)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            found = LISTENING.search(log.read_bytes())
            if found and catches(proc.pid, signal.SIGTERM):
                return WebServer(proc, f"http://127.0.0.1:{int(found.group(1))}", log)
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rpoguard web did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.02)
    except BaseException:
        stop(proc)
        raise


@contextlib.contextmanager
def sample_console(script: str, folder: Path, earlier: Sequence[tuple[Mapping[str, str], str]] = (),
                   max_attempts: int = 3) -> Iterator[WebServer]:
    """The sample store in `folder` and `rpoguard web` over it; the server is stopped on the way out."""
    db = folder / "console.db"
    env = clean_env(db)
    prepare_console_db(script, env, folder, earlier, max_attempts)
    server = start_web(script, env, folder)
    try:
        yield server
    finally:
        stop(server.proc)


def log_in(page: Any, base_url: str, username: str, password: str | None = None) -> None:
    """Log in through the login form as a person would; lands on the overview."""
    page.goto(f"{base_url}/login")
    page.fill("form#login input[name=username]", username)
    page.fill("form#login input[name=password]", USERS[username] if password is None else password)
    page.click("form#login button[type=submit]")


def wait_for_chart(page: Any) -> None:
    """Until Chart.js has drawn the overview's decision chart."""
    page.wait_for_function("() => window.Chart !== undefined && Chart.getChart('decisions-chart') !== undefined")
