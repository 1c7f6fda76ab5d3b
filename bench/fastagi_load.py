"""A FastAGI load generator that plays Asterisk, in its own process: sessions at a steady rate, each timed.

    python bench/fastagi_load.py --port P --numbers FILE --out RESULTS.csv [--rate 200] [--duration S]

Each session is what ``AGI(agi://127.0.0.1:P/check?campaign=C,NUMBER)`` does in Asterisk: connect, send
the agi_* environment ending with a blank line, answer every command line with ``200 result=1``, read
until the server closes, then write ``HANGUP`` and close. A new connection per call. Sessions start on a
fixed schedule (open loop: the i-th at start + i/rate, whether or not earlier ones finished), so a slow
server is seen as slow and not hidden by a client that waits for it.

It runs until --duration seconds have passed or it receives SIGTERM/SIGINT, then waits for the sessions
in flight (at most --timeout s) and writes one CSV line per session:

    scheduled,started,ended,outcome,decision

times on time.monotonic(), the clock every process of the machine shares, so a parent can tell which
sessions ran before, during and after something it did. ``outcome`` is ``ok`` (the server set
RPOGUARD_DECISION and closed), ``failure`` (it wrote a line starting with "failure"), ``no_decision``
(closed without setting RPOGUARD_DECISION), ``timeout`` or ``error:<exception>``.

With ``--stream`` (and no ``--out``) each line goes to stdout as soon as its session ends, and nothing is
kept in memory: for long runs watched while they go (bench/bench_load.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import loadgen

log = logging.getLogger(__name__)

VAR_DECISION = b"RPOGUARD_DECISION"


def environment(number: str, campaign: str, uniqueid: str, port: int, caller_id: str) -> bytes:
    """The environment Asterisk 22 sends for the product's check, the same as the C generator's
    (bench/loadgen.py), with this call's number, uniqueid and caller ID."""
    text = loadgen.fastagi_env_template("127.0.0.1", port, campaign)
    text = text.replace(loadgen.NUMBER_MARK, number).replace(loadgen.UNIQUEID_MARK, uniqueid)
    return text.replace(f"agi_callerid: {loadgen.CALLER_ID}\n", f"agi_callerid: {caller_id}\n").encode()


@dataclass(slots=True)
class Session:
    scheduled: float
    started: float = 0.0
    ended: float = 0.0
    outcome: str = "pending"
    decision: str = ""


async def one_session(host: str, port: int, env: bytes, record: Session, give_up: float) -> None:
    record.started = time.monotonic()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(give_up):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(env)
            failed = False
            while line := await reader.readline():
                if line[:7].lower() == b"failure":
                    failed = True
                    continue
                parts = line.rstrip(b"\r\n").split(b" ", 3)
                if len(parts) == 4 and parts[0] == b"SET" and parts[1] == b"VARIABLE" and parts[2] == VAR_DECISION:
                    record.decision = parts[3].strip(b'"').decode(errors="replace")
                elif parts[:2] == [b"EXEC", b"MSet"] and len(parts) > 2:
                    # The check route sends the details and the decision in one MSet, the decision last.
                    pairs = loadgen.mset_pairs(b" ".join(parts[2:]).decode(errors="replace"))
                    record.decision = pairs.get(VAR_DECISION.decode()) or record.decision
                # Asterisk answers every command; 200 result=1 is what SET VARIABLE gets.
                writer.write(b"200 result=1\n")
            record.ended = time.monotonic()
            # run_agi's end (AGISIGHUP unset): Asterisk writes HANGUP before it closes its side.
            with contextlib.suppress(OSError):
                writer.write(b"HANGUP\n")
            if failed:
                record.outcome = "failure"
            elif not record.decision:
                record.outcome = "no_decision"
            else:
                record.outcome = "ok"
    except TimeoutError:
        record.ended = time.monotonic()
        record.outcome = "timeout"
    except OSError as exc:
        record.ended = time.monotonic()
        record.outcome = f"error:{type(exc).__name__}"
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def csv_line(s: Session) -> str:
    return f"{s.scheduled:.6f},{s.started:.6f},{s.ended:.6f},{s.outcome},{s.decision}\n"


async def _flush_every(interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        sys.stdout.flush()


async def drive(host: str, port: int, numbers: list[str], campaign: str, caller_id: str, rate: float,
                duration: float, give_up: float, *, stream: bool = False) -> list[Session]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sessions: list[Session] = []
    tasks: set[asyncio.Task[None]] = set()
    flusher = asyncio.create_task(_flush_every(0.2)) if stream else None

    def streamed(record: Session) -> Callable[[asyncio.Task[None]], None]:
        def done(_: asyncio.Task[None]) -> None:
            sys.stdout.write(csv_line(record))

        return done

    start = time.monotonic() + 0.05
    end = start + duration if duration > 0 else float("inf")
    for index, number in enumerate(itertools.cycle(numbers)):
        scheduled = start + index / rate
        if scheduled >= end or stop.is_set():
            break
        delay = scheduled - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                break
        record = Session(scheduled)
        if not stream:
            sessions.append(record)
        env = environment(number, campaign, f"{int(scheduled)}.{index}", port, caller_id)
        task = asyncio.create_task(one_session(host, port, env, record, give_up))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if stream:
            task.add_done_callback(streamed(record))
    if tasks:
        await asyncio.wait(tasks, timeout=give_up + 1)
    if flusher is not None:
        flusher.cancel()
        sys.stdout.flush()
    return sessions


def write_results(path: Path, sessions: list[Session]) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write("scheduled,started,ended,outcome,decision\n")
        for s in sessions:
            out.write(csv_line(s))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--numbers", type=Path, required=True, help="numbers to dial, one a line (cycled)")
    parser.add_argument("--campaign", default="bench")
    parser.add_argument("--caller-id", default="0694801234")
    parser.add_argument("--rate", type=float, default=200.0, help="sessions started per second")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds; 0: until SIGTERM")
    parser.add_argument("--timeout", type=float, default=10.0, help="give up on a session after this many s")
    output = parser.add_mutually_exclusive_group(required=True)
    output.add_argument("--out", type=Path)
    output.add_argument("--stream", action="store_true", help="each session's line to stdout when it ends")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s fastagi_load %(message)s", stream=sys.stderr)
    numbers = [line.strip() for line in args.numbers.read_text().splitlines() if line.strip()]
    sessions = asyncio.run(drive(args.host, args.port, numbers, args.campaign, args.caller_id, args.rate,
                                 args.duration, args.timeout, stream=args.stream))
    if args.out is not None:
        write_results(args.out, sessions)
        log.info("%d sessions written to %s", len(sessions), args.out)


if __name__ == "__main__":
    main()
