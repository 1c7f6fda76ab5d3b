"""Sustained load, the short CI version of bench/bench_load.py (the full run: 1,000 sessions/s for 10 min).

bench/bench_load.py runs the real `rpoguard serve` on loopback and drives it from its own process
(bench/fastagi_load.py: a new connection per call, the full agi_* environment, ``200 result=1`` to every
command, ``HANGUP`` at the end) at a fixed rate. This test runs it at a rate a shared 2-core CI machine
sustains beside other work and checks what must hold at any speed: every session got a decision, none
failed, every decision is in the audit log (counted here, not only by the bench), the chain verifies, and
the server's private memory did not grow. Latency is printed, never asserted.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rpoguard.db.sqlite import audit_path

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_load.py"
RATE = 300
DURATION = 24
INTERVAL = 6
RSS_GROWTH_MIB = 20


def test_sustained_load_every_session_decided_and_recorded_memory_flat(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    report_path = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--rate", str(RATE), "--duration", str(DURATION), "--interval", str(INTERVAL),
         "--size", "20000", "--folder", str(tmp_path), "--keep", "--json", str(report_path),
         "--rss-growth-mib", str(RSS_GROWTH_MIB), "--generator", "python"],
        capture_output=True, text=True, check=False, timeout=DURATION + 120,
    )
    print(result.stdout)
    assert report_path.exists(), result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    sessions = RATE * DURATION

    assert report["sessions"] == sessions, result.stdout
    assert report["errors"] == {}, result.stdout
    assert report["ok"] == sessions
    assert sum(report["decisions"].values()) == sessions
    assert set(report["decisions"]) <= {"ALLOW", "BLOCK"}
    # A row every interval, each with the server's memory.
    assert len(report["windows"]) >= DURATION // INTERVAL
    assert all(w["rss_anon_kib"] > 0 for w in report["windows"])
    assert report["rss_last_kib"] <= report["rss_first_kib"] + RSS_GROWTH_MIB * 1024, result.stdout

    # Every decision recorded: counted in the audit file itself, and the chain verifies.
    db = tmp_path / "load.db"
    con = sqlite3.connect(f"file:{audit_path(db)}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT count(*), count(DISTINCT uniqueid) FROM audit_log").fetchone()
    finally:
        con.close()
    assert rows == (sessions, sessions)
    verify = run_cli("--db", db, "audit", "verify")
    assert verify.code == 0, (verify.out, verify.err)
    assert f"intact: {sessions} decision(s)" in verify.out
    assert result.returncode == 0, result.stdout + result.stderr
