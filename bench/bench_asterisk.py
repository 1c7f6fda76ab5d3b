"""Part 4 of the gate benchmarks: the time the gate adds to call setup in a real Asterisk 22.

    python bench/bench_asterisk.py [--calls 200]       (as root; builds a 1 M store of its own)
    python bench/bench_gate.py --asterisk ...          (the store of benchstore.py)

Asterisk runs from the e2e root file system (tests/e2e/harness.py; cached under /var/cache/rpoguard-e2e,
built by scripts/build-asterisk-rootfs). Each call is originated into one of these contexts, in turn, so
that the modes are interleaved call by call:

* ``none``: no check at all;
* ``astdb``: the same numbers checked with Asterisk's own AstDB, ``DB_EXISTS(rpo/NUMBER)``;
* ``ref``: ``AGI(agi://127.0.0.1:PORT/check,NUMBER)`` to the reference FastAGI server (bench/refserver.py:
  an in-memory lookup and one SET VARIABLE, nothing recorded): what any FastAGI check costs in Asterisk;
* ``agi``: ``AGI(agi://127.0.0.1:PORT/check?campaign=C,NUMBER,C,)`` straight to `rpoguard serve`;
* ``gate``: the product's subroutine, ``GoSub(rpoguard-check,s,1(NUMBER,C))`` from dialplan/rpoguard.conf,
  as an administrator installs it (time limit, both fail-closed checks).
* ``ari``: the ARI gate's subroutine, ``GoSub(rpoguard-check-ari,s,1(NUMBER,C))``, answered by `rpoguard ari`
  over Asterisk's HTTP server on loopback (a BLOCK is hung up by rpoguard itself).

The dialplan stamps the time with ``STRFTIME(,,%s.%6q)`` (µs) right before and right after the check and
logs both with Verbose; the log is parsed afterwards. A BLOCK ends inside the product's subroutine with
Hangup(21), so there the second stamp is taken by a hangup handler: it also counts the subroutine's own
Verbose and Hangup (tens of µs). What is reported is each mode's time minus the ``none`` mode's.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import clockshift  # noqa: E402
from benchstore import build_store, call_time, draw_numbers  # noqa: E402
from common import (  # noqa: E402
    bench_dir,
    empty_config,
    free_port,
    markdown_table,
    percentile,
    remove_db,
    rpoguard_env,
    venv_bin,
    wait_for_port,
)

# Where scripts/build-asterisk-rootfs caches it (RPOGUARD_E2E_CACHE moves it, for the script and here alike).
ROOTFS = Path(os.environ.get("RPOGUARD_E2E_CACHE") or "/var/cache/rpoguard-e2e") / "rootfs"
CAMPAIGN = "bench"
MODES = ("none", "astdb", "ref", "agi", "gate", "ari")
ARI_USER = "bench"
TARGET_MS = 2.0

DIALPLAN = r"""
; rpoguard bench: the time a check adds to call setup.
[bench-none]
exten => _X.,1,Set(T0=${STRFTIME(,,%s.%6q)})
 same => n,Set(T1=${STRFTIME(,,%s.%6q)})
 same => n,Verbose(1,bench-timing none ${UNIQUEID} ${T0} ${T1} none)
 same => n,Hangup()

[bench-astdb]
exten => _X.,1,Set(T0=${STRFTIME(,,%s.%6q)})
 same => n,Set(FOUND=${DB_EXISTS(rpo/${EXTEN})})
 same => n,Set(T1=${STRFTIME(,,%s.%6q)})
 same => n,Verbose(1,bench-timing astdb ${UNIQUEID} ${T0} ${T1} found=${FOUND})
 same => n,Hangup()

[bench-ref]
exten => _X.,1,Set(RPOGUARD_DECISION=BLOCK)
 same => n,Set(T0=${STRFTIME(,,%s.%6q)})
 same => n,AGI(${BENCH_REF}/check,${EXTEN})
 same => n,Set(T1=${STRFTIME(,,%s.%6q)})
 same => n,Verbose(1,bench-timing ref ${UNIQUEID} ${T0} ${T1} ${AGISTATUS}/${RPOGUARD_DECISION})
 same => n,Hangup()

[bench-agi]
exten => _X.,1,Set(RPOGUARD_DECISION=BLOCK)
 same => n,Set(T0=${STRFTIME(,,%s.%6q)})
 same => n,AGI(${BENCH_AGI}/check?campaign=__CAMPAIGN__,${EXTEN},__CAMPAIGN__,)
 same => n,Set(T1=${STRFTIME(,,%s.%6q)})
 same => n,Verbose(1,bench-timing agi ${UNIQUEID} ${T0} ${T1} ${AGISTATUS}/${RPOGUARD_DECISION})
 same => n,Hangup()

[bench-gate]
exten => _X.,1,Set(CHANNEL(hangup_handler_push)=bench-gate-blocked,s,1)
 same => n,Set(T0=${STRFTIME(,,%s.%6q)})
 same => n,GoSub(rpoguard-check,s,1(${EXTEN},__CAMPAIGN__))
 same => n,Set(T1=${STRFTIME(,,%s.%6q)})
 same => n,Set(LOGGED=1)
 same => n,Verbose(1,bench-timing gate ${UNIQUEID} ${T0} ${T1} ${RPOGUARD_DECISION})
 same => n,Hangup()

[bench-gate-blocked]
exten => s,1,GotoIf($["${LOGGED}" = "1"]?done)
 same => n,Verbose(1,bench-timing gate ${UNIQUEID} ${T0} ${STRFTIME(,,%s.%6q)} ${RPOGUARD_DECISION}/${RPOGUARD_REASON})
 same => n(done),Return()

[bench-ari]
exten => _X.,1,Set(CHANNEL(hangup_handler_push)=bench-ari-blocked,s,1)
 same => n,Set(T0=${STRFTIME(,,%s.%6q)})
 same => n,GoSub(rpoguard-check-ari,s,1(${EXTEN},__CAMPAIGN__))
 same => n,Set(T1=${STRFTIME(,,%s.%6q)})
 same => n,Set(LOGGED=1)
 same => n,Verbose(1,bench-timing ari ${UNIQUEID} ${T0} ${T1} ${RPOGUARD_DECISION})
 same => n,Hangup()

[bench-ari-blocked]
exten => s,1,GotoIf($["${LOGGED}" = "1"]?done)
 same => n,Verbose(1,bench-timing ari ${UNIQUEID} ${T0} ${STRFTIME(,,%s.%6q)} ${RPOGUARD_DECISION}/${RPOGUARD_REASON})
 same => n(done),Return()
""".replace("__CAMPAIGN__", CAMPAIGN)

_TIMING = re.compile(r"bench-timing (\w+) (\S+) ([\d.]+) ([\d.]+) ([^\s\"]*)")


def run(db: Path, numbers: Sequence[str], env: dict[str, str], *, quick: bool, calls: int | None = None,
        at: datetime | None = None, lock_held: bool = False) -> None:
    """Print part 4's tables; `numbers` are national numbers present in the store at `db`. With `at`, the
    gate's wall clock is shifted there (bench/clockshift.py), so that it decides as in the calling hours."""
    from tests.e2e.harness import ARI_MODULES, Asterisk, HarnessError, RunDir, ari_files  # noqa: PLC0415

    print()
    print("## 4. Real Asterisk 22: time the check adds to call setup")
    print()
    calls = calls or (60 if quick else 200)
    if not (ROOTFS / "usr/sbin/asterisk").is_file():
        print(f"No Asterisk root file system at {ROOTFS} (scripts/build-asterisk-rootfs builds it): skipped.")
        return
    folder = bench_dir()
    dialplan = folder / "bench-asterisk.conf"
    dialplan.write_text(DIALPLAN)
    port = free_port()
    server_log = folder / "rpoguard-asterisk.log"
    with server_log.open("wb") as fh:
        shift = clockshift.environ(int(at.timestamp() - time.time()), folder) if at is not None else {}
        server = subprocess.Popen([venv_bin("rpoguard"), "serve", "--port", str(port)],
                                  env=dict(env, RPOGUARD_DB=str(db), **shift), stdout=fh, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    ref_port = free_port()
    ref_numbers = folder / "asterisk-ref-numbers.txt"
    ref_numbers.write_text("\n".join(numbers[:calls]) + "\n")
    with (folder / "ref-asterisk.log").open("wb") as fh:
        ref = subprocess.Popen([sys.executable, str(REPO / "bench" / "refserver.py"), "--port", str(ref_port),
                                "--style", "protocol", "--numbers", str(ref_numbers)],
                               stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    # Asterisk needs the fixed SIP ports the e2e tests use: wait for a test session to finish first, unless
    # the caller is that session (the e2e smoke test of this script).
    host_lock = (ROOTFS.parent / "e2e-session.lock").open("w")
    if not lock_held:
        fcntl.flock(host_lock, fcntl.LOCK_EX)
    run_dir = RunDir.create(ROOTFS)
    asterisk = None
    ari_gate: subprocess.Popen[bytes] | None = None
    try:
        wait_for_port(port, server)
        wait_for_port(ref_port, ref)
        agi_url = f"agi://127.0.0.1:{port}"
        http_port = free_port()
        password = secrets.token_urlsafe(24)
        asterisk = Asterisk(ROOTFS, run_dir, [REPO / "dialplan" / "rpoguard.conf", dialplan],
                            dialplan_globals={"RPOGUARD_AGI": agi_url, "BENCH_AGI": agi_url,
                                              "BENCH_REF": f"agi://127.0.0.1:{ref_port}"},
                            extra_modules=("func_db", "func_timeout", "func_uri", *ARI_MODULES),
                            extra_files=ari_files(http_port, ARI_USER, password))
        try:
            asterisk.start()
        except HarnessError as exc:
            print(f"Asterisk did not start: {str(exc)[:2000]}")
            return
        with (folder / "rpoguard-ari.log").open("wb") as fh:
            ari_gate = subprocess.Popen(
                [venv_bin("rpoguard"), "ari", "--url", f"http://127.0.0.1:{http_port}", "--user", ARI_USER],
                env=dict(env, RPOGUARD_DB=str(db), RPOGUARD_ARI_PASSWORD=password, **shift), stdout=fh,
                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while "connected" not in (folder / "rpoguard-ari.log").read_text(errors="replace"):
            if ari_gate.poll() is not None or time.monotonic() > deadline:
                print(f"rpoguard ari did not connect: {(folder / 'rpoguard-ari.log').read_text()[-2000:]}")
                return
            time.sleep(0.05)
        # Level 1: our Verbose lines are logged, the per-priority "Executing" lines (level 3) are not, so
        # the longer subroutine does not pay for more log lines than the one-priority AstDB check.
        asterisk.cli("core set verbose 1")
        chosen = list(numbers[:calls])
        started = time.perf_counter()
        for number in chosen:
            asterisk.cli(f"database put rpo {number} 1")
        fill_s = time.perf_counter() - started
        # Warm-up: the first calls of each mode load code and open files.
        for number in chosen[:5]:
            for mode in MODES:
                asterisk.originate(number, f"bench-{mode}", caller_id="0694801234", timeout=10, hold=0,
                                   check_dialplan=False)
        asterisk.wait_calls_settled()
        mark = asterisk.full_log.stat().st_size
        started = time.perf_counter()
        for number in chosen:
            for mode in MODES:
                asterisk.originate(number, f"bench-{mode}", caller_id="0694801234", timeout=10, hold=0,
                                   check_dialplan=False)
        asterisk.wait_calls_settled()
        wall = time.perf_counter() - started
        time.sleep(0.5)
        with asterisk.full_log.open("rb") as fh:
            fh.seek(mark)
            log = fh.read().decode(errors="replace")
    finally:
        if ari_gate is not None:
            ari_gate.terminate()
            ari_gate.wait(10)
        if asterisk is not None:
            asterisk.stop()
        run_dir.remove()
        host_lock.close()
        server.terminate()
        server.wait(10)
        ref.terminate()
        ref.wait(10)

    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    outcomes: dict[str, dict[str, int]] = {mode: {} for mode in MODES}
    for line in log.splitlines():
        match = _TIMING.search(line)
        if match is None or "Executing [" in line:
            continue  # the echo of the Verbose() application itself, with its arguments
        mode, _, t0, t1, result = match.groups()
        if mode in samples:
            samples[mode].append((float(t1) - float(t0)) * 1000)
            outcomes[mode][result] = outcomes[mode].get(result, 0) + 1
    for values in samples.values():
        values.sort()
    print(f"{len(chosen)} calls per mode, interleaved call by call ({wall:.1f} s in all); AstDB filled with "
          f"{len(chosen)} keys in {fill_s:.1f} s. Times from the dialplan's own clock (µs stamps).")
    print()
    base = statistics.fmean(samples["none"]) if samples["none"] else 0.0
    rows = []
    for mode in MODES:
        values = samples[mode]
        if not values:
            rows.append([mode, "0", "-", "-", "-", "-", "-"])
            continue
        mean = statistics.fmean(values)
        rows.append([mode, str(len(values)), f"{percentile(values, 0.5):.3f}", f"{percentile(values, 0.99):.3f}",
                     f"{mean:.3f}", f"{mean - base:+.3f}",
                     ", ".join(f"{k} {v}" for k, v in sorted(outcomes[mode].items()))])
    print(markdown_table(["check", "calls", "p50 ms", "p99 ms", "mean ms", "added vs none (mean ms)", "results"],
                         rows, "lrrrrrl"))
    print()
    if samples["gate"] and samples["astdb"]:
        extra = statistics.fmean(samples["gate"]) - statistics.fmean(samples["astdb"])
        extra_p50 = percentile(samples["gate"], 0.5) - percentile(samples["astdb"], 0.5)
        verdict = "met" if extra <= TARGET_MS else f"MISSED by {extra - TARGET_MS:.2f} ms"
        print(f"- target: the gate's added call-setup time within {TARGET_MS:g} ms of the AstDB check: the gate "
              f"adds {extra:.2f} ms more on average ({extra_p50:.2f} ms at the median): {verdict}")
    if samples["gate"] and samples["ref"] and samples["astdb"]:
        floor = statistics.fmean(samples["ref"]) - statistics.fmean(samples["astdb"])
        own = statistics.fmean(samples["gate"]) - statistics.fmean(samples["ref"])
        own_p50 = percentile(samples["gate"], 0.5) - percentile(samples["ref"], 0.5)
        print(f"- of that, the FastAGI mechanism itself (the reference server: lookup in memory, one SET VARIABLE, "
              f"nothing recorded) costs {floor:+.2f} ms over AstDB on average; rpoguard's own share (decision, "
              f"durable record, the subroutine's checks) is {own:+.2f} ms ({own_p50:+.2f} ms at the median)")
    if samples["ari"] and samples["gate"]:
        extra = statistics.fmean(samples["ari"]) - statistics.fmean(samples["gate"])
        extra_p50 = percentile(samples["ari"], 0.5) - percentile(samples["gate"], 0.5)
        print(f"- the ARI gate against the FastAGI gate: {extra:+.2f} ms on average ({extra_p50:+.2f} ms at the "
              f"median)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per mode")
    parser.add_argument("--size", type=float, default=1.0, help="store size in millions (default 1)")
    parser.add_argument("--lock-held", action="store_true",
                        help="the caller holds the e2e session lock (an e2e test running this script)")
    args = parser.parse_args()
    folder = bench_dir()
    env = rpoguard_env(empty_config(folder))
    store = build_store(folder / "asterisk-bench.db", int(args.size * 1e6), call_time(), env)
    try:
        run(store.path, draw_numbers(store.layout, args.calls, seed=11), env, quick=False,
            calls=args.calls, at=store.at, lock_held=args.lock_held)
    finally:
        remove_db(store.path)


if __name__ == "__main__":
    main()
