"""`rpoguard serve` as a process: a fake Asterisk over a real socket, the real database, SIGTERM.

These drive the installed console script, so they prove the wiring the unit and protocol tests cannot:
config -> store opened once -> gate -> routes -> server, decisions recorded with the channel's uniqueid,
an opt-out said on one session blocking the next, and a clean stop that finishes the call in flight.
The decisions here do not depend on the wall clock: every assertion holds at any hour.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rpoguard.config import ConfigError, load_config
from rpoguard.constants import (
    CHANNEL_BLOCK,
    OPTOUT,
    RPO_NOT_CHECKED,
    RPO_REGISTERED,
    VAR_DECISION,
    VAR_ID,
    VAR_NUMBER,
    VAR_OPTOUT,
    VAR_REASON,
    VAR_REASONS,
)
from support.agi_fakes import make_env, play
from support.aio import run_once
from support.serve_process import clean_env, connections_held, listening, running_serve

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CliRunner = Callable[..., Any]

REGISTERED = "02 1234 5678"  # registered in examples/rpo-answers.csv, no consent, no contract
LISTED = "06 4567 8901"


@pytest.fixture
def prepared_db(db_path: Path, run_cli: CliRunner) -> Path:
    for args in (
        ("principal", "add", "acme", "--name", "ACME Energia", "--caller-id", "06 9480 1234"),
        ("campaign", "add", "autunno26", "--principal", "acme"),
        ("registry", "import", EXAMPLES / "rpo-answers.csv", "--checked-at", "2026-11-20"),
        ("directory", "import", EXAMPLES / "directory.txt", "--listed-at", "2026-11-20"),
    ):
        result = run_cli(*args)
        assert result.code == 0, result.err
    return db_path


@pytest.fixture
def server(prepared_db: Path, tmp_path: Path, cli_script: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    with running_serve(cli_script, clean_env(prepared_db), tmp_path) as (proc, port):
        yield proc, port


def _audit(run_cli: CliRunner) -> list[dict[str, object]]:
    result = run_cli("audit", "export", "--format", "jsonl")
    assert result.code == 0, result.err
    return [json.loads(line) for line in result.out.splitlines()]


def test_check_sets_every_variable_and_records_the_uniqueid(server: tuple[subprocess.Popen[bytes], int],
                                                            run_cli: CliRunner) -> None:
    _, port = server
    env = make_env("check?campaign=autunno26", (REGISTERED,), overrides={"agi_uniqueid": "1764000000.42"})
    transcript = run_once(play(port, env))

    assert transcript.agistatus == "SUCCESS" and not transcript.failure
    assert not transcript.dialplan_allows
    variables = transcript.variables
    assert variables[VAR_DECISION] == CHANNEL_BLOCK
    assert variables[VAR_NUMBER] == "+390212345678"
    reasons = variables[VAR_REASONS].split(",")
    assert RPO_REGISTERED in reasons and variables[VAR_REASON] == reasons[0]
    # The decision is set last (the last variable of the last command), so a session cut short leaves the
    # dialplan's default BLOCK in place.
    assert transcript.commands[-1].endswith(f',{VAR_DECISION}={CHANNEL_BLOCK}"'.encode())

    [row] = _audit(run_cli)
    assert row["decision_id"] == variables[VAR_ID]
    assert row["uniqueid"] == "1764000000.42"
    assert row["source"] == "fastagi" and row["campaign_id"] == "autunno26" and row["principal_id"] == "acme"
    assert row["number"] == "+390212345678" and row["raw_number"] == REGISTERED
    assert row["caller_id"] == "0694801234"  # agi_callerid of the recorded session


def test_on_uvloop_the_same_sessions_get_the_same_answers(prepared_db: Path, tmp_path: Path, cli_script: str,
                                                           run_cli: CliRunner) -> None:
    with running_serve(cli_script, clean_env(prepared_db), tmp_path, ("--event-loop", "uvloop")) as (_, port):
        blocked = run_once(play(port, make_env("check?campaign=autunno26", (REGISTERED,))))
        said_no = run_once(play(port, make_env("optout?campaign=autunno26", (LISTED,))))
        after = run_once(play(port, make_env("check?campaign=autunno26", (LISTED,))))
    started = next(tmp_path.glob("serve-*.log")).read_text()
    assert "event loop uvloop" in started, started
    assert blocked.agistatus == "SUCCESS" and RPO_REGISTERED in blocked.variables[VAR_REASONS].split(",")
    assert said_no.variables[VAR_OPTOUT] == "OK"
    assert after.variables[VAR_DECISION] == CHANNEL_BLOCK and after.variables[VAR_REASON] == OPTOUT
    assert [row["decision_id"] for row in _audit(run_cli)] == [blocked.variables[VAR_ID], after.variables[VAR_ID]]


def test_event_loop_setting_is_checked(write_file: Callable[..., Path]) -> None:
    assert load_config(str(write_file("a.toml", '[serve]\nevent_loop = "uvloop"\n'))).serve.event_loop == "uvloop"
    assert load_config(str(write_file("b.toml", ""))).serve.event_loop == "asyncio"
    with pytest.raises(ConfigError, match="event_loop must be one of asyncio, uvloop, not 'libuv'"):
        load_config(str(write_file("c.toml", '[serve]\nevent_loop = "libuv"\n')))


def test_serve_limits_are_read_and_checked(write_file: Callable[..., Path]) -> None:
    default = load_config(str(write_file("a.toml", ""))).serve
    assert (default.linger, default.command_timeout, default.backlog) == (0.5, None, 512)
    set_all = load_config(str(write_file("b.toml", "[serve]\nlinger = 0\ncommand_timeout = 1\nbacklog = 64\n")))
    assert (set_all.serve.linger, set_all.serve.command_timeout, set_all.serve.backlog) == (0.0, 1.0, 64)
    for text, message in (("linger = -1", "linger must be 0"), ("command_timeout = 0", "command_timeout must be"),
                          ("backlog = 0", "backlog must be 1 or more"), ('backlog = "x"', "'backlog' must be int"),
                          ("lingr = 1", "unknown key 'lingr'")):
        with pytest.raises(ConfigError, match=message):
            load_config(str(write_file("c.toml", f"[serve]\n{text}\n")))


def test_uvloop_chosen_but_missing_is_a_clear_error(run_cli: CliRunner, tmp_path: Path) -> None:
    # A uvloop that cannot be imported, ahead of the installed one on the path.
    fake = tmp_path / "site" / "uvloop"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("no module named uvloop (simulated)")\n')
    result = run_cli("serve", "--port", "0", "--event-loop", "uvloop", env={"PYTHONPATH": str(fake.parent)})
    assert result.code == 2
    assert "uvloop is not installed (pip install 'rpoguard[uvloop]')" in result.err


def test_optout_on_one_session_blocks_the_next(server: tuple[subprocess.Popen[bytes], int],
                                               run_cli: CliRunner) -> None:
    _, port = server
    before = run_once(play(port, make_env("check?campaign=autunno26", (LISTED,))))
    assert OPTOUT not in before.variables[VAR_REASONS].split(",")

    said_no = run_once(play(port, make_env("optout?campaign=autunno26", (LISTED,))))
    assert said_no.agistatus == "SUCCESS" and said_no.variables[VAR_OPTOUT] == "OK"

    after = run_once(play(port, make_env("check?campaign=autunno26", (LISTED,))))
    assert after.variables[VAR_DECISION] == CHANNEL_BLOCK
    assert after.variables[VAR_REASON] == OPTOUT


def test_unknown_number_is_blocked_not_checked(server: tuple[subprocess.Popen[bytes], int]) -> None:
    _, port = server
    transcript = run_once(play(port, make_env("check?campaign=autunno26", ("338 000 1111",))))
    assert transcript.variables[VAR_DECISION] == CHANNEL_BLOCK
    assert RPO_NOT_CHECKED in transcript.variables[VAR_REASONS].split(",")


async def _until(predicate: Callable[[], bool], what: str, patience: float = 15.0) -> None:
    deadline = time.monotonic() + patience
    while not predicate():
        assert time.monotonic() < deadline, f"never happened within {patience} s: {what}"
        await asyncio.sleep(0.01)


def test_sigterm_finishes_the_session_in_flight_then_exits(server: tuple[subprocess.Popen[bytes], int],
                                                           run_cli: CliRunner) -> None:
    proc, port = server
    env = make_env("check?campaign=autunno26", (REGISTERED,), overrides={"agi_uniqueid": "1764000000.77"})
    half = env.index(b"agi_callerid")

    async def session_across_sigterm() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(env[:half])
        await writer.drain()
        # In flight means accepted by the server (connect() returns before that; a connection still in the
        # backlog when the listener closes is reset, not finished).
        await _until(lambda: connections_held(proc.pid, port) == 1, "the server accepted the session")
        proc.send_signal(signal.SIGTERM)
        await _until(lambda: not listening(port), "the server closed its listener")
        # A new call after SIGTERM is turned away (connection refused: Asterisk reads AGISTATUS=FAILURE,
        # or a failure line), never left waiting.
        try:
            late = await asyncio.wait_for(play(port, make_env("check?campaign=autunno26", (LISTED,))), 5)
        except ConnectionRefusedError:
            pass
        else:
            assert late.failed_closed
        writer.write(env[half:])
        await writer.drain()
        commands = []
        while line := await asyncio.wait_for(reader.readline(), 5):
            commands.append(line)
            writer.write(b"200 result=0\n" if line.startswith(b"EXEC") else b"200 result=1\n")
            await writer.drain()
        writer.close()
        # The call in flight was finished: its one command set the decision last.
        assert len(commands) == 1 and commands[0].endswith(f',{VAR_DECISION}={CHANNEL_BLOCK}"\n'.encode())

    run_once(session_across_sigterm())
    assert proc.wait(timeout=10) == 0
    assert [row["uniqueid"] for row in _audit(run_cli)] == ["1764000000.77"]
