"""PostgreSQL for the tests: one throwaway cluster per test session, one fresh database per test.

Where the server comes from, in order:
- RPOGUARD_TEST_PG_URL: an existing server (a URL whose user may CREATE DATABASE); nothing is started.
- else scripts/pg-throwaway starts a cluster on loopback from the installed PostgreSQL binaries
  (/usr/lib/postgresql/*/bin, Debian's `postgresql` package) and removes it at the end.
Without either, the PostgreSQL tests skip with the reason; under CI=true they fail instead: CI must run
them (scripts/test installs the package).

Each test gets its own database, copied from a template migrated once per session (CREATE DATABASE ...
TEMPLATE is a file copy: tens of milliseconds), and dropped afterwards.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from support.aio import run_once

REPO = Path(__file__).resolve().parents[2]
ENV_URL = "RPOGUARD_TEST_PG_URL"
# Per test session: runs that share one server (RPOGUARD_TEST_PG_URL) must not drop each other's template.
TEMPLATE = f"rpoguard_test_template_{os.getpid()}"

_counter = itertools.count(1)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def unavailable(reason: str) -> None:
    """Skip on a developer's machine without PostgreSQL; fail in CI, where these tests must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is needed in CI: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests need a server: {reason}")


async def _admin(url: str, *statements: str) -> None:
    import asyncpg

    con = await asyncpg.connect(url, timeout=10)
    try:
        for statement in statements:
            await con.execute(statement)
    finally:
        await con.close()


async def _migrate(url: str) -> None:
    from rpoguard.db.postgres import PostgresStore

    store = PostgresStore(url, pool_min=1, pool_max=1)
    await store.open()
    await store.close()


@dataclass
class PgServer:
    """The session's server: `admin_url` reaches its maintenance database."""

    admin_url: str

    def create(self, *, migrated: bool = True) -> str:
        """A new database, migrated (from the template) or quite empty; returns its URL."""
        name = f"rpoguard_t{os.getpid()}_{next(_counter)}"
        template = TEMPLATE if migrated else "template0"
        run_once(_admin(self.admin_url, f'CREATE DATABASE "{name}" TEMPLATE {template}'))
        return with_database(self.admin_url, name)

    def drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        run_once(_admin(self.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    url = os.environ.get(ENV_URL)
    folder: str | None = None
    if not url:
        script = REPO / "scripts" / "pg-throwaway"
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")) if not os.environ.get("PG_BINDIR") \
            else [Path(os.environ["PG_BINDIR"]) / "pg_ctl"]
        if not found or not found[-1].exists():
            unavailable("no PostgreSQL server binaries (apt-get install postgresql), and "
                        f"{ENV_URL} is not set")
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            unavailable("running as root needs runuser to start the server as 'postgres'")
        folder = tempfile.mkdtemp(prefix="rpoguard-pg-")
        os.rmdir(folder)
        done = subprocess.run([str(script), "start", folder, "--no-fsync"], capture_output=True, text=True,
                              timeout=120, check=False)
        if done.returncode != 0:
            subprocess.run([str(script), "stop", folder], check=False, timeout=60)
            unavailable(f"scripts/pg-throwaway could not start a cluster: {done.stderr.strip()}")
        url = done.stdout.strip()
    try:
        template = with_database(url, TEMPLATE)
        run_once(_admin(url, f"DROP DATABASE IF EXISTS {TEMPLATE}", f"CREATE DATABASE {TEMPLATE}"))
        run_once(_migrate(template))
        yield PgServer(url)
    finally:
        if folder is None:
            with contextlib.suppress(Exception):
                run_once(_admin(url, f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)"))
        else:
            subprocess.run([str(REPO / "scripts" / "pg-throwaway"), "stop", folder], check=False, timeout=60)


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """The URL of a fresh, migrated database for this test alone."""
    url = pg_server.create()
    try:
        yield url
    finally:
        pg_server.drop(url)
