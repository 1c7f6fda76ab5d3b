"""The gate on PostgreSQL beside SQLite: decisions per second and latency with one and two `rpoguard serve`
processes on one PostgreSQL database, next to one process on SQLite, on the same store and the same load.

    python bench/bench_pg.py                        # 200,000 numbers; about 3 minutes
    python bench/bench_pg.py --size 1000000 --rounds 3 --duration 15

1. The store is built as bench_gate.py builds it (SQLite, through the store's imports), then copied into
   PostgreSQL with `rpoguard db copy` (timed: the move an operator makes when they outgrow SQLite).
2. PostgreSQL is a throwaway cluster on loopback (scripts/pg-throwaway), fsync ON: a decision is answered
   after its durable commit, as in production. SQLite runs with synchronous=FULL as shipped.
3. bench/loadgen.py's C generator plays Asterisk: closed loop (N sessions in flight: decisions/s at
   saturation) and open loop (a fixed arrival rate: latency from the scheduled start). For two servers,
   two generators run at once, each with half the load, one towards each server; their figures are
   added (rate) and pooled (latencies).
4. Every decision is checked against the audit log afterwards, and `rpoguard audit verify` must prove the
   PostgreSQL chain written by both processes.

The machine has 2 cores: PostgreSQL, the servers and the generators share them, so two servers cannot
double the throughput here; the figures say what one database serving several PBXs costs per decision.
Nothing here asserts a timing: it prints what it measured, as markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import loadgen
from bench_gate import (
    Server,
    audit_rows,
    machine_state,
    proc_cpu_s,
    start_server,
)
from benchstore import build_store, call_time, draw_numbers
from common import (
    bench_dir,
    empty_config,
    free_port,
    machine_description,
    markdown_table,
    percentile,
    rpoguard_env,
    venv_bin,
)

REPO = Path(__file__).resolve().parents[1]


def out(text: str = "") -> None:
    print(text, flush=True)


def start_cluster(folder: Path) -> str:
    done = subprocess.run([str(REPO / "scripts" / "pg-throwaway"), "start", str(folder)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"cannot start PostgreSQL: {done.stderr.strip()}")
    return done.stdout.strip()


def stop_cluster(folder: Path) -> None:
    subprocess.run([str(REPO / "scripts" / "pg-throwaway"), "stop", str(folder)], check=False)


async def create_database(admin_url: str, name: str) -> str:
    import asyncpg  # noqa: PLC0415

    con = await asyncpg.connect(admin_url)
    try:
        await con.execute(f"DROP DATABASE IF EXISTS {name}")
        await con.execute(f"CREATE DATABASE {name}")
    finally:
        await con.close()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


async def pg_audit_rows(url: str) -> int:
    import asyncpg  # noqa: PLC0415

    con = await asyncpg.connect(url)
    try:
        return int(await con.fetchval("SELECT count(*) FROM audit_log"))
    finally:
        await con.close()


class Setup:
    """One or more servers measured together: their load is split evenly between them."""

    def __init__(self, name: str, servers: list[Server]) -> None:
        self.name = name
        self.servers = servers


def drive_setup(binary: Path, setup: Setup, numbers: Path, folder: Path, *, concurrency: int = 0,
                rate: float = 0.0, duration: float, warmup: float) -> dict[str, object]:
    share = len(setup.servers)
    results: list[loadgen.LoadResult | None] = [None] * share
    cpu_before = [proc_cpu_s(s.proc.pid) for s in setup.servers]

    def one(i: int) -> None:
        server = setup.servers[i]
        results[i] = loadgen.run_fastagi(binary, port=server.port, numbers=numbers, template=server.template,
                                         workdir=folder, concurrency=max(1, concurrency // share) if concurrency
                                         else 0, rate=rate / share, duration=duration, warmup=warmup,
                                         label=f"{setup.name}-{i}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(share)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done = [r for r in results if r is not None]
    cpu = sum(proc_cpu_s(s.proc.pid) - b for s, b in zip(setup.servers, cpu_before, strict=True))
    latencies = sorted(v for r in done for v in (r.service_ns if concurrency else r.latencies_ns))
    completed = sum(r.completed for r in done)
    return {
        "rate": sum(r.rate for r in done), "latencies": latencies, "errors": sum(r.errors for r in done),
        "allow": sum(r.allow for r in done), "block": sum(r.block for r in done),
        "no_decision": sum(r.no_decision for r in done), "with_id": sum(r.with_id for r in done),
        "cpu_us": cpu / max(sum(r.total for r in done), 1) * 1e6, "completed": completed,
    }


def ms(values: Sequence[int], q: float) -> str:
    return f"{percentile(values, q) / 1e6:.2f}"


def table(title: str, runs: dict[str, list[dict[str, object]]], closed: bool) -> None:
    out(f"### {title}")
    out(machine_state())
    out()
    rows = []
    for name, group in runs.items():
        lat = sorted(v for r in group for v in r["latencies"])  # type: ignore[attr-defined]
        rates = [float(r["rate"]) for r in group]  # type: ignore[arg-type]
        rows.append([name, f"{statistics.median(rates):,.0f}", ", ".join(f"{x:,.0f}" for x in rates), ms(lat, 0.5),
                     ms(lat, 0.99), ms(lat, 0.999),
                     f"{statistics.median(float(r['cpu_us']) for r in group):.0f}",  # type: ignore[arg-type]
                     str(sum(int(r["errors"]) for r in group))])  # type: ignore[call-overload]
    out(markdown_table(["setup", "decisions/s (median)", "each round", "p50 ms", "p99 ms", "p99.9 ms",
                        "server CPU µs/decision (all servers)", "errors"], rows, "lrrrrrrr"))
    out()
    if closed:
        out("Closed loop: latency is per session at saturation (connect to close).")
    else:
        out("Open loop: latency from each call's scheduled start, so a queue in the server is not hidden.")
    out()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=200_000, help="numbers in the store (default 200,000)")
    parser.add_argument("--concurrency", type=int, default=32, help="closed loop: sessions in flight in all")
    parser.add_argument("--rate", type=float, default=300.0, help="open loop: calls per second in all")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    folder = bench_dir() / "pg"
    folder.mkdir(parents=True, exist_ok=True)
    env = rpoguard_env(empty_config(folder))
    out("# rpoguard on PostgreSQL beside SQLite")
    out()
    out(markdown_table(["", ""], machine_description(), "ll"))
    out()
    out(f"Command: `{' '.join(sys.argv)}`")
    out()
    at = call_time()
    sqlite_path = folder / "bench-pg.db"
    store = build_store(sqlite_path, args.size, at, env)
    out(f"Store: {store.rows['rpo_results']:,} RPO answers, {store.rows['listings']:,} listings, "
        f"{store.rows['consents']:,} consents (SQLite, built in {store.build_s:.1f} s).")
    cluster = Path(tempfile.mkdtemp(prefix="rpoguard-bench-pg-"))
    cluster.rmdir()
    servers: list[Server] = []
    try:
        admin = start_cluster(cluster)
        pg_url = asyncio.run(create_database(admin, "rpoguard_bench"))
        started = time.perf_counter()
        subprocess.run([venv_bin("rpoguard"), "db", "copy", "--from", str(sqlite_path), "--to", pg_url], env=env,
                       check=True, capture_output=True)
        out(f"`rpoguard db copy` SQLite -> PostgreSQL: {time.perf_counter() - started:.1f} s for the whole store.")
        out()
        binary = loadgen.build(folder)
        numbers = draw_numbers(store.layout, 50_000, seed=11)
        numbers_path = folder / "pg-numbers.txt"
        numbers_path.write_text("\n".join(numbers) + "\n")

        def serve(name: str, db: str) -> Server:
            port = free_port()
            server = start_server(name, [venv_bin("rpoguard"), "serve", "--port", str(port)], port,
                                  dict(env, RPOGUARD_DB=db), folder, numbers_path)
            servers.append(server)
            return server

        setups = [
            Setup("SQLite, 1 serve", [serve("sqlite", str(sqlite_path))]),
            Setup("PostgreSQL, 1 serve", [serve("pg-1", pg_url)]),
            Setup("PostgreSQL, 2 serve", [serve("pg-2a", pg_url), serve("pg-2b", pg_url)]),
        ]
        sqlite_before = audit_rows(sqlite_path)
        pg_before = asyncio.run(pg_audit_rows(pg_url))
        closed: dict[str, list[dict[str, object]]] = {s.name: [] for s in setups}
        opened: dict[str, list[dict[str, object]]] = {s.name: [] for s in setups}
        for round_no in range(args.rounds):
            order = setups[round_no % len(setups):] + setups[:round_no % len(setups)]
            for setup in order:
                closed[setup.name].append(drive_setup(binary, setup, numbers_path, folder,
                                                      concurrency=args.concurrency, duration=args.duration,
                                                      warmup=args.warmup))
            for setup in order:
                opened[setup.name].append(drive_setup(binary, setup, numbers_path, folder, rate=args.rate,
                                                      duration=args.duration, warmup=args.warmup))
        out(f"## Closed loop, {args.concurrency} sessions in flight in all, {args.rounds} interleaved rounds of "
            f"{args.duration:g} s")
        table("decisions per second at saturation", closed, closed=True)
        out(f"## Open loop, {args.rate:g} calls/s in all")
        table("latency at a fixed arrival rate", opened, closed=False)

        for s in servers:
            s.stop()
        sqlite_added = audit_rows(sqlite_path) - sqlite_before
        pg_added = asyncio.run(pg_audit_rows(pg_url)) - pg_before
        for name, db, added in (("SQLite", str(sqlite_path), sqlite_added), ("PostgreSQL", pg_url, pg_added)):
            decided = sum(int(r["allow"]) + int(r["block"]) for group in (closed, opened)  # type: ignore[call-overload]
                          for key, runs in group.items() if key.startswith(name) for r in runs)
            missing = sum(int(r["no_decision"]) for group in (closed, opened)  # type: ignore[call-overload]
                          for key, runs in group.items() if key.startswith(name) for r in runs)
            verify = subprocess.run([venv_bin("rpoguard"), "--db", db, "audit", "verify"], env=env,
                                    capture_output=True, text=True, check=False)
            first = verify.stdout.splitlines()[0] if verify.stdout else verify.stderr.strip()
            out(f"- {name}: {decided:,} measured decisions ({missing:,} sessions without one); the audit log grew by "
                f"{added:,} rows (warm-ups and drains included); `audit verify`: {first}")
    finally:
        for s in servers:
            s.stop()
        stop_cluster(cluster)


if __name__ == "__main__":
    main()
