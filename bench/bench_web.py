"""The compliance console on a large store: p50/p95/p99 of each page with 10 M decisions and 30 M RPO answers.

    python bench/bench_web.py                       # 10 M decisions, 30 M answers, SQLite (a long build, once)
    python bench/bench_web.py --quick               # 1 M / 3 M
    python bench/bench_web.py --backend postgres --pg-url postgresql://USER:PASS@HOST/DB
    python bench/bench_web.py --decisions 2000 --answers 3000 --requests 3    # the smoke run

1. The store (cached under the bench folder by its parameters; built once): three principals with two
   campaigns each, their RPO answers through the store's own import (several files each, checked 2 to 20
   days ago, so that some answers are valid, some expire soon and some have expired), and the decision log
   over the last ~90 days, each row hash-chained with the log's own chain_hash (`rpoguard audit verify`
   passes on it).
2. With `rpoguard web` installed: the console is started on the store, a user logs in through the login
   form, and each page is requested N times one after the other. Without it (or with --store-only), the
   Store reads each page makes are timed directly, and the table says so.
3. p50/p95/p99 per page, printed as markdown (the 200 ms p95 target marked).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import (
    bench_dir,
    free_port,
    machine_description,
    markdown_table,
    percentile,
    remove_db,
    venv_bin,
    wait_for_port,
)

from rpoguard.audit import GENESIS_HASH, AuditEntry, canonical_evidence, chain_hash
from rpoguard.db import open_store
from rpoguard.db.store import DecisionFilter, ImportMeta, RpoAnswer, Store

SECOND = 1_000_000
DAY = 86_400 * SECOND
BUILD_VERSION = 1  # bump when what the build writes changes: a cached store of another version is rebuilt
PRINCIPALS = ("acme", "beta", "gamma")
CAMPAIGNS = tuple((f"{p}-{c}", p) for p in PRINCIPALS for c in ("spring", "autumn"))
# Check times of each principal's answer files, in days before the build: the first file answers for most
# numbers; later ones re-check slices of them (valid, expiring soon, expired on the page).
ANSWER_AGES_DAYS = (20, 12, 5, 2)
SPAN_DAYS = 90
BLOCK_REASONS = (("rpo_registered", 40), ("unlisted_no_consent", 25), ("rpo_expired", 10), ("outside_hours", 8),
                 ("attempt_limit", 7), ("rpo_registered,unlisted_no_consent", 6), ("caller_id_invalid", 3),
                 ("optout", 1))
TARGET_P95_MS = 200.0
SCAN_LIMIT = 20_000  # decision_search's budget in the Store-only figures
BATCH = 50_000


def _mix(value: int) -> int:
    value = (value * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    return value ^ (value >> 29)


def _number(g: int) -> str:
    """Number g of the benchmark's numbering: Italian mobiles, a pure function of g (no table held)."""
    prefixes = ("320", "328", "333", "338", "340", "347", "349", "366", "380", "393")
    return f"+39{prefixes[g % len(prefixes)]}{g // len(prefixes) + 1_000_000}"


def _blocks() -> list[tuple[str, int]]:
    weights: list[tuple[str, int]] = []
    for reasons, weight in BLOCK_REASONS:
        weights.extend([(reasons, 0)] * weight)
    return weights


# -- the store ---------------------------------------------------------------------------------------------


def store_key(backend: str, decisions: int, answers: int) -> str:
    return f"web-v{BUILD_VERSION}-{backend}-{decisions}d-{answers}a"


def answers_of(principal_index: int, per_principal: int, age_index: int) -> Iterator[RpoAnswer]:
    """The answers of one file: the first file covers every number; later ones a slice each."""
    if age_index == 0:
        numbers = range(per_principal)
    else:
        share = per_principal // 10
        numbers = range(share * (age_index - 1), share * age_index)
    for g in numbers:
        h = _mix(g * 7 + principal_index)
        yield RpoAnswer(_number(g), h % 1000 < 120)


async def fill_answers(store: Store, answers: int, at: datetime) -> int:
    """`answers` rows over PRINCIPALS through the store's own RPO import."""
    per_file_share = 1 + (len(ANSWER_AGES_DAYS) - 1) / 10  # the first file plus the re-checked slices
    per_principal = int(answers / len(PRINCIPALS) / per_file_share)
    stored = 0
    for p_index, principal in enumerate(PRINCIPALS):
        for a_index, age in enumerate(ANSWER_AGES_DAYS):
            meta = ImportMeta(kind="rpo", file_name=f"bench-{principal}-{age}d.csv",
                              checked_at=at - timedelta(days=age), principal_id=principal)
            summary = await store.import_rpo(answers_of(p_index, per_principal, a_index), meta)
            stored += summary.rows_stored
            print(f"  answers: {principal} checked {age} days ago: {summary.rows_stored:,} rows", flush=True)
    return stored


def decision_entries(decisions: int, numbers: int, end_us: int) -> Iterator[AuditEntry]:
    """`decisions` rows over SPAN_DAYS up to `end_us`, in time order, about five calls a number."""
    start_us = end_us - SPAN_DAYS * DAY
    step = (end_us - start_us) // max(decisions, 1)
    blocks = _blocks()
    for i in range(decisions):
        h = _mix(i)
        ts = start_us + i * step + h % max(step, 1) // 2  # still in order: the jitter stays inside the step
        campaign, principal = CAMPAIGNS[h % len(CAMPAIGNS)]
        number = _number((h >> 8) % numbers)
        allowed = (h >> 20) % 100 < 70
        reasons = "" if allowed else blocks[(h >> 28) % len(blocks)][0]
        basis = ("listed", "consent", "contract")[(h >> 36) % 3] if allowed else None
        uniqueid = f"{ts // SECOND}.{i % 100_000}"
        evidence = canonical_evidence({"campaign": campaign, "principal": principal, "rpo": {
            "checked_at": ts - 5 * DAY, "registered": not allowed and "rpo_registered" in reasons},
            "listed": basis == "listed", "line_type": "mobile"})
        yield AuditEntry(
            decision_id=f"00000000-0000-4000-8000-{i:012d}", ts_us=ts, number=number, raw_number=number[3:],
            campaign_id=campaign, principal_id=principal, caller_id="+390694801234",
            decision="allow" if allowed else "block", reasons=reasons, basis=basis, evidence=evidence,
            source="fastagi" if h % 50 else "cli", uniqueid=uniqueid, channel=f"Local/{number[3:]}@out-{i % 997:08x}",
            linkedid=uniqueid)


def chained_rows(entries: Iterator[AuditEntry]) -> Iterator[tuple[Any, ...]]:
    """The log's rows as the writer would write them: seq, the chain and the recording moment."""
    prev = GENESIS_HASH
    for seq, e in enumerate(entries, start=1):
        recorded = e.ts_us + 1_500
        digest = chain_hash(seq, e, prev, recorded)
        yield (seq, e.decision_id, e.ts_us, e.number, e.raw_number, e.campaign_id, e.principal_id, e.caller_id,
               e.decision, e.reasons, e.basis, e.evidence, e.source, e.uniqueid, e.channel, prev, digest, recorded,
               e.linkedid)
        prev = digest


_COLUMNS = ("seq", "decision_id", "ts_us", "number", "raw_number", "campaign_id", "principal_id", "caller_id",
            "decision", "reasons", "basis", "evidence", "source", "uniqueid", "channel", "prev_hash", "hash",
            "recorded_us", "linkedid")


def _batched(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def write_log_sqlite(path: Path, rows: Iterator[tuple[Any, ...]], total: int) -> None:
    audit = path.with_name(f"{path.stem}.audit{path.suffix}")
    con = sqlite3.connect(audit, isolation_level=None)
    con.execute("PRAGMA cache_size = -1000000")  # the number index takes rows in random order
    con.execute("PRAGMA synchronous = OFF")  # a benchmark's store: rebuilt if a crash cuts it short
    sql = f"INSERT INTO audit_log ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
    done, started = 0, time.monotonic()
    try:
        con.execute("BEGIN")
        for batch in _batched(rows):
            con.executemany(sql, batch)
            done += len(batch)
            if done % 1_000_000 < BATCH:
                con.execute("COMMIT")
                con.execute("BEGIN")
                print(f"  decisions: {done:,} of {total:,} ({time.monotonic() - started:.0f} s)", flush=True)
        con.execute("COMMIT")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


async def write_log_postgres(url: str, rows: Iterator[tuple[Any, ...]], total: int) -> None:
    import asyncpg  # noqa: PLC0415

    con = await asyncpg.connect(url)
    done, started, last = 0, time.monotonic(), None
    try:
        for batch in _batched(rows):
            await con.copy_records_to_table("audit_log", records=batch, columns=list(_COLUMNS))
            done += len(batch)
            last = batch[-1]
            if done % 1_000_000 < BATCH:
                print(f"  decisions: {done:,} of {total:,} ({time.monotonic() - started:.0f} s)", flush=True)
        if last is not None:
            # The chain goes on from the last row (as `db copy` leaves it).
            await con.execute("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1", last[0], last[16])
        await con.execute("ANALYZE")
    finally:
        await con.close()


def cli_env(db: str) -> dict[str, str]:
    """The console script's environment: the database in RPOGUARD_DB, never on a command line (a PostgreSQL
    URL may carry a password, and every user of the machine can read a process's arguments)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPOGUARD_")}
    env["RPOGUARD_DB"] = db
    return env


def build(db: str, backend: str, decisions: int, answers: int, marker: Path) -> dict[str, Any]:
    started = time.monotonic()
    if backend == "sqlite":
        remove_db(Path(db))
    now = datetime.now(UTC)
    end_us = int(now.timestamp() * SECOND)

    async def reference_data() -> int:
        async with open_store(db) as store:
            if backend == "postgres" and await store.first_seq_since(0) is not None:
                raise SystemExit(f"{db}: the PostgreSQL database already holds decisions; give an empty one")
            for principal in PRINCIPALS:
                await store.add_principal(principal, f"{principal.title()} S.p.A.", ["+390694801234"])
            for campaign, principal in CAMPAIGNS:
                await store.add_campaign(campaign, principal, False, 3, 7)
            return await fill_answers(store, answers, now)

    stored = asyncio.run(reference_data())
    numbers = max(1, decisions // 5)
    rows = chained_rows(decision_entries(decisions, numbers, end_us))
    if backend == "sqlite":
        write_log_sqlite(Path(db), rows, decisions)
    else:
        asyncio.run(write_log_postgres(db, rows, decisions))
    # The log must be one the product accepts: `rpoguard audit verify` walks the whole chain.
    verify = subprocess.run([venv_bin("rpoguard"), "audit", "verify"], capture_output=True, text=True,
                            env=cli_env(db), check=False)
    print(f"  {verify.stdout.strip()}", flush=True)
    if verify.returncode != 0:
        raise SystemExit(f"the benchmark's decision log does not verify: {verify.stdout}{verify.stderr}")
    info = {"built": now.isoformat(timespec="seconds"), "end_us": end_us, "decisions": decisions,
            "answers": stored, "numbers": numbers, "build_s": round(time.monotonic() - started)}
    marker.write_text(json.dumps(info))
    return info


def ensure_store(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    key = store_key(args.backend, args.decisions, args.answers)
    folder = bench_dir()
    marker = folder / f"{key}.json"
    if args.backend == "sqlite":
        db = str(folder / f"{key}.db")
        present = Path(db).exists()
    else:
        if not args.pg_url:
            raise SystemExit("--backend postgres needs --pg-url (an empty database the benchmark may fill)")
        db = args.pg_url
        # The marker names the database it describes: another URL is another store.
        marker = folder / f"{key}-{hashlib.sha256(db.encode()).hexdigest()[:12]}.json"
        present = True
    if marker.exists() and present and not args.rebuild:
        info = json.loads(marker.read_text())
        print(f"store: reusing {key} built {info['built']} ({info['build_s']} s)", flush=True)
        return db, info
    with contextlib.suppress(FileNotFoundError):
        marker.unlink()
    print(f"store: building {key}: {args.decisions:,} decisions, {args.answers:,} answers", flush=True)
    return db, build(db, args.backend, args.decisions, args.answers, marker)


# -- timing ---------------------------------------------------------------------------------------------------

Timed = Callable[[int], Awaitable[object]]  # one request; its argument is the request's index


def percentiles_ms(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    return tuple(round(percentile(ordered, f) * 1000, 1) for f in (0.5, 0.95, 0.99))  # type: ignore[return-value]


async def time_each(pages: list[tuple[str, Timed]], requests: int) -> list[tuple[str, float, float, float]]:
    """Each page `requests` times one after the other (one warm-up request first, not counted)."""
    results = []
    for name, request in pages:
        await request(-1)
        samples = []
        for i in range(requests):
            started = time.perf_counter()
            await request(i)
            samples.append(time.perf_counter() - started)
        results.append((name, *percentiles_ms(samples)))
        print(f"  {name}: p50 {results[-1][1]} ms, p95 {results[-1][2]} ms", flush=True)
    return results


def drawn(info: dict[str, Any], i: int) -> str:
    return _number(_mix(i + 12345) % info["numbers"])


async def store_pages(store: Store, info: dict[str, Any]) -> list[tuple[str, Timed]]:
    """The Store reads each page makes, without the web server (until `rpoguard web` is there)."""
    end_us = info["end_us"]
    decisions = info["decisions"]

    async def overview(i: int) -> object:
        # The counts come from the rollup in memory; the page reads only the latest rows and imports.
        return (await store.decision_page(DecisionFilter(), before_seq=None, limit=10),
                await store.import_history(limit=5))

    async def number(i: int) -> object:
        e164 = drawn(info, i)
        return (await store.evidence(e164, None),
                await store.decision_page(DecisionFilter(number=e164), before_seq=None, limit=50))

    async def first_page(i: int) -> object:
        return await store.decision_page(DecisionFilter(), before_seq=None, limit=50)

    async def filtered(i: int) -> object:
        return await store.decision_page(DecisionFilter(decision="block", reason="rpo_registered",
                                                        start_us=end_us - 7 * DAY), before_seq=None, limit=50)

    async def no_match(i: int) -> object:
        return await store.decision_page(DecisionFilter(campaign_id="nosuch", start_us=end_us - 7 * DAY),
                                         before_seq=None, limit=50)

    async def no_match_bounded(i: int) -> object:
        return await store.decision_search(DecisionFilter(campaign_id="nosuch", start_us=end_us - 7 * DAY),
                                           before_seq=None, limit=50, scan_limit=SCAN_LIMIT)

    async def deep(i: int) -> object:
        # Somewhere in the oldest half: page 100,000 and beyond at 50 rows a page.
        return await store.decision_page(DecisionFilter(), before_seq=1 + _mix(i) % max(decisions // 2, 1), limit=50)

    async def csv_first_row(i: int) -> object:
        rows = store.decision_rows(DecisionFilter(start_us=end_us - 30 * DAY))
        try:
            return await anext(rows, None)
        finally:
            await rows.aclose()  # type: ignore[attr-defined]

    async def imports(i: int) -> object:
        return await store.import_history(limit=50)

    async def audit(i: int) -> object:
        return [f async for f in store.list_findings(limit=50)], await store.decision_page(
            DecisionFilter(), before_seq=None, limit=1)

    async def principals(i: int) -> object:
        return [p async for p in store.list_principals()], [c async for c in store.list_campaigns()]

    return [("overview (latest rows, imports)", overview), ("number (evidence + its decisions)", number),
            ("decisions, page 1", first_page), ("decisions, blocks for a reason, last 7 days", filtered),
            ("decisions, a deep page", deep), ("decisions, a campaign with no calls, last 7 days", no_match),
            (f"the same, decision_search looking at {SCAN_LIMIT:,} rows at most", no_match_bounded),
            ("decisions CSV, first row", csv_first_row), ("imports", imports),
            ("audit (findings, head)", audit), ("principals and campaigns", principals)]


async def measure_store(db: str, info: dict[str, Any], requests: int) -> tuple[list[Any], list[tuple[str, str]]]:
    async with open_store(db, create=False) as store:
        results = await time_each(await store_pages(store, info), requests)
    return results, await background_work(db)


async def background_work(db: str) -> list[tuple[str, str]]:
    """What the console does off the requests, timed on its own."""
    from rpoguard.config import Config  # noqa: PLC0415
    from rpoguard.web.rollup import DecisionRollup  # noqa: PLC0415

    async with open_store(db, create=False) as store:
        background = []
        started = time.perf_counter()
        rollup = DecisionRollup(store)
        rows = await rollup.catch_up()
        background.append(("decision counts: first catch-up (8 days)", f"{time.perf_counter() - started:.1f} s "
                                                                          f"({rows:,} rows)"))
        started = time.perf_counter()
        await rollup.catch_up()
        idle_ms = (time.perf_counter() - started) * 1000
        background.append(("decision counts: a catch-up with nothing new", f"{idle_ms:.1f} ms"))
        started = time.perf_counter()
        figures = await store.answer_freshness(PRINCIPALS[0], int(time.time() * SECOND),
                                               Config().rpo_validity_days * DAY)
        background.append((f"answer freshness of one principal ({len(PRINCIPALS)} are refreshed in turn)",
                           f"{time.perf_counter() - started:.1f} s ({figures.numbers:,} numbers)"))
    return background


def report(args: argparse.Namespace, info: dict[str, Any], mode: str, results: list[Any],
           background: list[tuple[str, str]]) -> str:
    lines = [f"# rpoguard web: pages on a large store ({args.backend})", "",
             f"{info['decisions']:,} decisions over {SPAN_DAYS} days, {info['answers']:,} RPO answers "
             f"({len(PRINCIPALS)} principals); {args.requests} sequential requests a page; {mode}.", "",
             "## Pages", "",
             markdown_table(["page", "p50 ms", "p95 ms", "p99 ms", f"p95 < {TARGET_P95_MS:.0f} ms"],
                            [(name, p50, p95, p99, "-" if math.isnan(p95) else "yes" if p95 < TARGET_P95_MS else "NO")
                             for name, p50, p95, p99 in results], "lrrrl"), ""]
    if background:
        lines += ["## Background work (never inside a request)", "",
                  markdown_table(["what", "took"], background, "ll"), ""]
    lines += ["## Machine", "", markdown_table(["", ""], machine_description(), "ll"), ""]
    return "\n".join(lines)


def measure(args: argparse.Namespace, db: str, info: dict[str, Any]) -> int:
    web = not args.store_only and web_available()
    if web:
        server, port, log_path = start_web(db)
        try:
            results = asyncio.run(measure_web(port, log_path, info, args.requests))
        finally:
            server.terminate()
            server.wait(timeout=30)
        background = asyncio.run(background_work(db))
        mode = "through `rpoguard web` (HTTP on loopback, logged in)"
    else:
        results, background = asyncio.run(measure_store(db, info, args.requests))
        mode = "**Store reads only** (the pages' queries, without the web server)"
    text = report(args, info, mode, results, background)
    print(text)
    out = bench_dir() / f"web-{args.backend}-{datetime.now(UTC):%Y%m%d-%H%M%S}.md"
    out.write_text(text)
    print(f"(saved to {out})")
    return 0


def web_available() -> bool:
    done = subprocess.run([venv_bin("rpoguard"), "web", "--help"], capture_output=True, check=False)
    return done.returncode == 0


# The console's pages as `rpoguard web` serves them: (name, path; {n}: a number of the store, {seq}: a row deep
# in the log, {since}: a date a week back, {start}: the log's first day).
WEB_PAGES = (
    ("overview", "/"),
    ("number", "/numbers/{n}"),
    ("decisions, page 1", "/decisions"),
    ("decisions, blocks for a reason, last 7 days", "/decisions?decision=block&reason=rpo_registered&from={since}"),
    ("decisions, a deep page", "/decisions?from={start}&before={seq}"),
    # The worst case: a filter no row matches walks the whole range (the last 7 days by default).
    ("decisions, a campaign with no calls, last 7 days", "/decisions?campaign=nosuch&from={since}"),
    ("decisions CSV, first byte", "/decisions.csv?from={since}"),
    ("imports", "/imports"),
    ("registry due", "/due"),
    ("audit", "/audit"),
    ("principals and campaigns", "/principals"),
)
USER, PASSWORD = "bench", "bench-password-not-secret-0"


def start_web(db: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    """`rpoguard web` on the store, with the benchmark's admin user (added once)."""
    rpoguard = venv_bin("rpoguard")
    env = cli_env(db)
    subprocess.run([rpoguard, "user", "add", USER, "--role", "admin", "--password-stdin"],
                   input=PASSWORD + "\n", text=True, env=env, capture_output=True, check=False)
    port = free_port()
    log_path = bench_dir() / "bench-web-server.log"
    with log_path.open("wb") as server_log:
        server = subprocess.Popen([rpoguard, "web", "--host", "127.0.0.1", "--port", str(port)],
                                  env=env, stdout=server_log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, server)
    except BaseException:
        server.terminate()
        server.wait(timeout=30)
        raise
    return server, port, log_path


async def measure_web(port: int, log_path: Path, info: dict[str, Any], requests: int) -> list[Any]:
    import aiohttp  # noqa: PLC0415

    # unsafe: the jar keeps cookies of an IP address (the console on loopback).
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await login(http)
        since = datetime.fromtimestamp((info["end_us"] - 7 * DAY) / SECOND, UTC).date().isoformat()
        start = datetime.fromtimestamp((info["end_us"] - (SPAN_DAYS + 1) * DAY) / SECOND, UTC).date().isoformat()
        missing: list[str] = []

        def page(path: str) -> Timed:
            async def request(i: int) -> object:
                url = path.format(n=drawn(info, max(i, 0)), since=since, start=start,
                                  seq=1 + _mix(max(i, 0)) % max(info["decisions"] // 2, 1))
                first = ".csv" in url
                async with http.get(url, allow_redirects=False) as response:
                    if response.status != 200:
                        raise SystemExit(f"GET {url}: HTTP {response.status} (server log: {log_path})")
                    # The CSV export: the time to its first bytes; a page: the whole of it.
                    return await (response.content.read(1) if first else response.read())
            return request

        pages = []
        for name, path in WEB_PAGES:
            async with http.get(path.split("?")[0].format(n=drawn(info, 0)), allow_redirects=False) as response:
                if response.status == 404:
                    missing.append(name)  # a page this version of the console does not have
                    continue
            pages.append((name, page(path)))
        results = await time_each(pages, requests)
        return results + [(f"{name} (no such page in this version)", float("nan"), float("nan"), float("nan"))
                          for name in missing]


async def login(http: Any) -> None:
    """Through the login form, as a person does: its CSRF token, then username and password."""
    async with http.get("/login") as response:
        text = await response.text()
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', text) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', text)
    if token is None:
        raise SystemExit("the login page has no csrf_token field")
    form = {"csrf_token": token.group(1), "username": USER, "password": PASSWORD}
    async with http.post("/login", data=form, allow_redirects=False) as response:
        if response.status not in (302, 303):
            raise SystemExit(f"login failed: HTTP {response.status}")


# -- main ----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decisions", type=int, default=10_000_000)
    p.add_argument("--answers", type=int, default=30_000_000)
    p.add_argument("--quick", action="store_true", help="1 M decisions and 3 M answers")
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--pg-url", help="PostgreSQL: an empty database to fill (kept for the next run)")
    p.add_argument("--requests", type=int, default=50, help="sequential requests per page")
    p.add_argument("--rebuild", action="store_true", help="build the store again even if cached")
    p.add_argument("--build-only", action="store_true")
    p.add_argument("--store-only", action="store_true", help="time the Store reads, not the web pages")
    args = p.parse_args(argv)
    if args.quick:
        args.decisions, args.answers = 1_000_000, 3_000_000
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    db, info = ensure_store(args)
    if args.build_only:
        return 0
    return measure(args, db, info)


if __name__ == "__main__":
    sys.exit(main())
