"""`rpoguard reconcile` over a large CDR file: rows per second, wall time and peak memory, and a check that it
found exactly the bypasses planted (a benchmark that counts wrong is worthless).

    python bench/bench_reconcile.py                 # 1,000,000 rows; a few minutes with the store's build
    python bench/bench_reconcile.py --quick         # 3,000 rows: the smoke run

1. A store (SQLite) gets one ALLOW decision per gated call through the Store API, as the gate writes them:
   the asking channel's uniqueid, the call's linkedid, the number, a moment shortly before the dial.
2. A cdr_csv Master.csv (loguniqueid, loguserfield and newcdrcolumns on, times in UTC) of `--rows` rows, in
   the order cdr_csv writes them: when each call ended. The mix: internal calls (no trunk), gated calls to
   the carrier (covered), a few long calls (their record comes hours after later calls), and planted
   bypasses: a call with no decision, a decision for another number, a second trunk dialled on one decision.
3. The real console script runs `reconcile --cdr FILE --json`; its own peak RSS (wait4) and wall time are
   reported, and its summary must name exactly the bypasses planted, by why. Exit 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import heapq
import json
import multiprocessing
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from common import bench_dir, human_bytes, machine_description, markdown_table, remove_db, run_measured, venv_bin

from rpoguard.audit import AuditEntry
from rpoguard.db import open_store

SECOND = 1_000_000
T0 = 1_795_000_000 * SECOND  # 2026-11-18 (UTC)
TRUNK_SHARE = 0.7  # rows that reached the carrier; the others are internal calls
LONG_PER_MILLE = 1  # calls of one to three hours: their record is written long after later calls
BATCH = 2_000  # decisions appended at once (the store's writer commits them in groups)
NO_DECISION, OTHER_NUMBER, DECISION_USED = "no_decision", "other_number", "decision_used"


@dataclass(frozen=True, slots=True)
class Call:
    start: int
    end: int
    row: list[str]


def _stamp(us: int) -> str:
    return datetime.fromtimestamp(us // SECOND, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _number(rng: random.Random) -> str:
    return f"+393{rng.randrange(20, 99):02d}{rng.randrange(10**7):07d}"


def _row(uid: str, linkedid: str, start: int, seconds: int, channel: str, dstchannel: str, lastdata: str,
         dst: str) -> list[str]:
    return ["", "0694801234", dst, "outbound", '"ACME" <0694801234>', channel, dstchannel, "Dial", lastdata,
            _stamp(start), _stamp(start + SECOND), _stamp(start + seconds * SECOND), str(seconds),
            str(max(seconds - 1, 0)), "ANSWERED", "DOCUMENTATION", uid, "bench", "", linkedid, "1"]


def generate(path: Path, rows: int, bypass_per_mille: int, seed: int
             ) -> tuple[list[tuple[str, int, str, str, str]], Counter[str]]:
    """The CDR file, in the order of the calls' ends; the decisions to store (id, time, number, uniqueid,
    linkedid) and the bypasses planted, by why."""
    rng = random.Random(seed)
    decisions: list[tuple[str, int, str, str, str]] = []
    planted: Counter[str] = Counter()
    ending: list[tuple[int, int, list[str]]] = []  # (end, tie-break, row): written once the clock passes it
    at = T0
    channel_seq = 0
    written = 0
    with path.open("w", newline="") as fh:
        out = csv.writer(fh, quoting=csv.QUOTE_ALL, lineterminator="\n")

        def flush(until: int) -> None:
            nonlocal written
            while ending and ending[0][0] <= until:
                out.writerow(heapq.heappop(ending)[2])
                written += 1

        i = 0
        while written + len(ending) < rows:
            i += 1
            at += rng.randrange(200_000, 1_600_000)
            flush(at)
            uid = f"{at // SECOND}.{i}"
            seconds = rng.randrange(3600, 10800) if rng.randrange(1000) < LONG_PER_MILLE else rng.randrange(5, 300)
            channel_seq += 1
            caller = f"Local/{i}@dialler-{channel_seq:08x};2"
            if rng.random() >= TRUNK_SHARE:
                row = _row(uid, uid, at, seconds, caller, f"PJSIP/agent{i % 50}-{channel_seq:08x}",
                           f"PJSIP/agent{i % 50},20", str(200 + i % 50))
                heapq.heappush(ending, (at + seconds * SECOND, i, row))
                continue
            number = _number(rng)
            kind = None
            if rng.randrange(1000) < bypass_per_mille:
                kind = (NO_DECISION, OTHER_NUMBER, DECISION_USED)[rng.randrange(3)]
            if kind != NO_DECISION:
                decided = number if kind != OTHER_NUMBER else _number(rng)
                decisions.append((f"d{i}", at + rng.randrange(50_000, 900_000), decided, uid, uid))
            if kind is not None:
                planted[kind] += 1
            dial_at = at + SECOND
            row = _row(uid, uid, at, seconds, caller, f"PJSIP/carrier-{channel_seq:08x}",
                       f"PJSIP/{number}@carrier,30,U(rpoguard)", number[3:])
            heapq.heappush(ending, (at + seconds * SECOND, i, row))
            if kind == DECISION_USED:  # the route dialled a second trunk on the one decision
                channel_seq += 1
                second = _row(uid, uid, dial_at, seconds, caller, f"PJSIP/carrier-{channel_seq:08x}",
                              f"PJSIP/{number}@carrier,30", number[3:])
                heapq.heappush(ending, (dial_at + seconds * SECOND, -i, second))
        flush(1 << 62)
    return decisions, planted


async def build_store(db: Path, decisions: list[tuple[str, int, str, str, str]]) -> None:
    remove_db(db)
    async with open_store(str(db), create=True) as store:
        await store.add_principal("acme", "ACME", ["+390694801234"])
        await store.add_campaign("bench", "acme", False, None, None)
        for start in range(0, len(decisions), BATCH):
            await asyncio.gather(*(store.append_decision(AuditEntry(
                decision_id, at, number, number[3:], "bench", "acme", "+390694801234", "allow", "", "listed", "{}",
                "fastagi", uniqueid, "Local/x@dialler", linkedid)) for decision_id, at, number, uniqueid, linkedid
                in decisions[start:start + BATCH]))


def _prepare(cdr: Path, db: Path, rows: int, bypass_per_mille: int, seed: int, report: Path) -> None:
    began = time.monotonic()
    decisions, planted = generate(cdr, rows, bypass_per_mille, seed)
    generated = time.monotonic() - began
    began = time.monotonic()
    asyncio.run(build_store(db, decisions))
    report.write_text(json.dumps({"planted": planted, "decisions": len(decisions), "generated": generated,
                                  "built": time.monotonic() - began}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="CDR rows (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="3,000 rows: the smoke run")
    parser.add_argument("--bypass-per-mille", type=int, default=2, help="trunk legs planted as bypasses (‰)")
    parser.add_argument("--seed", type=int, default=20261203)
    args = parser.parse_args()
    rows = 3_000 if args.quick else args.rows
    folder = bench_dir() / "reconcile"
    folder.mkdir(parents=True, exist_ok=True)
    cdr, db, config = folder / "Master.csv", folder / "reconcile.db", folder / "reconcile.toml"
    config.write_text('[watch]\ntrunks = ["PJSIP/carrier-*"]\n')

    print("# rpoguard reconcile over a CDR file\n", flush=True)
    # In a process of its own: the child forked to run reconcile would otherwise start with this one's pages
    # (the decisions), and wait4's peak RSS would count them.
    prepare = multiprocessing.get_context("spawn").Process(
        target=_prepare, args=(cdr, db, rows, max(args.bypass_per_mille, 1) if args.quick else args.bypass_per_mille,
                               args.seed, folder / "planted.json"))
    prepare.start()
    prepare.join()
    if prepare.exitcode != 0:
        print(f"building the file and the store failed (exit {prepare.exitcode})")
        return 1
    prepared = json.loads((folder / "planted.json").read_text())
    planted = Counter(prepared["planted"])
    print(f"CDR file: {rows:,} rows, {human_bytes(cdr.stat().st_size)} ({prepared['generated']:.1f} s); store: "
          f"{prepared['decisions']:,} ALLOW decisions ({prepared['built']:.1f} s)\n", flush=True)

    env = {"RPOGUARD_DB": str(db), "RPOGUARD_CONFIG": str(config), "PATH": str(Path(sys.executable).parent)}
    run = run_measured([venv_bin("rpoguard"), "reconcile", "--cdr", str(cdr), "--timezone", "UTC", "--json"],
                       env=env, check=False)
    lines = run.stdout.splitlines()
    summary = json.loads(lines[-1]) if lines else {}
    if run.returncode not in (0, 1) or summary.get("kind") != "summary":
        print(f"reconcile failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
        return 1
    found = Counter(summary["bypasses_by_why"])
    listed = Counter(json.loads(line)["why"] for line in lines[:-1])

    print("## Result\n")
    print(markdown_table(["rows", "trunk legs", "covered", "bypasses planted", "bypasses found", "wall", "rows/s",
                          "CPU", "peak RSS"],
                         [[f"{summary['records']:,}", f"{summary['trunk_legs']:,}", f"{summary['covered']:,}",
                           sum(planted.values()), summary["bypasses"], f"{run.wall:.1f} s",
                           f"{summary['records'] / run.wall:,.0f}", f"{run.cpu:.1f} s",
                           human_bytes(run.max_rss_kib * 1024)]]))
    print()
    print(markdown_table(["why", "planted", "found"],
                         [[why, planted[why], found[why]] for why in sorted(set(planted) | set(found))]))
    print()
    print(markdown_table(["machine", ""], machine_description()))
    print()
    problems = []
    if found != planted or listed != planted:
        problems.append(f"bypasses found {dict(found)} (listed {dict(listed)}), planted {dict(planted)}")
    if summary["records"] != rows or summary["unreadable"]:
        problems.append(f"records read {summary['records']} of {rows}, {summary['unreadable']} unreadable")
    if (run.returncode == 1) != bool(sum(planted.values())):
        problems.append(f"exit status {run.returncode} with {sum(planted.values())} bypass(es) planted")
    print(f"VERDICT: {'FAIL: ' + '; '.join(problems) if problems else 'PASS'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
