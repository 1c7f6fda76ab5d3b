"""A small Asterisk manager interface (AMI) over a real socket, for `dialplan audit` and `watch` tests.

In a test's own event loop (the `run` fixture)::

    ami = FakeAmi(users={"rpoguard": "s3cret"})
    await ami.start()                                   # 127.0.0.1, a free port: ami.host, ami.port
    ami.reply("ShowDialPlan", list_reply(events, "ShowDialPlanComplete", "DialPlan list will follow"))
    ami.reply("ShowDialPlan", read_recording(path))     # or the answer a real Asterisk gave, saved
    ...                                                 # the code under test connects and acts
    await ami.emit({"Event": "Newchannel", "Channel": "PJSIP/carrier-00000001"})  # to sessions with events on
    await ami.drop()                                    # close every session, as a restarting Asterisk does
    await ami.idle()                                    # or wait until the clients have closed theirs
    await ami.stop()
    ami.actions                                         # every action received, headers as sent (Secret masked)

or ``async with FakeAmi(...) as ami:``. For a subprocess (the real console script), ``FakeAmiThread`` runs one
on its own loop in a thread: ``with FakeAmiThread(users=...) as server:``, then ``server.fake.reply(...)``
(before the subprocess connects) and ``server.call(lambda ami: ami.emit(...))`` for coroutines.

What it does as Asterisk 22's manager does: the greeting line ``Asterisk Call Manager/11.0.0``; Login with
Username and Secret answers ``Success`` ("Authentication accepted"), or ``Error`` ("Authentication failed")
and closes the session; a session logged in with ``Events: off`` gets no events; Ping answers Pong;
Logoff answers Goodbye and closes; an action before login gets "Authentication Required"; an action the
test set no reply for gets "Invalid/unknown command". A reply is a list of messages (header dicts) or a
callable(action) returning one; each message gets the action's ActionID, and ``CLOSE`` in it closes the
session there (Asterisk going away in the middle of a list).

Faults: ``login_delay`` seconds before answering a Login (``None``: never answer, for timeouts),
``deny`` (action names answered "Permission denied", as a manager.conf user without the right class),
``silent = True`` (actions read, never answered: a hung Asterisk or a silently dropped connection), and
``start(port)`` to listen again on a port used before (Asterisk coming back where it was).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TypeAlias, TypeVar

GREETING = "Asterisk Call Manager/11.0.0\r\n"  # Asterisk 22
EOL = "\r\n"

Message = dict[str, str]
# In a reply: Asterisk goes away at this point (the session is closed, the rest is not sent).
CLOSE: Mapping[str, str] = MappingProxyType({})
Reply: TypeAlias = Sequence[Mapping[str, str]] | Callable[[Message], Sequence[Mapping[str, str]]]
T = TypeVar("T")


def list_reply(events: Sequence[Mapping[str, str]], complete_event: str,
               message: str = "List will follow") -> list[Message]:
    """An AMI event list as Asterisk sends one: the acknowledgement, the events, the Complete event."""
    return [{"Response": "Success", "EventList": "start", "Message": message},
            *({"Event": e["Event"], **e} for e in events),
            {"Event": complete_event, "EventList": "Complete", "ListItems": str(len(events))}]


def read_recording(path: Path) -> list[Message]:
    """The messages of an AMI conversation saved as received (CRLF, a blank line after each message); lines
    starting with `#` are notes, not AMI."""
    text = path.read_bytes().decode()
    lines = [line for line in text.split(EOL) if not line.startswith("#")]
    return [message for block in EOL.join(lines).split(EOL + EOL) if (message := _parse(block))]


def _encode(message: Mapping[str, str]) -> bytes:
    return ("".join(f"{key}: {value}{EOL}" for key, value in message.items()) + EOL).encode()


class _Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.user: str | None = None
        self.events = False

    async def send(self, message: Mapping[str, str]) -> None:
        self.writer.write(_encode(message))
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()


class FakeAmi:
    def __init__(self, users: Mapping[str, str] | None = None, *, login_delay: float | None = 0.0,
                 deny: Sequence[str] = ()) -> None:
        self.users = dict(users or {})
        self.login_delay = login_delay
        self.deny = {d.lower() for d in deny}
        self.host = "127.0.0.1"
        self.port = 0
        self.actions: list[Message] = []
        self.logins: list[tuple[str, bool]] = []
        self.connections = 0
        # True: actions are read and never answered, as by an Asterisk that hangs or a connection a firewall
        # silently dropped (the socket stays open).
        self.silent = False
        self._replies: dict[str, Reply] = {}
        self._sessions: set[_Session] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def reply(self, action: str, reply: Reply) -> None:
        """What to answer `action` (case-insensitive) with, from now on."""
        self._replies[action.lower()] = reply

    async def start(self, port: int = 0) -> FakeAmi:
        """Listen on `port` (0: a free one; a port used before: Asterisk coming back where it was)."""
        self._server = await asyncio.start_server(self._serve, self.host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and close every session; the port then refuses connections."""
        if self._server is not None:
            self._server.close()
        await self.drop()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def drop(self) -> None:
        """Close every open session (the client sees the connection lost)."""
        for session in list(self._sessions):
            session.writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def idle(self) -> None:
        """Return once every session has ended (the clients closed their connections)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def emit(self, event: Mapping[str, str]) -> int:
        """Send `event` to every logged-in session with events on; how many got it."""
        sent = 0
        for session in list(self._sessions):
            if session.user is not None and session.events:
                await session.send(event)
                sent += 1
        return sent

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    async def __aenter__(self) -> FakeAmi:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    # -- one session

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        session = _Session(reader, writer)
        self._sessions.add(session)
        self.connections += 1
        try:
            writer.write(GREETING.encode())
            while True:
                try:
                    block = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                action = _parse(block.decode(errors="replace"))
                if action and not await self._handle(session, action):
                    return
        except asyncio.CancelledError:
            # drop() and stop() end a session by cancelling it: that is the session's normal end, as a
            # restarting Asterisk's; the finally below closes its socket.
            pass
        finally:
            self._sessions.discard(session)
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _handle(self, session: _Session, action: Message) -> bool:
        """Answer one action; False when the session ends."""
        name = action.get("Action", "").lower()
        self.actions.append({k: ("********" if k.lower() == "secret" else v) for k, v in action.items()})
        ids = {"ActionID": action["ActionID"]} if "ActionID" in action else {}
        if self.silent:
            return True
        if name == "login":
            if self.login_delay is None:  # never answers; the session ends when the client goes away
                with contextlib.suppress(ConnectionError):
                    await session.reader.read()
                return False
            await asyncio.sleep(self.login_delay)
            user = action.get("Username", "")
            ok = user in self.users and self.users[user] == action.get("Secret")
            self.logins.append((user, ok))
            if not ok:
                await session.send({"Response": "Error", **ids, "Message": "Authentication failed"})
                return False
            session.user = user
            session.events = action.get("Events", "on").lower() not in ("off", "no", "false")
            await session.send({"Response": "Success", **ids, "Message": "Authentication accepted"})
            if session.events:
                await session.send({"Event": "FullyBooted", "Privilege": "system,all", "Status": "Fully Booted"})
            return True
        if session.user is None:
            await session.send({"Response": "Error", **ids, "Message": "Authentication Required"})
            return True
        if name == "logoff":
            await session.send({"Response": "Goodbye", **ids, "Message": "Thanks for all the fish."})
            return False
        if name == "ping":
            await session.send({"Response": "Success", **ids, "Ping": "Pong", "Timestamp": "1764777600.000000"})
            return True
        if name in self.deny:
            await session.send({"Response": "Error", **ids, "Message": "Permission denied"})
            return True
        reply = self._replies.get(name)
        if reply is None:
            await session.send({"Response": "Error", **ids, "Message": "Invalid/unknown command"})
            return True
        for message in (reply(action) if callable(reply) else reply):
            if message is CLOSE:
                return False
            # A recorded message's own ActionID gives way to this action's.
            body = {k: v for k, v in message.items() if k.lower() != "actionid"}
            first = "Response" if "Response" in body else "Event"
            await session.send({first: body[first], **ids, **body})
        return True


def _parse(block: str) -> Message:
    message: Message = {}
    for line in block.split(EOL):
        key, sep, value = line.partition(":")
        if sep:
            message[key.strip()] = value.strip()
    return message


class FakeAmiThread:
    """A FakeAmi on its own event loop in a thread, for a subprocess to talk to."""

    def __init__(self, **kwargs: object) -> None:
        self.fake = FakeAmi(**kwargs)  # type: ignore[arg-type]
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def call(self, make: Callable[[FakeAmi], Awaitable[T]]) -> T:
        async def run() -> T:
            return await make(self.fake)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    @property
    def port(self) -> int:
        return self.fake.port

    def __enter__(self) -> FakeAmiThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.start(), self.loop).result(10)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
