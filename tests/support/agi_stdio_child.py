"""A classic AGI program for the tests: run_stdio with a fake gate, as Asterisk would start it.

Usage: python -m support.agi_stdio_child MODE DEADLINE [ROUTE]
MODE: allow | raise | slow (the gate takes 0.6 s) | stuck (the gate blocks the event loop for 10 s).
ROUTE: a route name to pass to run_stdio, or "-" for none.
Logs go to stderr; "GATE ENTERED" is printed there when the gate is called.
"""

from __future__ import annotations

import logging
import sys
import time

from rpoguard.agi.routes import build_routes
from rpoguard.agi.stdio import run_stdio
from rpoguard.gate import CallRequest, Verdict
from support.agi_fakes import FakeGate


def block_the_event_loop() -> None:
    # Only the watchdog thread can still answer while this runs.
    time.sleep(10)


class AnnouncingGate(FakeGate):
    def __init__(self, *, stuck: bool = False, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.stuck = stuck

    async def check(self, call: CallRequest) -> Verdict:
        print("GATE ENTERED", file=sys.stderr, flush=True)
        if self.stuck:
            block_the_event_loop()
        return await super().check(call)


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    mode, deadline = sys.argv[1], float(sys.argv[2])
    route = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] != "-" else None
    gates = {
        "allow": AnnouncingGate,
        "raise": lambda: AnnouncingGate(error=RuntimeError("database is locked")),
        "slow": lambda: AnnouncingGate(delay=0.6),
        "stuck": lambda: AnnouncingGate(stuck=True),
    }
    return run_stdio(build_routes(gates[mode]()), route, session_deadline=deadline)


if __name__ == "__main__":
    sys.exit(main())
