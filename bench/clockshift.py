"""Shift a benchmarked server's wall clock into the calling hours, without slowing it down.

The calling-hours rule blocks every call at night and on Sundays, so a benchmark run at 6 am would only
ever measure BLOCK(outside_hours) and never the ALLOW path (the attempt-cap check, the longer audit row).
The end-to-end tests shift `rpoguard serve`'s clock with libfaketime, but libfaketime wraps every clock
call and more than doubled the server's CPU per session (bench/README.md, "The servers' clock").

This shim (clockshift.c), compiled with gcc on first use and loaded with LD_PRELOAD, replaces `clock_gettime`,
`gettimeofday` and `time` only to add a fixed number of seconds to CLOCK_REALTIME readings, the clock
behind Python's `datetime.now()` and `time.time()`; every other clock goes straight to the C library's
(vDSO) implementation. Nothing in the product knows about it: there is no clock switch in rpoguard.

    env = clockshift.environ(offset_s, folder)   # {"LD_PRELOAD": ..., "RPOGUARD_BENCH_CLOCK_SHIFT_S": ...}
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

OFFSET_VARIABLE = "RPOGUARD_BENCH_CLOCK_SHIFT_S"

C_SOURCE = Path(__file__).with_name("clockshift.c")


def build(folder: Path) -> Path:
    """Compile the shim once per source version (cached by the source's hash)."""
    digest = hashlib.sha256(C_SOURCE.read_bytes()).hexdigest()[:12]
    library = folder / f"clockshift-{digest}.so"
    if library.exists():
        return library
    result = subprocess.run(["gcc", "-O2", "-Wall", "-shared", "-fPIC", "-o", f"{library}.tmp", str(C_SOURCE), "-ldl"],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"gcc failed on {C_SOURCE}:\n{result.stderr}")
    Path(f"{library}.tmp").replace(library)
    return library


def environ(offset_s: int, folder: Path) -> dict[str, str]:
    """Environment entries that run a child `offset_s` seconds from now on the wall clock."""
    return {"LD_PRELOAD": str(build(folder)), OFFSET_VARIABLE: str(offset_s)}
