"""An RPO import is one transaction (docs/architecture.md §7): killed at any point it leaves no partial
data, the previous answers keep serving, both SQLite files stay usable, and a rerun lands the whole file.
While an import runs, a live `rpoguard serve` keeps answering from the previous data until the commit,
then from the new data.

Everything goes through the REAL console script. The synthetic answer file is big enough (300,000 rows)
that an import takes a few seconds, so the SIGKILLs land while it reads, sorts and writes. Decisions use
the real clock; only RPO reasons, which do not depend on the hour, are asserted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rpoguard.constants import RPO_EXPIRED, RPO_NOT_CHECKED, RPO_REGISTERED, VAR_NUMBER, VAR_REASONS
from rpoguard.db.sqlite import audit_path
from rpoguard.timeutil import ROME, parse_time, to_us
from support.agi_fakes import make_env, play, sets_the_decision_last
from support.aio import run_once
from support.serve_process import running_serve

Cli = Callable[..., Any]

BIG_ROWS = 300_000
PREFIXES = [*range(320, 350)]  # TIM, Vodafone, ... mobile ranges: every 7-digit subscriber number is valid
RPO_CODES = {RPO_NOT_CHECKED, RPO_EXPIRED, RPO_REGISTERED}
KILLS = 4  # at random times, plus one while the keyed table is being written


def big_number(i: int) -> str:
    """The i-th number of the big file, E.164; distinct for every i < 30 * 10**7 / 7."""
    return f"+39{PREFIXES[i % len(PREFIXES)]}{(i // len(PREFIXES)) * 7:07d}"


SHARED = big_number(0)  # not registered in the small file; registered in the big one (i % 3 == 0)
BIG_ONLY = big_number(1)  # only in the big file
SAMPLES = [big_number(i) for i in (0, 1, BIG_ROWS // 2, BIG_ROWS - 2, BIG_ROWS - 1)]
ROMA = "+390645678901"
MILANO = "+390212345678"


def days_ago(days: int) -> str:
    return (datetime.now(ROME).date() - timedelta(days=days)).isoformat()


SMALL_CHECKED = days_ago(3)
BIG_CHECKED = days_ago(1)


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bigrpo") / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("number,status\n")
        for i in range(BIG_ROWS):
            n = big_number(i)
            # Written the way an operator's file might be: +39 3xx xxxxxxx
            out.write(f"{n[:3]} {n[3:6]} {n[6:]},{'registered' if i % 3 == 0 else 'not_registered'}\n")
    return path


@pytest.fixture
def prepared(db_path: Path, run_cli: Cli, write_file: Callable[..., Path]) -> Path:
    """The previous answers: a small file imported normally."""
    small = write_file("small.csv", f"number,status\n{SHARED},not_registered\n{ROMA},not_registered\n"
                                    f"{MILANO},registered\n")
    for args in (("principal", "add", "acme", "--name", "ACME", "--caller-id", "06 9480 1234"),
                 ("campaign", "add", "c1", "--principal", "acme"),
                 ("registry", "import", small, "--checked-at", SMALL_CHECKED)):
        code, out, err = run_cli(*args)
        assert code == 0, (args, out, err)
    return db_path


def rpo_reasons(run_cli: Cli, number: str) -> set[str]:
    """The RPO reasons of a recorded `check` now (recording also proves the audit file takes writes)."""
    code, out, err = run_cli("check", number, "--campaign", "c1", "--json")
    assert code in (0, 1), err
    result = json.loads(out)
    assert result["decision_id"], result
    return set(result["reasons"]) & RPO_CODES


def audit_rows(run_cli: Cli) -> int:
    code, out, err = run_cli("audit", "verify")
    assert code == 0, (out, err)
    assert out.startswith("audit log intact: ")
    return int(out.split(": ")[1].split(" ")[0])


def sql(path: Path, query: str, params: tuple[Any, ...] = ()) -> Any:
    con = sqlite3.connect(path, timeout=5)
    try:
        return con.execute(query, params).fetchone()
    finally:
        con.close()


def size(path: Path) -> int:
    """The file's size, 0 when it is not there. SQLite deletes the WAL when its last connection closes, at
    any moment: a size read after an exists() may find it gone, so the absence is caught, not checked first."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def import_cmd(cli_script: str, big: Path) -> list[str]:
    # The kill rounds add principals: the answers name theirs.
    return [cli_script, "registry", "import", str(big), "--checked-at", BIG_CHECKED, "--principal", "acme"]


def timed_import(cli_script: str, big: Path, env: dict[str, str], cwd: Path) -> float:
    started = time.monotonic()
    done = subprocess.run(import_cmd(cli_script, big), capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120, check=False)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert f"{BIG_ROWS} row(s) read, {BIG_ROWS} stored, 0 rejected" in done.stdout, done.stdout
    return elapsed


def due_from(run_cli: Cli, big: Path, out: Path) -> list[str]:
    code, _, err = run_cli("registry", "due", "--principal", "acme", "--from", big, "-o", out)
    assert code == 0, err
    return out.read_text(encoding="utf-8").splitlines()


def test_killed_import_leaves_the_previous_answers_and_a_rerun_lands_it(
    prepared: Path, big_csv: Path, run_cli: Cli, cli_script: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    data, audit = prepared, audit_path(prepared)
    # How long a whole import takes here, on a copy of the database: the kills are spread over it.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for file in (data, audit):
        assert not Path(f"{file}-wal").exists()
        shutil.copyfile(file, scratch / file.name)
    typical = timed_import(cli_script, big_csv, {**cli_env, "RPOGUARD_DB": str(scratch / data.name)}, scratch)
    shutil.rmtree(scratch)

    seed = random.randrange(2**32)
    rng = random.Random(seed)
    latest = max(0.3, 0.8 * typical)
    # One kill in each quarter of [0.2 s, 80% of a whole import], in random order.
    delays = [rng.uniform(0.2 + (latest - 0.2) * k / KILLS, 0.2 + (latest - 0.2) * (k + 1) / KILLS)
              for k in range(KILLS)]
    rng.shuffle(delays)
    print(f"\nwhole import {typical:.2f} s; seed {seed}; SIGKILL after " + ", ".join(f"{d:.2f}" for d in delays))

    assert rpo_reasons(run_cli, SHARED) == set()
    assert rpo_reasons(run_cli, BIG_ONLY) == {RPO_NOT_CHECKED}
    # The last kill waits for the import to spill its uncommitted rows into the data file's WAL: the final
    # INSERT into the keyed table, a few hundred milliseconds just before the commit.
    wal_trigger = rng.randrange(256 << 10, 4 << 20)
    rows = audit_rows(run_cli)
    wal = Path(f"{data}-wal")
    for round_no, delay in enumerate([*delays, None], start=1):
        # The with block closes the pipes and waits: whatever fails inside, no import outlives the round.
        with subprocess.Popen(import_cmd(cli_script, big_csv), env=cli_env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
            try:
                started = time.monotonic()
                # A timed kill also comes early if the WAL starts growing (the last phase has begun: the machine
                # is faster than during the calibration), so that no kill ever comes after the commit.
                limit, threshold = (delay, 1) if delay is not None else (120.0, wal_trigger)
                while proc.poll() is None and time.monotonic() - started < limit and size(wal) < threshold:
                    time.sleep(0.001)
                killed_at = time.monotonic() - started
                if proc.poll() is not None:
                    out, err = proc.communicate()
                    pytest.fail(f"the import finished before the kill at {killed_at:.2f} s (whole import "
                                f"{typical:.2f} s): {out!r} {err!r}")
                proc.send_signal(signal.SIGKILL)
                proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
        assert proc.returncode == -signal.SIGKILL
        left = size(wal)
        print(f"kill {round_no} at {killed_at:.2f} s: data WAL left with {left:,} bytes")
        if delay is None:
            assert left >= wal_trigger  # uncommitted pages were on disk when it died

        # The previous answers keep serving, nothing of the killed file is visible.
        assert rpo_reasons(run_cli, SHARED) == set(), f"kill {round_no}"
        assert rpo_reasons(run_cli, BIG_ONLY) == {RPO_NOT_CHECKED}, f"kill {round_no}"
        # Both files take writes: the audit file (the recorded checks above), the data file (principal add).
        rows += 2
        assert audit_rows(run_cli) == rows
        code, _, err = run_cli("principal", "add", f"p{round_no}", "--name", "after a kill")
        assert code == 0, err
        assert sql(data, "SELECT count(*) FROM rpo_results") == (3,)  # the small file's, and nothing else
        assert sql(data, "SELECT count(*) FROM imports WHERE file_name = 'big.csv'") == (0,)
        for file in (data, audit):
            assert sql(file, "PRAGMA integrity_check") == ("ok",), file

    # The rerun lands the whole file.
    code, out, err = run_cli(*import_cmd(cli_script, big_csv)[1:])
    assert code == 0, err
    assert "already imported" not in out
    assert f"{BIG_ROWS} row(s) read, {BIG_ROWS} stored, 0 rejected" in out
    assert due_from(run_cli, big_csv, tmp_path / "due.txt") == []  # every number of the file has its answer
    assert sql(data, "SELECT count(*) FROM rpo_results") == (3 + BIG_ROWS,)
    digest = hashlib.sha256(big_csv.read_bytes()).hexdigest()
    for i, number in ((0, SAMPLES[0]), (1, SAMPLES[1]), (BIG_ROWS // 2, SAMPLES[2]), (BIG_ROWS - 1, SAMPLES[4])):
        code, out, err = run_cli("evidence", number, "--json")
        assert code == 0, err
        [answer] = [a for a in json.loads(out)["items"] if a["kind"] == "rpo_answer" and a["file_name"] == "big.csv"]
        assert answer["registered"] is (i % 3 == 0)
        assert (answer["sha256"], answer["file_size"]) == (digest, big_csv.stat().st_size)
    assert rpo_reasons(run_cli, SHARED) == {RPO_REGISTERED}
    assert rpo_reasons(run_cli, BIG_ONLY) == set()
    audit_rows(run_cli)


# -- a live gate during an import -----------------------------------------------------------------------------


@pytest.fixture
def server(prepared: Path, tmp_path: Path, cli_env: dict[str, str], cli_script: str) -> Iterator[int]:
    with running_serve(cli_script, cli_env, tmp_path) as (_, port):
        yield port


@dataclass
class Session:
    number: str
    started: float
    ended: float
    reasons: set[str] | None  # RPO reasons; None when the session failed
    problem: str = ""

    @property
    def latency(self) -> float:
        return self.ended - self.started


# What each number's RPO reasons are before and after the big import commits.
OLD = {SHARED: set[str](), BIG_ONLY: {RPO_NOT_CHECKED}}
NEW = {SHARED: {RPO_REGISTERED}, BIG_ONLY: set[str]()}


class CommitWatch(threading.Thread):
    """Reads the data file every few milliseconds, as any reader would, to bracket the moment the import's
    commit becomes visible; and checks that no snapshot ever shows part of the file."""

    PROBES = (SAMPLES[0], SAMPLES[2], SAMPLES[4])

    def __init__(self, data: Path) -> None:
        super().__init__(daemon=True)
        self.data = data
        self.stop = threading.Event()
        self.last_unseen = 0.0  # a snapshot taken after this showed none of the file
        self.first_seen: float | None = None  # a snapshot taken before this showed all of it
        self.partial: list[int] = []
        self.error: BaseException | None = None
        self.checked_us = to_us(parse_time(BIG_CHECKED))

    def run(self) -> None:
        try:
            con = sqlite3.connect(f"file:{self.data}?mode=ro", uri=True, timeout=5)
            query = (f"SELECT count(*) FROM rpo_results WHERE checked_us = ? AND number IN "
                     f"({','.join('?' * len(self.PROBES))})")
            try:
                while not self.stop.is_set() and self.first_seen is None:
                    before = time.monotonic()
                    (found,) = con.execute(query, (self.checked_us, *self.PROBES)).fetchone()
                    after = time.monotonic()
                    if found == 0:
                        self.last_unseen = before
                    elif found == len(self.PROBES):
                        self.first_seen = after
                    else:
                        self.partial.append(found)
                    time.sleep(0.003)
            finally:
                con.close()
        except BaseException as exc:  # reported by the test
            self.error = exc


async def _sessions(port: int, number: str, stop: asyncio.Event, log: list[Session]) -> None:
    env = make_env("check?campaign=c1", (number,))
    while not stop.is_set():
        started = time.monotonic()
        try:
            transcript = await play(port, env, patience=10)
        except Exception as exc:  # a failure to record, not to raise: every session must be counted
            log.append(Session(number, started, time.monotonic(), None, repr(exc)))
            continue
        ended = time.monotonic()
        variables = transcript.variables
        if transcript.failure or transcript.agistatus != "SUCCESS" or variables.get(VAR_NUMBER) != number \
                or VAR_REASONS not in variables or not sets_the_decision_last(transcript.commands[-1]):
            log.append(Session(number, started, ended, None, transcript.written.decode(errors="replace")))
        else:
            log.append(Session(number, started, ended, set(variables[VAR_REASONS].split(",")) & RPO_CODES))


async def _until_sessions(log: list[Session], count: int, after: float, patience: float = 60.0) -> None:
    """Until each number has `count` sessions done that started after `after`: counted, not timed, so that a
    busy machine (fewer sessions a second) still has them."""
    deadline = time.monotonic() + patience
    while any(sum(s.number == n and s.started > after for s in log) < count for n in (SHARED, BIG_ONLY)):
        assert time.monotonic() < deadline, f"not {count} sessions per number within {patience} s: {log[-5:]}"
        await asyncio.sleep(0.01)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def test_serve_answers_from_the_previous_data_until_the_import_commits(
    server: int, prepared: Path, big_csv: Path, run_cli: Cli, cli_script: str, cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    port = server
    watch = CommitWatch(prepared)
    log: list[Session] = []

    async def scenario() -> tuple[float, float, bytes, bytes, int]:
        stop = asyncio.Event()
        workers = [asyncio.create_task(_sessions(port, n, stop, log)) for n in (SHARED, BIG_ONLY)]
        await _until_sessions(log, 3, after=0.0)  # a few sessions on the previous data before the import starts
        watch.start()
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *import_cmd(cli_script, big_csv), env=cli_env, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        finished = time.monotonic()
        await _until_sessions(log, 3, after=finished)  # and some after it
        stop.set()
        await asyncio.gather(*workers)
        return started, finished, out, err, proc.returncode or 0

    try:
        started, finished, out, err, code = run_once(scenario())
    finally:
        watch.stop.set()
        watch.join(10)
    assert code == 0, (out, err)
    assert f"{BIG_ROWS} stored".encode() in out
    assert watch.error is None, watch.error
    assert watch.partial == [], "a reader saw part of the import"
    assert watch.first_seen is not None and started < watch.last_unseen < watch.first_seen

    during = [s for s in log if started <= s.started < finished]
    latencies = [s.latency for s in during]
    before = [s.latency for s in log if s.ended < started]
    print(f"\nimport {finished - started:.2f} s; {len(log)} sessions, {len(during)} while it ran; "
          f"latency during the import: max {max(latencies) * 1000:.1f} ms, p99 "
          f"{_percentile(latencies, 0.99) * 1000:.1f} ms, median {_percentile(latencies, 0.5) * 1000:.1f} ms; "
          f"before it: max {max(before) * 1000:.1f} ms, median {_percentile(before, 0.5) * 1000:.1f} ms; "
          f"commit visible between {watch.last_unseen - started:.2f} s and {watch.first_seen - started:.2f} s")

    failures = [s for s in log if s.reasons is None]
    assert failures == [], failures[:5]
    for number in (SHARED, BIG_ONLY):
        mine = [s for s in log if s.number == number]
        seen = ["old" if s.reasons == OLD[number] else "new" if s.reasons == NEW[number] else repr(s.reasons)
                for s in mine]
        assert set(seen) <= {"old", "new"}, seen
        # Once the new answer showed, the old one never came back.
        assert "old" not in seen[seen.index("new"):] if "new" in seen else True
        # Before the commit was visible: the previous answer; after: the new one.
        assert all(s.reasons == OLD[number] for s in mine if s.ended < watch.last_unseen)
        assert all(s.reasons == NEW[number] for s in mine if s.started > watch.first_seen)
        # The gate served this number while the import was running, not only around it.
        assert any(started + 0.2 < s.started and s.ended < watch.last_unseen for s in mine), number
        assert sum(s.started > finished for s in mine) >= 3, number
    audit_rows(run_cli)
    assert rpo_reasons(run_cli, SHARED) == {RPO_REGISTERED}
