"""Several PBXs, one truth: two real `rpoguard serve` processes on one PostgreSQL database.

What SQLite never shows: decisions for the same number taken at the same moment by two processes must
respect the attempt cap exactly; a refusal recorded through one node blocks the next call through the
other; an import runs while both nodes serve; the decision log written by both stays one chain that
`audit verify` proves. The servers' wall clock is faked with libfaketime (a Tuesday 11:00 in Rome, inside
the calling window), so every assertion holds at any hour.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from rpoguard.constants import (
    ATTEMPT_LIMIT,
    CHANNEL_ALLOW,
    CHANNEL_BLOCK,
    ENGINE_ERROR,
    OPTOUT,
    VAR_DECISION,
    VAR_OPTOUT,
    VAR_REASON,
    VAR_REASONS,
)
from rpoguard.timeutil import ROME
from support.agi_fakes import make_env, play
from support.aio import run_once
from support.serve_process import start_serve, stop, stop_all

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CliRunner = Callable[..., Any]

LISTED = "06 4567 8901"  # listed in examples/directory.txt, answered not registered in rpo-answers.csv
CALLER = "06 9480 1234"  # agi_callerid of the fake sessions, declared by acme
CLOCK = datetime(2026, 11, 24, 11, 0, tzinfo=ROME)  # a Tuesday, four days after the RPO check
CAP = 3
SESSIONS = 40


def libfaketime() -> Path:
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1")) + sorted(
        Path("/usr/lib/faketime").glob("libfaketime.so.1"))
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail("libfaketime is needed in CI (apt-get install faketime)", pytrace=False)
        pytest.skip("libfaketime not installed (apt-get install faketime): the servers' clock cannot be set")
    return found[0]


def node_env(url: str, preload: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPOGUARD_")}
    env.update({
        "RPOGUARD_DB": url,
        "LD_PRELOAD": str(preload),
        "FAKETIME": f"{round(CLOCK.timestamp() - time.time()):+d}",
        # Only the wall clock: asyncio's timers and the session deadline run on the real monotonic clock.
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    })
    return env


@pytest.fixture
def pg_cli(run_cli: CliRunner, pg_url: str) -> CliRunner:
    """The console script on this test's PostgreSQL database."""

    def runner(*args: Any, **kwargs: Any) -> Any:
        env = dict(kwargs.pop("env", None) or {})
        env["RPOGUARD_DB"] = pg_url
        return run_cli(*args, env=env, **kwargs)

    return runner


@pytest.fixture
def prepared(pg_cli: CliRunner, pg_url: str) -> str:
    for args in (
        ("principal", "add", "acme", "--name", "ACME Energia", "--caller-id", CALLER),
        ("campaign", "add", "capped", "--principal", "acme", "--max-attempts", str(CAP), "--per-days", "7"),
        ("campaign", "add", "open", "--principal", "acme"),
        ("registry", "import", EXAMPLES / "rpo-answers.csv", "--checked-at", "2026-11-20"),
        ("directory", "import", EXAMPLES / "directory.txt", "--listed-at", "2026-11-20"),
    ):
        result = pg_cli(*args)
        assert result.code == 0, result.err
    return pg_url


@pytest.fixture
def two_nodes(prepared: str, tmp_path: Path, cli_script: str) -> Iterator[tuple[int, int]]:
    preload = libfaketime()
    env = node_env(prepared, preload)
    procs = []
    try:
        for name in ("a", "b"):
            folder = tmp_path / f"node-{name}"
            folder.mkdir()
            proc, port, _ = start_serve(cli_script, env, folder)
            procs.append((proc, port))
        yield procs[0][1], procs[1][1]
    finally:
        stop_all([proc for proc, _ in procs])


def check_env(campaign: str, number: str, uniqueid: str) -> bytes:
    return make_env(f"check?campaign={campaign}", (number,), overrides={"agi_uniqueid": uniqueid})


def audit_rows(pg_cli: CliRunner) -> list[dict[str, Any]]:
    result = pg_cli("audit", "export", "--format", "jsonl")
    assert result.code == 0, result.err
    return [json.loads(line) for line in result.out.splitlines()]


def assert_chain_verifies(pg_cli: CliRunner, rows: int) -> None:
    result = pg_cli("audit", "verify")
    assert result.code == 0, result.out + result.err
    assert f"audit log intact: {rows} decision(s)" in result.out


def test_simultaneous_checks_on_two_nodes_respect_the_attempt_cap_exactly(
    two_nodes: tuple[int, int], pg_cli: CliRunner
) -> None:
    port_a, port_b = two_nodes

    async def all_at_once() -> list[Any]:
        return list(await asyncio.gather(*(
            play(port_a if i % 2 == 0 else port_b, check_env("capped", LISTED, f"{'ab'[i % 2]}.{i}"), patience=20)
            for i in range(SESSIONS))))

    transcripts = run_once(all_at_once())
    decisions = [t.variables[VAR_DECISION] for t in transcripts]
    assert all(t.agistatus == "SUCCESS" and not t.failure for t in transcripts)
    assert decisions.count(CHANNEL_ALLOW) == CAP, decisions
    blocked = [t.variables[VAR_REASON] for t in transcripts if t.variables[VAR_DECISION] == CHANNEL_BLOCK]
    assert blocked == [ATTEMPT_LIMIT] * (SESSIONS - CAP)

    rows = audit_rows(pg_cli)
    assert len(rows) == SESSIONS
    assert sum(1 for r in rows if r["decision"] == "allow") == CAP
    # Both nodes wrote into the one chain.
    assert {r["uniqueid"][0] for r in rows} == {"a", "b"}
    assert [r["seq"] for r in rows] == list(range(1, SESSIONS + 1))
    assert_chain_verifies(pg_cli, SESSIONS)


def test_refusal_through_one_node_blocks_the_next_call_on_the_other(
    two_nodes: tuple[int, int], pg_cli: CliRunner
) -> None:
    port_a, port_b = two_nodes
    before = run_once(play(port_b, check_env("open", LISTED, "b.1")))
    assert before.variables[VAR_DECISION] == CHANNEL_ALLOW, before.variables

    said_no = run_once(play(port_a, make_env("optout?campaign=open", (LISTED,))))
    assert said_no.agistatus == "SUCCESS" and said_no.variables[VAR_OPTOUT] == "OK"

    after = run_once(play(port_b, check_env("open", LISTED, "b.2")))
    assert after.variables[VAR_DECISION] == CHANNEL_BLOCK
    assert after.variables[VAR_REASON] == OPTOUT
    assert_chain_verifies(pg_cli, 2)


def test_an_import_runs_while_both_nodes_serve(
    two_nodes: tuple[int, int], pg_cli: CliRunner, write_file: Callable[..., Path], cli_env: dict[str, str],
    cli_script: str, prepared: str, tmp_path: Path
) -> None:
    port_a, port_b = two_nodes
    # 200,000 listings (Rome landlines 06 2000 0000...), the last one a number no earlier file listed.
    new_number = "+390620199999"
    listing = write_file("directory-big.txt", "".join(f"+3906{20_000_000 + i}\n" for i in range(200_000)))
    answers = write_file("answers-big.csv", "number,status\n" + "".join(
        f"+3906{20_000_000 + i},not_registered\n" for i in range(200_000)))
    env = {**cli_env, "RPOGUARD_DB": prepared}
    importing = subprocess.Popen(
        [cli_script, "registry", "import", str(answers), "--checked-at", "2026-11-21"], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    async def sessions_while(proc: subprocess.Popen[bytes]) -> list[Any]:
        seen = []
        i = 0
        # At least a few rounds, and on until the import is done.
        while proc.poll() is None or i < 10:
            pair = await asyncio.gather(play(port_a, check_env("open", LISTED, f"a.{i}"), patience=20),
                                        play(port_b, check_env("open", LISTED, f"b.{i}"), patience=20))
            seen.extend(pair)
            i += 1
        return seen

    try:
        during = run_once(sessions_while(importing))
        _, err = importing.communicate(timeout=120)
    finally:
        stop(importing)  # waited for even when a session or the wait failed: no process outlives the test
    assert importing.returncode == 0, err
    assert all(t.variables[VAR_DECISION] == CHANNEL_ALLOW for t in during), [
        t.variables.get(VAR_REASONS) for t in during if t.variables[VAR_DECISION] != CHANNEL_ALLOW]

    # The new answers and listings serve on both nodes at once.
    result = pg_cli("directory", "import", listing, "--append", "--listed-at", "2026-11-21")
    assert result.code == 0, result.err
    for port in (port_a, port_b):
        now = run_once(play(port, check_env("open", new_number, "n")))
        assert now.variables[VAR_DECISION] == CHANNEL_ALLOW, now.variables
    assert_chain_verifies(pg_cli, len(during) + 2)


def test_a_node_whose_database_is_missing_blocks_then_serves_when_it_appears(
    pg_server: Any, tmp_path: Path, cli_script: str, run_cli: CliRunner
) -> None:
    from support.pgfixtures import with_database

    preload = libfaketime()
    name = f"rpoguard_late_{os.getpid()}"
    url = with_database(pg_server.admin_url, name)
    proc, port, log = start_serve(cli_script, node_env(url, preload), tmp_path)
    try:
        early = run_once(play(port, check_env("open", LISTED, "x.1")))
        assert early.variables[VAR_DECISION] == CHANNEL_BLOCK
        assert early.variables[VAR_REASON] == ENGINE_ERROR

        run_once(_create(pg_server.admin_url, name))
        for args in (("principal", "add", "acme", "--name", "ACME", "--caller-id", CALLER),
                     ("campaign", "add", "open", "--principal", "acme"),
                     ("registry", "import", EXAMPLES / "rpo-answers.csv", "--checked-at", "2026-11-20"),
                     ("directory", "import", EXAMPLES / "directory.txt", "--listed-at", "2026-11-20")):
            result = run_cli(*args, env={"RPOGUARD_DB": url})
            assert result.code == 0, result.err
        # The supervisor retries once a second: wait (bounded) for the node to find its database.
        deadline = time.monotonic() + 30
        while True:
            later = run_once(play(port, check_env("open", LISTED, "x.2")))
            if later.variables[VAR_DECISION] == CHANNEL_ALLOW or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert later.variables[VAR_DECISION] == CHANNEL_ALLOW, later.variables
    finally:
        stop(proc)
        run_once(_drop(pg_server.admin_url, name))
    text = log.read_text(errors="replace")
    # Logged once when it failed, once when it came back; the password never appears.
    assert text.count("database unavailable, every call is blocked") == 1, text
    assert "database available again" in text
    assert url.split(":")[2].split("@")[0] not in text


async def _create(admin_url: str, name: str) -> None:
    import asyncpg

    con = await asyncpg.connect(admin_url)
    try:
        await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()


async def _drop(admin_url: str, name: str) -> None:
    import asyncpg

    con = await asyncpg.connect(admin_url)
    try:
        await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await con.close()


def test_a_node_blocks_while_postgresql_is_down_and_serves_again_when_it_returns(
    pg_server: Any, tmp_path: Path, cli_script: str, run_cli: CliRunner
) -> None:
    """A cluster of this test's own (the session's is shared), stopped and started under a serving node."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "pg-throwaway"
    # Not under tmp_path: as root the server runs as 'postgres', which cannot enter pytest's 0700 folders.
    folder = Path(tempfile.mkdtemp(prefix="rpoguard-pg-down-"))
    folder.rmdir()
    started = subprocess.run([str(script), "start", str(folder), "--no-fsync"], capture_output=True, text=True,
                             check=False, timeout=120)
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip()
    try:
        for args in (("principal", "add", "acme", "--name", "ACME", "--caller-id", CALLER),
                     ("campaign", "add", "open", "--principal", "acme"),
                     ("registry", "import", EXAMPLES / "rpo-answers.csv", "--checked-at", "2026-11-20"),
                     ("directory", "import", EXAMPLES / "directory.txt", "--listed-at", "2026-11-20")):
            result = run_cli(*args, env={"RPOGUARD_DB": url})
            assert result.code == 0, result.err
        proc, port, log = start_serve(cli_script, node_env(url, libfaketime()), tmp_path)
        try:
            first = run_once(play(port, check_env("open", LISTED, "r.1")))
            assert first.variables[VAR_DECISION] == CHANNEL_ALLOW, first.variables

            subprocess.run([str(script), "halt", str(folder)], check=True, timeout=60)
            down = [run_once(play(port, check_env("open", LISTED, f"r.down.{i}"))) for i in range(3)]
            # Failing closed: answered at once, blocked, engine_error; nothing waits for the database.
            assert all(t.agistatus == "SUCCESS" for t in down)
            assert [t.variables[VAR_DECISION] for t in down] == [CHANNEL_BLOCK] * 3
            assert all(ENGINE_ERROR in t.variables[VAR_REASONS].split(",") for t in down)

            subprocess.run([str(script), "resume", str(folder)], check=True, timeout=60)
            deadline = time.monotonic() + 30
            while True:
                back = run_once(play(port, check_env("open", LISTED, "r.back")))
                if back.variables[VAR_DECISION] == CHANNEL_ALLOW or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert back.variables[VAR_DECISION] == CHANNEL_ALLOW, back.variables
        finally:
            stop(proc)
        result = run_cli("audit", "verify", env={"RPOGUARD_DB": url})
        assert result.code == 0, result.out
        text = log.read_text(errors="replace")
        assert url.split(":")[2].split("@", maxsplit=1)[0] not in text  # the password
    finally:
        subprocess.run([str(script), "stop", str(folder)], check=False, timeout=60)
