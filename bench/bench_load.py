"""Sustained load on `rpoguard serve`: a fixed rate of real FastAGI sessions for a long time, with the
server's latency and memory every interval, and every decision checked against the audit log.

    python bench/bench_load.py                                  # 1,000 sessions/s for 10 minutes
    python bench/bench_load.py --rate 400 --duration 30 --interval 5 --size 20000   # a short run

The server is the real `rpoguard serve` (defaults; an empty config file) on loopback, on a store built the
way bench_gate.py builds it (N RPO results, a third of them in the directory, consents). The load
generator is bench/fastagi_load.py in its own process, streaming one line per session as it ends: each
session is a new connection playing Asterisk (the agi_* environment of dialplan/rpoguard.conf's AGI(),
``200 result=1`` to every command, ``HANGUP`` at the end), started on a fixed schedule (open loop: latency
is measured from the scheduled start, so a server that falls behind shows it).

Every interval it prints one row: elapsed time, sessions that ended in the interval, totals of sessions
with a decision and of errors (the server wrote ``failure``, set no RPOGUARD_DECISION, timed out or the
connection failed), p50/p99/max latency in the interval, the server's RssAnon (private memory, from
/proc/PID/status) and the audit rows added so far. At the end, with the server stopped: ``rpoguard audit
verify`` on the log, the audit rows added against the sessions sent (one row per decision), and a verdict
on flatness: p99 and RssAnon of the last interval against the first, and zero errors. ``--json FILE``
writes all of it for a test to read (tests/integration/test_load.py). Exit status 0 only when every
session had a decision, every decision was recorded, the chain verifies and memory stayed within
``--rss-growth-mib``; latency is reported, never judged in the exit status (it depends on the machine).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import clockshift
import loadgen
from bench_gate import (
    proc_status,
    shift_to,
    start_server,
)
from benchstore import CALLER_ID, CAMPAIGN, build_store, call_time, draw_numbers
from common import (
    bench_dir,
    empty_config,
    free_port,
    machine_description,
    markdown_table,
    percentile,
    remove_db,
    rpoguard_env,
    venv_bin,
)

GENERATOR = Path(__file__).resolve().with_name("fastagi_load.py")
GENERATORS = {
    "c": "bench/loadgen.py's C program (epoll, a few µs of CPU per session), one run per interval",
    "python": "bench/fastagi_load.py (asyncio streams, a few hundred µs of CPU per session), one run streaming",
}
# Lines of the generator are read after each interval ends, once its 0.2 s flush has passed.
SETTLE_S = 0.5


@dataclass(slots=True)
class Window:
    elapsed_s: float
    sessions: int  # ended in this interval
    ok_total: int
    errors_total: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    rss_anon_kib: int
    audit_rows: int  # added since the start


@dataclass(slots=True)
class Report:
    rate: float
    duration_s: float
    interval_s: float
    store_size: int
    generator: str
    windows: list[Window] = field(default_factory=list)
    sessions: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    decisions: dict[str, int] = field(default_factory=dict)
    audit_rows_added: int = 0
    verify_exit: int | None = None
    verify_output: str = ""
    p99_first_ms: float = 0.0
    p99_last_ms: float = 0.0
    rss_first_kib: int = 0
    rss_last_kib: int = 0
    rss_max_kib: int = 0
    verdict_ok: bool = False
    verdict: str = ""


def audit_rows(db: Path) -> int:
    from rpoguard.db.sqlite import audit_path  # noqa: PLC0415

    path = audit_path(db)
    if not path.exists():
        return 0
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return int(con.execute("SELECT count(*) FROM audit_log").fetchone()[0])
    finally:
        con.close()


def _reader(stream: object, lines: queue.SimpleQueue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.put(line)


@dataclass(slots=True)
class Batch:
    """What one interval's sessions did, whichever generator ran them."""

    latencies_s: list[float] = field(default_factory=list)
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    decisions: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str, count: int = 1) -> None:
        if count:
            self.errors[kind] = self.errors.get(kind, 0) + count


def python_batches(args: argparse.Namespace, port: int, numbers_path: Path) -> Iterator[tuple[float, Batch]]:
    """fastagi_load.py for the whole run, its sessions cut into intervals by the time each ended."""
    generator = subprocess.Popen(
        [sys.executable, str(GENERATOR), "--port", str(port), "--numbers", str(numbers_path), "--campaign",
         CAMPAIGN, "--caller-id", CALLER_ID, "--rate", str(args.rate), "--duration", str(args.duration),
         "--timeout", str(args.timeout), "--stream"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1 << 16)
    try:
        lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        threading.Thread(target=_reader, args=(generator.stdout, lines), daemon=True).start()
        # The generator schedules its first session 0.05 s after it starts; intervals count from there.
        t0 = time.monotonic() + 0.05
        pending: list[tuple[float, float, str, str]] = []
        boundary = t0 + args.interval
        finished = False
        while not finished:
            time.sleep(max(0.0, boundary + SETTLE_S - time.monotonic()))
            finished = generator.poll() is not None
            while True:
                try:
                    raw = lines.get_nowait()
                except queue.Empty:
                    break
                scheduled, _started, ended, outcome, decision = raw.rstrip("\n").split(",", 4)
                pending.append((float(ended), float(ended) - float(scheduled), outcome, decision))
            limit = float("inf") if finished else boundary
            batch = Batch()
            for end, latency, outcome, decision in pending:
                if end >= limit:
                    continue
                batch.latencies_s.append(latency)
                if outcome == "ok":
                    batch.ok += 1
                    batch.decisions[decision] = batch.decisions.get(decision, 0) + 1
                else:
                    batch.error(outcome)
            pending = [item for item in pending if item[0] >= limit]
            if batch.latencies_s or not finished:
                yield min(boundary, time.monotonic()) - t0, batch
            boundary += args.interval
        generator.wait()
    finally:
        if generator.poll() is None:
            generator.terminate()
            generator.wait(10)


def c_batches(args: argparse.Namespace, port: int, numbers: list[str], template: Path,
              folder: Path) -> Iterator[tuple[float, Batch]]:
    """loadgen.py's C generator, one run per interval back to back (each waits for its own sessions, a few
    ms when the server keeps up): a few µs of CPU per session, so the generator leaves the cores to the
    server being measured."""
    binary = loadgen.build(folder)
    chunk_path = folder / "load-numbers-run.txt"
    t0 = time.monotonic()
    done = 0.0
    at = 0
    while done < args.duration - 1e-9:
        span = min(args.interval, args.duration - done)
        # Each run dials from the first line of its file: give it the numbers the whole run has reached, so
        # that the same ones are not called again every interval (the campaign's attempt cap would block them).
        count = int(args.rate * span) + 16
        chunk_path.write_text("\n".join(numbers[(at + i) % len(numbers)] for i in range(count)) + "\n")
        at = (at + int(args.rate * span)) % len(numbers)
        result = loadgen.run_fastagi(binary, port=port, numbers=chunk_path, template=template, workdir=folder,
                                     rate=args.rate, duration=span, warmup=0.0)
        done += span
        batch = Batch(latencies_s=[ns / 1e9 for ns in result.latencies_ns], ok=result.allow + result.block,
                      decisions={"ALLOW": result.allow, "BLOCK": result.block})
        for kind, count in result.outcomes.items():
            if kind != "done":
                batch.error(kind, count)
        batch.error("no_decision", result.no_decision)
        batch.error("not_started", result.dropped)
        yield time.monotonic() - t0, batch


def _window(latencies: list[float], elapsed: float, ok_total: int, errors_total: int, rss: int, rows: int) -> Window:
    return Window(round(elapsed, 1), len(latencies), ok_total, errors_total,
                  round(percentile(latencies, 0.50) * 1e3, 2) if latencies else 0.0,
                  round(percentile(latencies, 0.99) * 1e3, 2) if latencies else 0.0,
                  round(latencies[-1] * 1e3, 2) if latencies else 0.0, rss, rows)


def run(args: argparse.Namespace, out: object = sys.stdout) -> Report:
    def say(text: str = "") -> None:
        print(text, file=out, flush=True)  # type: ignore[call-overload]

    folder = args.folder or bench_dir() / f"load-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    env = rpoguard_env(empty_config(folder))
    db = folder / "load.db"
    report = Report(args.rate, args.duration, args.interval, args.size, args.generator)
    say(f"# rpoguard serve under load: {args.rate:g} sessions/s for {args.duration:g} s")
    say()
    say(markdown_table(["machine", ""], [*machine_description(),
                                         ("load average at start", " ".join(f"{x:.2f}" for x in os.getloadavg()))],
                       "ll"))
    store = build_store(db, args.size, call_time(), env)
    numbers = draw_numbers(store.layout, min(args.size, max(1000, int(args.rate * args.duration))), seed=17)
    numbers_path = folder / "load-numbers.txt"
    numbers_path.write_text("\n".join(numbers) + "\n")
    say()
    say(f"Store: {store.rows['rpo_results']:,} RPO results, {store.rows['listings']:,} listed, "
        f"{store.rows['consents']:,} consents, built in {store.build_s:.1f} s; {len(numbers):,} numbers dialled "
        "in turn. " + ("The server decides at the real time, so the mix of ALLOW and BLOCK depends on the hour. "
                       if args.real_clock else f"The server's wall clock is shifted to {store.at.isoformat()} "
                       "(bench/clockshift.py), inside the calling hours. ")
        + f"Generator: {GENERATORS[args.generator]}.")
    try:
        port = free_port()
        # Inside the calling hours, so that ALLOW (cap check, longer audit row) is measured too; the product has
        # no clock switch: a preloaded shim shifts the server's wall clock (bench/clockshift.py).
        shift = {} if args.real_clock else clockshift.environ(shift_to(store.at), folder)
        server = start_server("rpoguard-load", [venv_bin("rpoguard"), "serve", "--port", str(port)], port,
                              dict(env, RPOGUARD_DB=str(db), **shift), folder, numbers_path)
        rows_before = audit_rows(db)
        try:
            say()
            headers = ["elapsed s", "sessions", "ok total", "errors total", "p50 ms", "p99 ms", "max ms",
                       "RssAnon MiB", "audit rows"]
            say("| " + " | ".join(headers) + " |")
            say("|" + "|".join("-" * (len(h) + 1) + ":" for h in headers) + "|")
            batches = (python_batches(args, port, numbers_path) if args.generator == "python"
                       else c_batches(args, port, numbers, server.template, folder))
            for elapsed, batch in batches:
                rss = proc_status(server.proc.pid).get("RssAnon", 0)
                rows = audit_rows(db) - rows_before
                report.sessions += len(batch.latencies_s) + batch.errors.get("not_started", 0)
                report.ok += batch.ok
                for kind, count in batch.errors.items():
                    report.errors[kind] = report.errors.get(kind, 0) + count
                for kind, count in batch.decisions.items():
                    report.decisions[kind] = report.decisions.get(kind, 0) + count
                window = _window(sorted(batch.latencies_s), elapsed, report.ok, sum(report.errors.values()), rss, rows)
                report.windows.append(window)
                say(f"| {window.elapsed_s:g} | {window.sessions:,} | {window.ok_total:,} | {window.errors_total:,} "
                    f"| {window.p50_ms:.2f} | {window.p99_ms:.2f} | {window.max_ms:.2f} "
                    f"| {window.rss_anon_kib / 1024:.1f} | {window.audit_rows:,} |")
        finally:
            server.stop()
        report.audit_rows_added = audit_rows(db) - rows_before
        verify = subprocess.run([venv_bin("rpoguard"), "--db", str(db), "audit", "verify"], env=env,
                                capture_output=True, text=True, check=False)
        report.verify_exit, report.verify_output = verify.returncode, (verify.stdout + verify.stderr).strip()
        judge(report, args)
        say()
        say(f"sessions {report.sessions:,} (expected {int(args.rate * args.duration):,}), with a decision "
            f"{report.ok:,} {report.decisions}, errors {report.errors or 0}")
        say(f"audit rows added {report.audit_rows_added:,}; audit verify (exit {report.verify_exit}): "
            f"{report.verify_output.splitlines()[0] if report.verify_output else ''}")
        say(f"p99 first interval {report.p99_first_ms:.2f} ms, last {report.p99_last_ms:.2f} ms; RssAnon first "
            f"{report.rss_first_kib / 1024:.1f} MiB, last {report.rss_last_kib / 1024:.1f} MiB, max "
            f"{report.rss_max_kib / 1024:.1f} MiB")
        say(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        say(f"VERDICT: {report.verdict}")
        if args.json:
            args.json.write_text(json.dumps(asdict(report), indent=1))
    finally:
        # Also when interrupted: the store and its audit log are rebuilt for every run.
        if not args.keep:
            remove_db(db)
            if args.folder is None:
                shutil.rmtree(folder, ignore_errors=True)
    return report


def judge(report: Report, args: argparse.Namespace) -> None:
    # The last interval is partial (the drain after the schedule ends): flatness compares full ones.
    full = [w for w in report.windows if w.sessions >= 0.5 * args.rate * args.interval] or report.windows
    if full:
        report.p99_first_ms, report.p99_last_ms = full[0].p99_ms, full[-1].p99_ms
        report.rss_first_kib, report.rss_last_kib = full[0].rss_anon_kib, full[-1].rss_anon_kib
        report.rss_max_kib = max(w.rss_anon_kib for w in report.windows)
    problems = []
    expected = int(args.rate * args.duration)
    # The generator may start one session fewer than scheduled when it wakes after the end of its run: at
    # most one per run, so one per interval with the C generator (a run each).
    slack = len(report.windows) if args.generator == "c" else 1
    if abs(report.sessions - expected) > slack:
        problems.append(f"{report.sessions:,} sessions ended, {expected:,} scheduled")
    if report.errors:
        problems.append(f"errors {report.errors}")
    if report.audit_rows_added != report.ok:
        problems.append(f"{report.audit_rows_added:,} audit rows for {report.ok:,} decisions")
    if report.verify_exit != 0:
        problems.append(f"audit verify exited {report.verify_exit}")
    growth_mib = (report.rss_last_kib - report.rss_first_kib) / 1024
    if growth_mib > args.rss_growth_mib:
        problems.append(f"RssAnon grew {growth_mib:.1f} MiB (limit {args.rss_growth_mib:g})")
    p99_flat = report.p99_last_ms <= max(2 * report.p99_first_ms, report.p99_first_ms + 2.0)
    latency = (f"p99 {'flat' if p99_flat else 'NOT flat'} ({report.p99_first_ms:.2f} -> {report.p99_last_ms:.2f} ms,"
               " reported only)")
    report.verdict_ok = not problems
    head = "PASS: zero errors, every decision recorded, chain verifies" if not problems else "FAIL: " + "; ".join(
        problems)
    report.verdict = f"{head}; RssAnon {growth_mib:+.1f} MiB first to last interval; {latency}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="sessions started per second (default 1000)")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds per reported row (default 10)")
    parser.add_argument("--size", type=int, default=1_000_000, help="RPO results in the store (default 1 M)")
    parser.add_argument("--timeout", type=float, default=10.0, help="a session still open after this is an error")
    parser.add_argument("--rss-growth-mib", type=float, default=20.0,
                        help="largest RssAnon growth from the first full interval to the last (default 20)")
    parser.add_argument("--folder", type=Path, help="where the store and logs go (default: a new bench folder)")
    parser.add_argument("--keep", action="store_true", help="keep the store, its audit log and the server log")
    parser.add_argument("--json", type=Path, help="also write the report as JSON")
    parser.add_argument("--real-clock", action="store_true",
                        help="decide at the real time (default: the server's clock shifted into the calling hours, "
                        "which needs gcc; without gcc, the real time)")
    parser.add_argument("--generator", choices=sorted(GENERATORS),
                        default="c" if shutil.which("gcc") else "python",
                        help="c (needs gcc; the default when it is there) or python")
    args = parser.parse_args()
    args.real_clock = args.real_clock or shutil.which("gcc") is None
    for name in ("rate", "duration", "interval"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")
    # SIGTERM too unwinds through run()'s cleanup: the server is stopped and the store removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with contextlib.suppress(KeyboardInterrupt):
        report = run(args)
        sys.exit(0 if report.verdict_ok else 1)
    sys.exit(130)


if __name__ == "__main__":
    main()
