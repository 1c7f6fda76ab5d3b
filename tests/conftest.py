"""Shared fixtures: a temporary database, an opened SqliteStore, and the real `rpoguard` console script.

There is no pytest-asyncio here. The `run` fixture owns one event loop per test and runs coroutines on it
(support/aio.py), so an opened store (whose aiosqlite connection lives on that loop) serves every step of a
test:

    def test_something(store, run):
        run(store.add_principal("acme", "ACME", []))

`run_cli` runs the installed console script (the one next to sys.executable, i.e. .venv/bin/rpoguard) as
a subprocess, with RPOGUARD_DB pointing at the test's own database and the working directory in the
test's temporary folder, so nothing ever lands in the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple, Protocol

import pytest

from rpoguard.audit import AuditEntry
from rpoguard.db.store import Store
from support.aio import EventLoop, Runner
from support.fakeclock import ClockedCliRunner, clock_env

# The PostgreSQL server and per-test databases (tests/support/pgfixtures.py).
pytest_plugins = ["support.pgfixtures"]

BACKENDS = ("sqlite", "postgres")

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
CLI_TIMEOUT = 60


class CliResult(NamedTuple):
    """What one run of the console script gave back; unpacks as (code, out, err)."""

    code: int
    out: str
    err: str


class CliRunner(Protocol):
    def __call__(
        self, *args: str | os.PathLike[str], env: Mapping[str, str] | None = None, stdin: str | None = None
    ) -> CliResult: ...


def console_script() -> str:
    """The `rpoguard` script installed beside the interpreter running the tests (the venv's bin dir)."""
    beside = Path(sys.executable).parent / "rpoguard"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("rpoguard", path=str(Path(sys.executable).parent)) or shutil.which("rpoguard")
    if found is None:
        pytest.fail("the rpoguard console script is not installed (pip install -e . in the venv)", pytrace=False)
    return found


@pytest.fixture
def run() -> Iterator[Runner]:
    """Run a coroutine to completion on this test's own event loop (support/aio.py)."""
    with EventLoop() as loop:
        yield loop


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A database path that does not exist yet (the store creates it on first open)."""
    return tmp_path / "rpoguard.db"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: reads the SQLite files directly; runs on SQLite alone")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that uses a store runs on both backends, unless it is about SQLite's files."""
    if "backend" in metafunc.fixturenames:
        only_sqlite = metafunc.definition.get_closest_marker("sqlite_only") is not None
        metafunc.parametrize("backend", ["sqlite"] if only_sqlite else list(BACKENDS), indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(backend: str, db_path: Path, request: pytest.FixtureRequest) -> str:
    """What --db would say for this test's database: the SQLite path, or a fresh PostgreSQL database."""
    if backend == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(db_path)


@pytest.fixture
def store(store_url: str, run: Runner) -> Iterator[Store]:
    """An opened, migrated store on this test's database (SQLite and PostgreSQL); closed after the test."""
    from rpoguard.db import open_store

    opened = open_store(store_url)
    run(opened.open())
    try:
        yield opened
    finally:
        run(opened.close())


@pytest.fixture
def cli_env(db_path: Path) -> dict[str, str]:
    """The environment the console script runs in: this test's database, no configuration file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPOGUARD_")}
    env["RPOGUARD_DB"] = str(db_path)
    env["PYTHONIOENCODING"] = "utf-8"
    env.pop("COVERAGE_PROCESS_START", None)
    return env


@pytest.fixture(scope="session")
def cli_script() -> str:
    """Path of the installed `rpoguard` console script."""
    return console_script()


@pytest.fixture
def run_cli(tmp_path: Path, cli_env: dict[str, str], cli_script: str) -> CliRunner:
    """Run the real `rpoguard` console script; returns CliResult(code, out, err)."""
    script = cli_script

    def runner(
        *args: str | os.PathLike[str], env: Mapping[str, str] | None = None, stdin: str | None = None
    ) -> CliResult:
        full_env = dict(cli_env)
        if env:
            full_env.update(env)
        done = subprocess.run(
            [script, *map(str, args)],
            capture_output=True,
            text=True,
            encoding="utf-8",
            env=full_env,
            cwd=tmp_path,
            input=stdin,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        return CliResult(done.returncode, done.stdout, done.stderr)

    return runner


@pytest.fixture
def run_cli_at(run_cli: CliRunner) -> ClockedCliRunner:
    """Run the real `rpoguard` console script with its wall clock starting at MOMENT (tests/support/fakeclock.py):
    how a test records a decision at a fixed moment, as the gate would then."""
    clock_env("2026-01-01")  # skip (or fail in CI) at once without libfaketime

    def runner(
        moment: str, *args: str | os.PathLike[str], env: Mapping[str, str] | None = None, stdin: str | None = None
    ) -> CliResult:
        return run_cli(*args, env={**clock_env(moment), **(env or {})}, stdin=stdin)

    return runner


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[..., Path]:
    """Write text (or bytes) to a file in the test's folder and return its path."""

    def writer(name: str, content: str | bytes, encoding: str = "utf-8") -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding=encoding, newline="")
        return path

    return writer


@pytest.fixture
def make_entry() -> Callable[..., AuditEntry]:
    """Build an AuditEntry for a decision; every field has a plausible default and can be overridden."""
    counter = iter(range(1, 1_000_000))

    def factory(**fields: object) -> AuditEntry:
        n = next(counter)
        values: dict[str, object] = {
            "decision_id": f"00000000-0000-4000-8000-{n:012d}",
            "ts_us": 1_795_514_400_000_000 + n,  # 2026-11-24T10:00:00Z (11:00 Europe/Rome), a Tuesday
            "number": "+390645678901",
            "raw_number": "06 4567 8901",
            "campaign_id": "spring26",
            "principal_id": "acme",
            "caller_id": None,
            "decision": "allow",
            "reasons": "",
            "basis": "listed",
            "evidence": "{}",
            "source": "cli",
            "uniqueid": None,
            "channel": None,
        }
        values.update(fields)
        return AuditEntry(**values)  # type: ignore[arg-type]

    return factory
