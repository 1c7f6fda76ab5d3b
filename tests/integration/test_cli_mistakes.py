"""The mistakes a new user makes, through the real console script: a mistyped database path, a busy or
impossible port, a misspelt configuration key, a reader that goes away, Ctrl-C. Each ends in one line
naming the problem and a defined exit code, never a traceback, and never in a database nobody asked for.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from rpoguard.audit import AuditEntry
from rpoguard.db.sqlite import SqliteStore, audit_path
from support.aio import run_once
from support.pgfixtures import PgServer

Cli = Callable[..., Any]

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

# Commands that only read: none may create the database it is pointed at (architecture.md §4).
READ_ONLY = [
    ("audit", "export"),
    ("audit", "verify"),
    ("evidence", "06 4567 8901"),
    ("registry", "due", "-o", "OUT"),
    ("check", "06 4567 8901", "--campaign", "spring26"),
    ("scrub", "LIST", "--campaign", "spring26"),
    ("findings", "list"),
    ("reconcile", "--cdr", "CDR", "--config", "CONF"),
]


def one_line_error(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("rpoguard: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], err


@pytest.mark.parametrize("command", READ_ONLY, ids=lambda c: " ".join(c[:2]))
def test_a_command_that_only_reads_never_creates_the_database(run_cli: Cli, tmp_path: Path,
                                                              command: tuple[str, ...]) -> None:
    missing = tmp_path / "mistyped.db"
    numbers = tmp_path / "list.txt"
    numbers.write_text("06 4567 8901\n", encoding="utf-8")
    output = tmp_path / "out.txt"
    cdr = tmp_path / "Master.csv"
    cdr.write_text('"","0612345678","3331234567","out","","Local/x;2","PJSIP/carrier-00000001","Dial",'
                   '"PJSIP/3331234567@carrier,10","2026-11-24 10:00:00","","2026-11-24 10:00:05",5,0,'
                   '"NO ANSWER","DOCUMENTATION","1795514400.1",""\n', encoding="utf-8")
    config = tmp_path / "rpoguard.toml"
    config.write_text('[watch]\ntrunks = ["PJSIP/carrier-*"]\n', encoding="utf-8")
    placeholders = {"LIST": numbers, "OUT": output, "CDR": cdr, "CONF": config}
    args = [str(placeholders[a]) if a in placeholders else a for a in command]
    code, out, err = run_cli("--db", missing, *args)
    assert code == EXIT_ERROR, (out, err)
    one_line_error(err, f"database not found: {missing}")
    assert not missing.exists() and not audit_path(missing).exists() and not output.exists()
    assert out == ""


def test_db_copy_from_a_mistyped_source_copies_nothing(run_cli: Cli, tmp_path: Path) -> None:
    missing, target = tmp_path / "mistyped.db", tmp_path / "copy.db"
    code, out, err = run_cli("db", "copy", "--from", missing, "--to", target)
    assert code == EXIT_ERROR, (out, err)
    one_line_error(err, f"database not found: {missing}")
    assert not missing.exists()
    assert "intact" not in out


def test_a_data_file_without_its_decision_log_is_not_read_as_an_empty_log(run_cli: Cli, tmp_path: Path) -> None:
    db = tmp_path / "rpoguard.db"
    assert run_cli("--db", db, "principal", "add", "acme", "--name", "ACME").code == 0
    audit_path(db).unlink()
    code, _, err = run_cli("--db", db, "audit", "verify")
    assert code == EXIT_ERROR
    one_line_error(err, "decision log", str(audit_path(db)), "missing")
    assert not audit_path(db).exists()


def test_commands_that_store_create_the_database(run_cli: Cli, tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    assert run_cli("--db", db, "db", "migrate").code == 0
    assert db.exists() and audit_path(db).exists()
    other = tmp_path / "other.db"
    assert run_cli("--db", other, "principal", "add", "acme", "--name", "ACME").code == 0
    assert run_cli("--db", other, "audit", "verify").code == 0


@pytest.fixture
def empty_pg_url(pg_server: PgServer) -> Iterator[str]:
    url = pg_server.create(migrated=False)
    try:
        yield url
    finally:
        pg_server.drop(url)


def test_a_postgresql_database_without_rpoguard_tables_is_not_found(run_cli: Cli, empty_pg_url: str) -> None:
    password = urlsplit(empty_pg_url).password
    code, out, err = run_cli("--db", empty_pg_url, "audit", "export")
    assert code == EXIT_ERROR, (out, err)
    one_line_error(err, "database not found", "no rpoguard tables")
    assert password and password not in err

    async def tables() -> int:
        con = await asyncpg.connect(empty_pg_url)
        try:
            return int(await con.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"))
        finally:
            await con.close()

    assert run_once(tables()) == 0
    assert run_cli("--db", empty_pg_url, "db", "migrate").code == 0
    assert run_once(tables()) > 0


def test_serve_on_an_impossible_port_is_a_usage_error(run_cli: Cli) -> None:
    code, _, err = run_cli("serve", "--port", "99999")
    assert code == EXIT_ERROR
    assert "Traceback" not in err and "'99999' is not a port" in err


def test_serve_on_a_busy_port_says_so_in_one_line(run_cli: Cli, tmp_path: Path) -> None:
    assert run_cli("principal", "add", "acme", "--name", "ACME").code == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run_cli("serve", "--port", str(port))
    assert code == EXIT_ERROR
    one_line_error(err, f"cannot listen on 127.0.0.1:{port}", "address already in use")


def test_an_unwritable_output_file_is_one_line(run_cli: Cli, tmp_path: Path) -> None:
    assert run_cli("principal", "add", "acme", "--name", "ACME").code == 0
    code, _, err = run_cli("audit", "export", "-o", tmp_path / "no-such-folder" / "out.csv")
    assert code == EXIT_ERROR
    one_line_error(err, "no-such-folder")


@pytest.mark.parametrize("section,key", [("policy", "rpo_validty_days"), ("database", "pth"),
                                         ("numbers", "trunk_prefx"), ("serve", "prot"), ("audit", "anchor"),
                                         ("ari", "usr")])
def test_every_section_rejects_an_unknown_key_by_name(run_cli: Cli, tmp_path: Path, section: str, key: str) -> None:
    config = tmp_path / "rpoguard.toml"
    config.write_text(f"[{section}]\n{key} = 1\n", encoding="utf-8")
    code, _, err = run_cli("--config", config, "db", "migrate")
    assert code == EXIT_ERROR
    one_line_error(err, str(config), f"[{section}]", repr(key))


def test_the_expiry_explanation_names_the_configured_validity(run_cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "rpoguard.toml"
    config.write_text("[policy]\nrpo_validity_days = 10\n", encoding="utf-8")
    answers = tmp_path / "answers.csv"
    answers.write_text("number,status\n06 4567 8901,not_registered\n", encoding="utf-8")
    for args in (("principal", "add", "acme", "--name", "ACME"), ("campaign", "add", "c", "--principal", "acme"),
                 ("registry", "import", answers, "--checked-at", "2026-11-01")):
        assert run_cli("--config", config, *args).code == 0
    # Eleven days later: past the configured 10, within the legal 15.
    code, out, _ = run_cli("--config", config, "check", "06 4567 8901", "--campaign", "c",
                           "--at", "2026-11-12T11:00")
    assert code == 1
    assert "rpo_expired: the RPO result is older than its validity (10 days)" in out
    assert "15 days" not in out


def _slow_reader_pipe(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run cmd with its output read by `head -1`, as a shell would; return cmd's exit code and stderr."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()  # the reader goes away, as head does after its line
        err = proc.stderr.read().decode()
        return proc.wait(timeout=60), err


@pytest.fixture
def long_outputs(run_cli: Cli, tmp_path: Path, cli_env: dict[str, str], run: Any,
                 make_entry: Callable[..., AuditEntry]) -> None:
    """A list and a decision log each far larger than a pipe's buffer."""
    numbers = tmp_path / "list.txt"
    numbers.write_text("".join(f"06 4567 {i:04d}\n" for i in range(3000)), encoding="utf-8")
    assert run_cli("principal", "add", "acme", "--name", "ACME").code == 0
    assert run_cli("campaign", "add", "c", "--principal", "acme").code == 0

    async def fill() -> None:
        async with SqliteStore(cli_env["RPOGUARD_DB"]) as store:
            await asyncio.gather(*(store.append_decision(make_entry()) for _ in range(3000)))

    run(fill())


@pytest.mark.parametrize("command", [("audit", "export"), ("scrub", "LIST", "--campaign", "c")])
def test_a_reader_that_goes_away_ends_the_command_quietly(long_outputs: None, cli_env: dict[str, str],
                                                          cli_script: str, tmp_path: Path,
                                                          command: tuple[str, ...]) -> None:
    args = [str(tmp_path / "list.txt") if a == "LIST" else a for a in command]
    code, err = _slow_reader_pipe([cli_script, *args], cli_env, tmp_path)
    assert code == EXIT_BROKEN_PIPE, err
    assert err == "", err


def test_ctrl_c_during_an_import_exits_130_and_changes_nothing(run_cli: Cli, cli_env: dict[str, str],
                                                               cli_script: str, tmp_path: Path) -> None:
    assert run_cli("principal", "add", "acme", "--name", "ACME").code == 0
    answers = tmp_path / "answers.csv"
    with answers.open("w", encoding="utf-8") as out:
        out.write("number,status\n")
        for i in range(1_500_000):
            out.write(f"06{i + 10_000_000:08d},not_registered\n")
    env = dict(cli_env, PYTHONUNBUFFERED="1")
    with subprocess.Popen([cli_script, "-v", "registry", "import", str(answers), "--checked-at", "2026-11-20"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path) as proc:
        # Interrupt once the import has begun (its transaction is open), never on a fixed sleep alone.
        db = Path(cli_env["RPOGUARD_DB"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not Path(f"{db}-wal").exists():
            time.sleep(0.01)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    text = err.decode()
    if proc.returncode == 0:
        pytest.fail(f"the import finished before it could be interrupted; make the file bigger: {text}")
    assert proc.returncode == EXIT_INTERRUPTED, text
    assert "Traceback" not in text
    assert "rpoguard: interrupted" in text
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM rpo_results").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM imports").fetchone()[0] == 0


def test_an_internal_error_is_one_line_with_the_way_to_the_details(tmp_path: Path) -> None:
    # A bug (not the operator's mistake) inside a command: simulated by a handler that fails.
    script = (
        "import sys, rpoguard.cli as cli, rpoguard.cli.database as database\n"
        "async def broken(args, store, config):\n"
        "    raise TypeError('a bug')\n"
        "database.cmd_db_migrate.__code__ = broken.__code__\n"
        "sys.exit(cli.main(['--db', sys.argv[1], 'db', 'migrate']))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "x.db")], capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert done.returncode == EXIT_ERROR
    one_line_error(done.stderr, "internal error: TypeError: a bug", "-v")


def test_times_for_people_are_in_rome_with_their_offset_to_the_second(run_cli: Cli, tmp_path: Path) -> None:
    assert run_cli("principal", "add", "acme", "--name", "ACME").code == 0
    assert run_cli("campaign", "add", "c", "--principal", "acme").code == 0
    code, out, _ = run_cli("consent", "add", "333 123 4567", "--principal", "acme", "--given-at",
                           "2026-07-01T09:30:15.250+00:00", "--evidence", "form 1")
    assert code == 0
    assert "from 2026-07-01T11:30:15+02:00" in out  # summer time in Rome, no microseconds
    code, out, _ = run_cli("check", "333 123 4567", "--campaign", "c", "--at", "2026-11-24T10:00:00Z")
    assert "at 2026-11-24T11:00:00+01:00" in out and "simulation as of 2026-11-24T11:00:00+01:00" in out
    code, out, _ = run_cli("evidence", "333 123 4567")
    assert code == 0
    assert "2026-07-01T11:30:15+02:00  consent #1 [acme]" in out
    assert ".250" not in out and "None" not in out
