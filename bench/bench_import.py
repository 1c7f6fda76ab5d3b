"""RPO import benchmark: throughput and peak memory, gate latency during an import, and where the time goes.

    python bench/bench_import.py                  # quick: 1 M rows, gate on 1 M, profile (a few minutes)
    python bench/bench_import.py --mode full      # 1 M, 10 M and 30 M rows, gate on 10 M, profile
    python bench/bench_import.py --sizes 1M,3M --gate-size 3M --rate 200 --skip-profile
    python bench/bench_import.py --sizes 2M --numbering-plan --skip-gate --skip-profile --skip-second

The issue's targets (2-core machine): at least 500,000 rows a second end to end, peak memory under 300 MB
whatever the file size, gate p99 under 5 ms during an import. Nothing is asserted: the figures are
printed as markdown tables (and saved beside the data) with the machine they were measured on.

1. Throughput: `rpoguard registry import FILE --checked-at DATE` as a child process on a fresh database
   (a principal and a campaign, nothing else), then a newer file into the filled database (the monthly
   case). Wall time, rows/s, CPU time, peak RSS (wait4's rusage: the kernel's high-water mark), file sizes.
2. Gate latency: `rpoguard serve` on a database holding one import, driven by bench/fastagi_load.py (its
   own process, plays Asterisk, new connection per call, steady rate) while the newer file is imported.
   p50/p99/max per phase (before, during, after) and along the import, and every failed session.
3. Profile of a 1 M-row import: py-spy's samples of the CLI, summarised by what the code does, and the
   SQL statements timed one by one in a child that runs the same import code in-process.

Synthetic files (bench/common.py): valid Italian mobile and fixed numbers (60/40), shuffled, about 12%
registered (70% of those with a registration date), 80% national form and 20% +39; generated once
into $RPOGUARD_BENCH_DIR (default /var/tmp/rpoguard-bench) and reused.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import linecache
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import common
from common import Measured, markdown_table, percentile

log = logging.getLogger("bench_import")

TARGET_ROWS_PER_S = 500_000
TARGET_RSS_MIB = 300
TARGET_P99_MS = 5.0
FIRST_CHECK_DAYS_AGO = 12  # month 1 checked 12 days ago, month 2 yesterday: both fresh for the gate
SECOND_CHECK_DAYS_AGO = 1
CAMPAIGN = "bench"
CALLER_ID = "06 9480 1234"



@dataclass(frozen=True)
class Mode:
    sizes: tuple[int, ...]
    gate_size: int
    window: float  # seconds of gate traffic measured before and after the import


MODES = {
    "quick": Mode((1_000_000,), 1_000_000, 10.0),
    "full": Mode((1_000_000, 10_000_000, 30_000_000), 10_000_000, 15.0),
}


def parse_count(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a row count (e.g. 500k, 1M, 30M)")
    scale = {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


def short(count: int) -> str:
    if count % 1_000_000 == 0:
        return f"{count // 1_000_000}M"
    if count % 1_000 == 0:
        return f"{count // 1_000}k"
    return str(count)


class Report:
    """Collects the markdown; printed as it grows (a long run shows its progress) and saved at the end."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, text: str = "") -> None:
        self.parts.append(text)
        print(text, flush=True)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> None:
        self.add(markdown_table(headers, rows, align))
        self.add()

    def text(self) -> str:
        return "\n".join(self.parts) + "\n"


@dataclass
class Setup:
    folder: Path
    config: Path
    env: dict[str, str]
    rpoguard: str
    python: str

    def cli(self, db: Path, *args: str) -> list[str]:
        return [self.rpoguard, "--db", str(db), *args]


def fresh_db(setup: Setup, db: Path) -> None:
    """A new database with the principal and campaign the gate benchmark calls for."""
    common.remove_db(db)
    for args in (("principal", "add", CAMPAIGN, "--name", "Bench S.p.A.", "--caller-id", CALLER_ID),
                 ("campaign", "add", CAMPAIGN, "--principal", CAMPAIGN)):
        common.run_measured(setup.cli(db, *args), env=setup.env)


def import_command(setup: Setup, db: Path, file: Path, days_ago: int) -> list[str]:
    return setup.cli(db, "registry", "import", str(file), "--checked-at", common.days_ago(days_ago))


def copy_db(source: Path, target: Path) -> None:
    common.remove_db(target)
    shutil.copyfile(source, target)
    audit = source.with_name(f"{source.stem}.audit{source.suffix}")
    if audit.exists():
        shutil.copyfile(audit, target.with_name(f"{target.stem}.audit{target.suffix}"))


def verdict_rate(rate: float) -> str:
    if rate >= TARGET_ROWS_PER_S:
        return "met"
    return f"missed: {TARGET_ROWS_PER_S / rate:.1f}x too slow"


def verdict_rss(kib: int) -> str:
    mib = kib / 1024
    return "met" if mib < TARGET_RSS_MIB else f"missed by {mib - TARGET_RSS_MIB:.0f} MiB"


# -- 1. throughput and memory --------------------------------------------------------------------------------


@dataclass
class ImportRun:
    size: int
    which: str
    measured: Measured
    sizes: dict[str, int]

    @property
    def rate(self) -> float:
        return self.size / self.measured.wall


def run_import(setup: Setup, db: Path, file: common.RpoFile, days_ago: int, which: str) -> ImportRun:
    log.info("importing %s (%s) into %s", file.path.name, which, db.name)
    measured = common.run_measured(import_command(setup, db, file.path, days_ago), env=setup.env)
    if "stored" not in measured.stdout:
        raise RuntimeError(f"unexpected import output: {measured.stdout!r}")
    # Every row lands: an answer file of valid numbers is never rejected, whole or in part.
    if f"{file.rows} row(s) read, " not in measured.stdout or " stored, 0 rejected" not in measured.stdout:
        raise RuntimeError(f"{file.path.name} did not land whole: {measured.stdout!r}")
    return ImportRun(file.rows, which, measured, common.file_sizes(db))


def report_coverage(report: Report, file: common.RpoFile) -> None:
    """What a numbering-plan file spans: every mobile prefix 310-399 at its lengths, fixed numbers 6-11."""
    mobiles = sorted({key.split()[1].split("/")[0] for key in file.coverage if key.startswith("mobile")})
    by_length = collections.Counter[str]()
    for key, rows in file.coverage.items():
        kind, what = key.split()
        by_length[f"{kind} {what.split('/')[-1]} digits"] += rows
    report.add(f"Numbering-plan file: {len(mobiles)} mobile prefixes ({mobiles[0]}-{mobiles[-1]}); rows by kind and "
               "national length: " + ", ".join(f"{k} {v:,}" for k, v in sorted(by_length.items())) +
               ". Written national (70%), +39 (15%), 0039 (5%) and 39 without + (10%, where that still reads "
               "as the same number).")
    report.add()


def throughput(setup: Setup, report: Report, sizes: list[int], gate_size: int | None,
               second: bool, plan: bool = False) -> dict[int, Path]:
    """Imports every size; returns {size: snapshot of the database after its first import} for the gate."""
    report.add("## 1. Import throughput and peak memory")
    report.add()
    files = {}
    for size in sizes:
        for month in (1, 2) if second or size == gate_size else (1,):
            files[size, month] = common.rpo_answers_file(size, month, plan=plan)
    if plan:
        report_coverage(report, files[sizes[0], 1])
    report.table(["file", "rows", "registered", "size", "generated in", "phonenumbers check"],
                 [[f.path.name, f"{f.rows:,}", f"{f.registered / f.rows:.1%}", common.human_bytes(f.size),
                   f"{f.seconds:.0f} s" if f.seconds else "cached",
                   f"{f.checked_valid:,}/{f.checked_sample:,} valid"] for f in files.values()], "llrrrr")

    # The fixed cost of a run: interpreter, imports, opening and migrating the files, one row.
    tiny_file = setup.folder / "rpo-1row.csv"
    tiny_file.write_text("numero,esito,data_iscrizione\n3331234567,not_registered,\n")
    tiny_db = setup.folder / "tiny.db"
    fresh_db(setup, tiny_db)
    tiny = common.run_measured(import_command(setup, tiny_db, tiny_file, FIRST_CHECK_DAYS_AGO), env=setup.env)
    common.remove_db(tiny_db)

    runs: list[ImportRun] = []
    snapshots: dict[int, Path] = {}
    for size in sizes:
        db = setup.folder / f"throughput-{short(size)}.db"
        fresh_db(setup, db)
        runs.append(run_import(setup, db, files[size, 1], FIRST_CHECK_DAYS_AGO, "first, fresh db"))
        if size == gate_size:
            snapshot = setup.folder / f"gate-base-{short(size)}.db"
            copy_db(db, snapshot)
            snapshots[size] = snapshot
        if second:
            runs.append(run_import(setup, db, files[size, 2], SECOND_CHECK_DAYS_AGO, "second, newer file"))
        common.remove_db(db)

    rows = []
    for run in runs:
        m = run.measured
        rows.append([short(run.size), run.which, f"{m.wall:.1f}", f"{run.rate:,.0f}", f"{m.cpu:.1f}",
                     f"{m.cpu / run.size * 1e6:.1f}", f"{m.cpu / m.wall:.0%}", f"{m.max_rss_kib / 1024:.0f}",
                     common.human_bytes(run.sizes["db"]),
                     f"{run.sizes['db'] / max(run.size, 1):.0f}", verdict_rate(run.rate),
                     verdict_rss(m.max_rss_kib)])
    report.table(["rows", "import", "wall s", "rows/s", "CPU s", "CPU µs/row", "CPU/wall", "peak RSS MiB",
                  "db after", "db bytes/row", "500k rows/s", "< 300 MiB"], rows, "llrrrrrrrrll")
    report.add(f"Fixed cost of one run (start-up, open, migrate, 1 row): {tiny.wall:.2f} s wall, "
               f"{tiny.max_rss_kib / 1024:.0f} MiB peak RSS. Rows/s count every row of the file over the "
               "whole command, start-up included. CPU/wall above 100% means the parsing thread and "
               "SQLite's thread overlapped; well under 100% means waiting (disk, or other processes on a "
               "busy machine). CPU µs/row depends less on other processes than wall time does.")
    report.add()
    for run in runs:
        if run.measured.rss_samples:
            timeline = ", ".join(f"{t:.0f}s {kib / 1024:.0f}"
                                 for t, kib in common.rss_at_fraction(run.measured.rss_samples, run.measured.wall))
            report.add(f"- RSS timeline (MiB) {short(run.size)} {run.which}: {timeline}")
    report.add()
    return snapshots


# -- 2. gate latency during an import ----------------------------------------------------------------------


@dataclass
class Sample:
    scheduled: float
    started: float
    ended: float
    outcome: str
    decision: str

    @property
    def latency_ms(self) -> float:
        return (self.ended - self.started) * 1000


def read_samples(path: Path) -> list[Sample]:
    samples = []
    with path.open(encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            scheduled, started, ended, outcome, decision = line.rstrip("\n").split(",", 4)
            samples.append(Sample(float(scheduled), float(started), float(ended), outcome, decision))
    return samples


def latency_row(name: str, samples: list[Sample], seconds: float) -> list[object]:
    ok = sorted(s.latency_ms for s in samples if s.outcome == "ok")
    bad = collections.Counter(s.outcome for s in samples if s.outcome != "ok")
    lag = sorted((s.started - s.scheduled) * 1000 for s in samples)
    return [name, len(samples), f"{len(samples) / max(seconds, 1e-9):.0f}", f"{percentile(ok, 0.5):.2f}",
            f"{percentile(ok, 0.9):.2f}", f"{percentile(ok, 0.99):.2f}", f"{percentile(ok, 0.999):.2f}",
            f"{ok[-1]:.2f}" if ok else "-", ", ".join(f"{k} {v}" for k, v in bad.items()) or "none",
            f"{percentile(lag, 0.99):.2f}"]


LATENCY_HEADERS = ["phase", "sessions", "per s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms",
                   "failed sessions", "client lag p99 ms"]


def gate_latency(setup: Setup, report: Report, size: int, snapshot: Path, rate: float, window: float,
                 nice: int) -> None:
    niced = f", the import under `nice -n {nice}`" if nice else ""
    report.add(f"## 2. Gate latency during an import ({short(size)} answers in the database, "
               f"{short(size)} more imported{niced})")
    report.add()
    db = setup.folder / f"gate-{short(size)}.db"
    copy_db(snapshot, db)
    newer = common.rpo_answers_file(size, 2)
    numbers_file = setup.folder / f"gate-numbers-{short(size)}.txt"
    numbers_file.write_text("\n".join(common.sample_numbers(common.rpo_answers_file(size, 1).path, 5_000)) + "\n")
    port = common.free_port()
    serve_log = (setup.folder / "gate-serve.log").open("wb")
    serve = subprocess.Popen(setup.cli(db, "serve", "--port", str(port)), env=setup.env, stdout=serve_log,
                             stderr=subprocess.STDOUT)
    results = setup.folder / f"gate-sessions-{short(size)}.csv"
    client: subprocess.Popen[bytes] | None = None
    warmup = 3.0
    try:
        common.wait_for_port(port, serve)
        client = subprocess.Popen([setup.python, str(Path(__file__).with_name("fastagi_load.py")), "--port",
                                   str(port), "--numbers", str(numbers_file), "--campaign", CAMPAIGN,
                                   "--rate", str(rate), "--out", str(results)])
        client_started = time.monotonic()
        time.sleep(warmup + window)
        log.info("gate: importing %s while the gate serves %s sessions/s", newer.path.name, rate)
        command = import_command(setup, db, newer.path, SECOND_CHECK_DAYS_AGO)
        run = common.run_measured(["nice", "-n", str(nice), *command] if nice else command, env=setup.env)
        time.sleep(window)
        serve_hwm = common.proc_status_kib(serve.pid, "VmHWM") or 0
        client.send_signal(signal.SIGTERM)
        client.wait(timeout=60)
        client_stopped = time.monotonic()
    finally:
        if client is not None and client.poll() is None:
            client.kill()
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serve.kill()
        serve_log.close()

    samples = read_samples(results)
    measured_from = client_started + warmup
    before = [s for s in samples if measured_from <= s.scheduled < run.started_at]
    during = [s for s in samples if run.started_at <= s.scheduled < run.ended_at]
    after = [s for s in samples if s.scheduled >= run.ended_at]
    report.add(f"Client: {rate:.0f} sessions/s (bench/fastagi_load.py, asyncio streams, new connection per "
               f"session, open-loop schedule); first {warmup:.0f} s dropped as warm-up. The import under load "
               f"took {run.wall:.1f} s ({size / run.wall:,.0f} rows/s, peak RSS "
               f"{run.max_rss_kib / 1024:.0f} MiB); the gate's own peak RSS was {serve_hwm / 1024:.0f} MiB (it counts "
               "the pages of the memory-mapped database the gate touched: file-backed, not heap).")
    report.add()
    report.table(LATENCY_HEADERS, [
        latency_row("before the import", before, run.started_at - measured_from),
        latency_row("during the import", during, run.wall),
        latency_row("after the import", after, client_stopped - run.ended_at),
    ], "lrrrrrrrlr")
    p99 = percentile(sorted(s.latency_ms for s in during if s.outcome == "ok"), 0.99)
    met = p99 < TARGET_P99_MS
    report.add(f"Target p99 < {TARGET_P99_MS:.0f} ms during the import: "
               f"{'met' if met else f'missed by {p99 - TARGET_P99_MS:.2f} ms ({p99 / TARGET_P99_MS:.1f}x)'}.")
    report.add()

    # Along the import: does latency follow the parsing, the sort, the insert or the commit?
    report.add("Along the import (tenths of its wall time):")
    report.add()
    rows = []
    tenth = run.wall / 10
    for index in range(10):
        lo = run.started_at + index * tenth
        part = [s for s in during if lo <= s.scheduled < lo + tenth]
        row = latency_row(f"{index * 10}-{index * 10 + 10}%", part, tenth)
        rows.append([row[0], row[1], row[3], row[5], row[7], row[8]])
    report.table(["import time", "sessions", "p50 ms", "p99 ms", "max ms", "failed sessions"], rows, "lrrrrl")
    slowest = sorted(during, key=lambda s: -s.latency_ms if s.outcome == "ok" else -1e9)[:5]
    report.add("Slowest sessions during the import: " + ", ".join(
        f"{s.latency_ms:.1f} ms at +{s.scheduled - run.started_at:.1f} s" for s in slowest) + ".")
    failed = [s for s in samples if s.outcome != "ok" and s.scheduled >= measured_from]
    if failed:
        report.add(f"Failed sessions: {len(failed)}; first ones: " + ", ".join(
            f"{s.outcome} at {s.scheduled - run.started_at:+.1f} s from the import's start" for s in failed[:10]))
    report.add(f"Decisions: {dict(collections.Counter(s.decision for s in samples if s.outcome == 'ok'))}.")
    report.add()
    common.remove_db(db)


# -- 3. profile ------------------------------------------------------------------------------------------------

# (category, does this frame belong to it), tried from the innermost frame outwards: the first frame that
# matches names the sample's category. Order matters only within one frame.
CATEGORIES: list[tuple[str, Callable[[str, str], bool]]] = [
    ("file fingerprint (SHA-256 of the whole file)", lambda n, f: n == "fingerprint"),
    ("normalising numbers (normalize_for_import)", lambda n, f: n.startswith(("normalize", "_fast_"))),
    ("status and date parsing", lambda n, f: n in ("parse_status", "parse_time")),
    ("CSV reading (csv.reader, strip, per-cell checks)", lambda n, f: n.startswith("read_rows")),
    ("answer tuples for executemany (rows())", lambda n, f: "import_rpo.<locals>.rows" in n),
    ("RpoAnswer objects and the per-row loop", lambda n, f: n == "answers_from_csv"),
    ("batching (_batches, islice)", lambda n, f: n == "_batches"),
    ("overlap bookkeeping (_overlapped, awaiting SQLite)", lambda n, f: n == "_overlapped"),
    ("opening and migrating the database", lambda n, f: n in ("_prepare_file", "open", "_connect")),
    ("start-up (imports of modules)", lambda n, f: f.startswith("<frozen importlib")),
    ("event loop", lambda n, f: "selector" in f or "base_events" in f),
]


def categorise(stack: list[dict[str, Any]]) -> str:
    for frame in reversed(stack):
        name, file = str(frame.get("name", "")), str(frame.get("file", ""))
        for category, matches in CATEGORIES:
            if matches(name, file):
                return category
    return "other"


def thread_label(name: str) -> str:
    """py-spy's thread names, said by what they do: SqliteStore connects the data writer first."""
    for worker, role in (("Thread-1 ", "data writer"), ("Thread-2 ", "audit writer"), ("Thread-3 ", "reader")):
        if worker in name:
            return f"aiosqlite {role}"
    return "main (event loop, parsing)" if '""' in name or "MainThread" in name else name[:40]


def summarise_speedscope(path: Path) -> list[tuple[str, str, float, float]]:
    """(thread, category, seconds, share of the thread's busy samples) from py-spy's speedscope file."""
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    out = []
    for profile in data["profiles"]:
        thread = profile.get("name", "?")
        totals: collections.Counter[str] = collections.Counter()
        for sample, weight in zip(profile["samples"], profile["weights"], strict=True):
            stack = [frames[i] for i in sample]
            if any(f["name"] == "_connection_worker_thread" for f in stack):
                # aiosqlite's thread: either blocked on its queue (no work) or inside a call into SQLite.
                leaf = stack[-1]
                waiting = leaf["name"] == "_connection_worker_thread" and ".get(" in linecache.getline(
                    leaf["file"], leaf["line"])
                if not waiting:  # py-spy counts a thread blocked on a queue as active: drop those samples
                    totals["SQLite statements (any)"] += weight
            else:
                totals[categorise(stack)] += weight
        total = sum(totals.values())
        if total < 0.05:
            continue
        for category, seconds in totals.most_common():
            out.append((thread, category, seconds, seconds / total))
    return out


def phase_child(db: str, file: str, checked: str, out: str) -> None:
    """Run one RPO import in this process, timing each SQL statement in aiosqlite's thread and the time
    spent reading and normalising rows; the checkpoint is taken out of COMMIT (wal_autocheckpoint = 0,
    then an explicit PASSIVE checkpoint, the same work the automatic one does) so the two are seen apart."""
    import aiosqlite  # noqa: PLC0415 - only this child needs rpoguard's internals

    from rpoguard.db.sqlite import SqliteStore  # noqa: PLC0415
    from rpoguard.ingest import registry  # noqa: PLC0415
    from rpoguard.timeutil import parse_time  # noqa: PLC0415

    events: list[tuple[str, float, float]] = []
    original_execute = aiosqlite.Connection._execute

    async def timed_execute(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        label = " ".join(str(args[0]).split())[:48] if args and isinstance(args[0], str) else str(fn)

        def run() -> Any:
            begun = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                events.append((label, begun, time.perf_counter()))

        return await original_execute(self, run)

    aiosqlite.Connection._execute = timed_execute  # type: ignore[method-assign]
    parse_seconds = [0.0]
    original_answers = registry.answers_from_csv

    def timed_answers(*args: Any, **kwargs: Any) -> Iterator[Any]:
        rows = original_answers(*args, **kwargs)
        while True:
            begun = time.perf_counter()
            try:
                answer = next(rows)
            except StopIteration:
                parse_seconds[0] += time.perf_counter() - begun
                return
            parse_seconds[0] += time.perf_counter() - begun
            yield answer

    registry.answers_from_csv = timed_answers  # type: ignore[assignment]
    original_fingerprint = registry.fingerprint
    fingerprint_seconds = [0.0]

    def timed_fingerprint(path: Any) -> Any:
        begun = time.perf_counter()
        try:
            return original_fingerprint(path)
        finally:
            fingerprint_seconds[0] += time.perf_counter() - begun

    registry.fingerprint = timed_fingerprint  # type: ignore[assignment]

    async def main() -> dict[str, Any]:
        store = SqliteStore(db)
        await store.open()
        await store.db.execute("PRAGMA wal_autocheckpoint = 0")
        # RPO answers belong to a principal (the one that consulted the RPO).
        await store.add_principal("bench", "Bench", [])
        del events[:]
        begun = time.perf_counter()
        summary, _ = await registry.import_csv(store, file, parse_time(checked), "bench", False)
        ended = time.perf_counter()
        await store.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        checkpointed = time.perf_counter()
        wal_bytes = common.file_sizes(Path(db))["wal"]
        await store.close()
        return {"rows": summary.rows_read, "begun": begun, "ended": ended, "checkpointed": checkpointed,
                "parse": parse_seconds[0], "fingerprint": fingerprint_seconds[0], "events": events,
                "wal_bytes": wal_bytes}

    Path(out).write_text(json.dumps(asyncio.run(main())))


PHASES = [
    ("stage rows: INSERT INTO staged_rpo (executemany, SQLite thread)", "INSERT INTO staged_rpo"),
    ("GROUP BY number into temp.grouped_rpo (sort)", "CREATE TEMP TABLE grouped_rpo"),
    ("INSERT INTO rpo_results ... ORDER BY rowid (table + unique index)", "INSERT INTO rpo_results"),
    ("count(*), sum(registered) over grouped_rpo", "SELECT count(*), coalesce(sum(registered)"),
    ("DROP / DELETE of the temp tables", ("DROP TABLE", "DELETE FROM staged_rpo")),
    ("COMMIT (WAL fsync)", "COMMIT"),
    ("checkpoint of the WAL into the data file", "PRAGMA wal_checkpoint"),
]


def phase_rows(data: dict[str, Any], size: int) -> list[tuple[str, float, float | None]]:
    """(phase, seconds, share of the total or None for an 'of which' line) from a phase child's output."""
    events = [(label, begun, ended) for label, begun, ended in data["events"] if data["begun"] <= begun]
    total = data["checkpointed"] - data["begun"]
    first_group = min((b for label, b, _ in events if label.startswith("CREATE TEMP TABLE grouped_rpo")),
                      default=data["ended"])
    staging_wall = first_group - data["begun"]
    rows: list[tuple[str, float, float | None]] = [
        ("reading + staging, overlapped (wall)", staging_wall, staging_wall / total),
        ("  of which SHA-256 fingerprint of the file (main thread, first)", data["fingerprint"], None),
        ("  of which reading + normalising rows (main thread, busy)", data["parse"], None),
    ]
    accounted = staging_wall
    for name, prefix in PHASES:
        seconds = sum(e - b for label, b, e in events if label.startswith(prefix))
        if prefix == "INSERT INTO staged_rpo":
            rows.append((f"  of which {name}", seconds, None))
            continue
        accounted += seconds
        rows.append((name, seconds, seconds / total))
    rows.append(("other (Python between statements, small statements)", total - accounted,
                 (total - accounted) / total))
    rows.append(("**total: import_csv + checkpoint**", total, 1.0))
    return rows


def profile(setup: Setup, report: Report, size: int) -> None:
    report.add(f"## 3. Where the time goes ({short(size)}-row import)")
    report.add()
    db = setup.folder / "profile.db"

    # a. Statement by statement, in-process: the first import into a fresh database, then the newer file.
    fresh_db(setup, db)
    columns = []
    for month, days_ago in ((1, FIRST_CHECK_DAYS_AGO), (2, SECOND_CHECK_DAYS_AGO)):
        out = setup.folder / f"phases-m{month}.json"
        child = [setup.python, __file__, "--phases-child", str(db), str(common.rpo_answers_file(size, month).path),
                 common.days_ago(days_ago), str(out)]
        measured = common.run_measured(child, env=setup.env)
        columns.append((phase_rows(json.loads(out.read_text()), size), measured,
                        json.loads(out.read_text())))
    rows = []
    for index, (name, *_) in enumerate(columns[0][0]):
        row: list[object] = [name]
        for phases, _, _ in columns:
            _, seconds, share = phases[index]
            row += [f"{seconds:.2f}", f"{seconds / size * 1e6:.2f}", "" if share is None else f"{share:.0%}"]
        rows.append(row)
    report.add("a. Statement by statement: the same code in a child process, aiosqlite's calls timed in its "
               "thread, the checkpoint taken out of COMMIT (wal_autocheckpoint = 0, then an explicit "
               f"checkpoint). First: {short(size)} rows into a fresh database; second: the newer file into it. "
               + "; ".join(f"{label} import: WAL {common.human_bytes(data['wal_bytes'])} before the checkpoint, "
                           f"child wall {measured.wall:.1f} s incl. start-up"
                           for label, (_, measured, data) in zip(("first", "second"), columns, strict=True)) + ".")
    report.add()
    report.table(["phase", "first s", "µs/row", "share", "second s", "µs/row", "share"], rows, "lrrrrrr")
    common.remove_db(db)

    # b. py-spy of the real command.
    try:
        py_spy = common.venv_bin("py-spy")
    except FileNotFoundError:
        report.add("b. py-spy is not installed (`.venv/bin/pip install py-spy`): no sampled profile.")
        report.add()
        common.remove_db(db)
        return
    fresh_db(setup, db)
    file = common.rpo_answers_file(size, 1)
    speedscope = setup.folder / f"profile-{short(size)}.speedscope.json"
    command = [py_spy, "record", "--rate", "250", "--threads", "--format", "speedscope",
               "--output", str(speedscope), "--", *import_command(setup, db, file.path, FIRST_CHECK_DAYS_AGO)]
    spied = common.run_measured(command, env=setup.env, check=False)
    common.remove_db(db)
    if spied.returncode != 0 or not speedscope.exists():
        report.add(f"b. py-spy failed ({spied.returncode}): {spied.stderr.strip()[-400:]}")
        report.add()
        return
    report.add(f"b. py-spy samples of `rpoguard registry import` (250 Hz; wall {spied.wall:.1f} s "
               f"under the profiler; open {speedscope} in https://www.speedscope.app):")
    report.add()
    rows = [[thread_label(thread), category, f"{seconds:.2f}",
             f"{share:.0%}"] for thread, category, seconds, share in summarise_speedscope(speedscope) if share >= 0.01]
    report.table(["thread", "what", "seconds", "share of thread"], rows, "llrr")


# -- main ------------------------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--phases-child":
        phase_child(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--sizes", type=lambda t: [parse_count(x) for x in t.split(",")],
                        help="row counts to import, e.g. 1M,10M (default: by mode)")
    parser.add_argument("--gate-size", type=parse_count, help="answers in the gate's database (default: by mode)")
    parser.add_argument("--rate", type=float, default=200.0, help="gate sessions per second (default 200)")
    parser.add_argument("--window", type=float, help="seconds of gate traffic before and after the import")
    parser.add_argument("--profile-size", type=parse_count, default=1_000_000)
    parser.add_argument("--skip-second", action="store_true", help="no second (newer file) import")
    parser.add_argument("--skip-throughput", action="store_true",
                        help="only prepare (unmeasured) the database the gate benchmark needs")
    parser.add_argument("--nice", type=int, default=0, help="run the import under the gate with nice -n N")
    parser.add_argument("--skip-gate", action="store_true")
    parser.add_argument("--numbering-plan", action="store_true",
                        help="answer files spanning the whole national plan (every mobile prefix 310-399, fixed "
                             "numbers of 6-11 digits, every written form) instead of the usual mix")
    parser.add_argument("--skip-profile", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    mode = MODES[args.mode]
    sizes: list[int] = args.sizes or list(mode.sizes)
    gate_size = None if args.skip_gate else (args.gate_size or mode.gate_size)
    if gate_size is not None and gate_size not in sizes:
        sizes = sorted({*sizes, gate_size})
    window = args.window or mode.window

    folder = common.bench_dir()
    config = common.empty_config(folder)
    setup = Setup(folder, config, common.rpoguard_env(config), common.venv_bin("rpoguard"), sys.executable)
    report = Report()
    started = time.monotonic()
    report.add(f"# rpoguard import benchmark ({args.mode}), {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    report.add()
    report.add(f"Command: `{shlex.join([os.path.relpath(sys.executable), *sys.argv])}`")
    report.add()
    load = os.getloadavg()
    report.table(["machine", ""], [*common.machine_description(),
                                   ("load average at start", f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")], "ll")

    if args.skip_throughput:
        snapshots = {}
        if gate_size is not None:
            snapshots[gate_size] = setup.folder / f"gate-base-{short(gate_size)}.db"
            fresh_db(setup, snapshots[gate_size])
            run_import(setup, snapshots[gate_size], common.rpo_answers_file(gate_size, 1), FIRST_CHECK_DAYS_AGO,
                       "gate base")
    else:
        snapshots = throughput(setup, report, sizes, gate_size, not args.skip_second, args.numbering_plan)
    if gate_size is not None:
        gate_latency(setup, report, gate_size, snapshots[gate_size], args.rate, window, args.nice)
    if not args.skip_profile:
        profile(setup, report, args.profile_size)
    for snapshot in snapshots.values():
        common.remove_db(snapshot)
    load = os.getloadavg()
    report.add(f"Benchmark wall time: {(time.monotonic() - started) / 60:.1f} min; load average at the end "
               f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (above the core count: other processes competed).")
    saved = folder / f"import-{args.mode}-{datetime.now():%Y%m%d-%H%M%S}.md"
    saved.write_text(report.text())
    print(f"\n(saved to {saved})")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
