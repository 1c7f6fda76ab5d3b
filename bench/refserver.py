"""The reference FastAGI server: the least a gate can do, so that rpoguard's figures have a yardstick
measured on the same machine in the same run.

Per connection: read the environment up to the blank line, look the first AGI argument up in an
in-memory dict, send one ``SET VARIABLE RPOGUARD_DECISION "ALLOW"|"BLOCK"``, read its reply, close.
No normalisation, no database, no audit record, no deadline. ``--sets 5`` sends four more variables first,
one round trip each, as rpoguard's check route did before it used one EXEC MSet: what those round trips
cost, measured apart.

Two styles, on the default asyncio loop like ``rpoguard serve``:

* ``streams``: asyncio.start_server with StreamReader.readline, the way most asyncio servers are written;
* ``protocol``: asyncio.BufferedProtocol with a preallocated receive buffer, the I/O technique rpoguard
  itself uses (bench/README.md, measured facts: the cheapest on the default loop), so a ratio against it isolates
  what rpoguard does per call beyond reading and writing lines.

    python bench/refserver.py --port 4600 --style protocol --numbers numbers.txt
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

DECISION_VAR = "RPOGUARD_DECISION"
ARG_PREFIX = b"agi_arg_1: "


def load_table(path: Path | None) -> dict[str, str]:
    """number -> ALLOW/BLOCK; every third number is blocked, so both answers travel."""
    if path is None:
        return {}
    numbers = path.read_text().split()
    return {number: ("BLOCK" if i % 3 == 0 else "ALLOW") for i, number in enumerate(numbers)}


EXTRA_VARS = ("RPOGUARD_REASON", "RPOGUARD_REASONS", "RPOGUARD_NUMBER", "RPOGUARD_ID")


def commands_for(table: dict[str, str], number: str, sets: int) -> list[bytes]:
    """The commands of one session: `sets - 1` detail variables, then the decision, last."""
    decision = table.get(number, "BLOCK")
    details = [f'SET VARIABLE {name} "{number if name == "RPOGUARD_NUMBER" else decision}"\n'.encode()
               for name in EXTRA_VARS[: max(0, sets - 1)]]
    return [*details, f'SET VARIABLE {DECISION_VAR} "{decision}"\n'.encode()]


# -- streams ------------------------------------------------------------------------------------------------


def streams_handler(table: dict[str, str], sets: int):  # type: ignore[no-untyped-def]
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            number = ""
            while True:
                line = await reader.readline()
                if not line:
                    return
                if line in (b"\n", b"\r\n"):
                    break
                if line.startswith(ARG_PREFIX):
                    number = line[len(ARG_PREFIX):].strip().decode()
            for command in commands_for(table, number, sets):
                writer.write(command)
                await writer.drain()
                while (await reader.readline()).strip() == b"HANGUP":
                    pass  # out of band; the reply follows
        except (ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    return handle


# -- BufferedProtocol ---------------------------------------------------------------------------------------


class RefProtocol(asyncio.BufferedProtocol):
    def __init__(self, table: dict[str, str], sets: int) -> None:
        self.table = table
        self.sets = sets
        self.commands: list[bytes] = []
        self.buffer = bytearray(4096)
        self.view = memoryview(self.buffer)
        self.pending = bytearray()
        self.transport: asyncio.Transport | None = None
        self.number = ""
        self.sent = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        self.pending += self.view[:nbytes]
        while (end := self.pending.find(b"\n")) >= 0:
            line = bytes(self.pending[:end]).rstrip(b"\r")
            del self.pending[: end + 1]
            self.line(line)

    def line(self, line: bytes) -> None:
        assert self.transport is not None
        if self.sent:
            if line == b"HANGUP":
                return  # out of band; the reply follows
            if self.commands:
                self.transport.write(self.commands.pop(0))
            else:
                self.transport.close()  # the reply to the last command: done
            return
        if not line:
            self.sent = True
            self.commands = commands_for(self.table, self.number, self.sets)
            self.transport.write(self.commands.pop(0))
        elif line.startswith(ARG_PREFIX):
            self.number = line[len(ARG_PREFIX):].decode(errors="replace").strip()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(port: int, style: str, table: dict[str, str], host: str = "127.0.0.1", sets: int = 1) -> None:
    loop = asyncio.get_running_loop()
    if style == "streams":
        server = await asyncio.start_server(streams_handler(table, sets), host, port, backlog=512,
                                            reuse_address=True)
    else:
        server = await loop.create_server(lambda: RefProtocol(table, sets), host, port, backlog=512,
                                          reuse_address=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="reference FastAGI server for rpoguard's benchmarks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4600)
    parser.add_argument("--style", choices=("streams", "protocol"), default="protocol")
    parser.add_argument("--numbers", type=Path, help="the numbers to know (one a line)")
    parser.add_argument("--sets", type=int, default=1, choices=range(1, 6), metavar="1..5",
                        help="SET VARIABLE commands per session, the decision last (default 1)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.style, load_table(args.numbers), args.host, args.sets))


if __name__ == "__main__":
    main()
