"""Asterisk's manager interface (AMI) for `watch` and `dialplan audit`: where to connect and as whom (the
[ami] section, overridden by --ami/--ami-user/--ami-secret), and one connection with panoramisk.

panoramisk's Manager reconnects by itself when its connection drops, and pings on a timer of its own. Both
are off here: a caller that wants another connection asks for one (watch records the gap as a finding), and
pings its own way. The secret never appears in a message, a log line or a repr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panoramisk import Manager
from panoramisk.ami_protocol import AMIProtocol

from rpoguard.config import MAX_PORT, AmiConfig

log = logging.getLogger(__name__)

ENV_AMI_SECRET = "RPOGUARD_AMI_SECRET"  # noqa: S105 (the name of a variable, not a secret)
# After close(): how long to wait for the socket to be released, so that no transport outlives the loop.
_CLOSE_WAIT = 1.0


class AmiSettingsError(ValueError):
    """No usable AMI address, user or secret: the message says what to set."""


class AmiUnavailable(Exception):
    """Asterisk's manager could not be reached, refused the login, or went away."""


@dataclass(frozen=True)
class AmiTarget:
    host: str
    port: int
    user: str
    secret: str

    def __repr__(self) -> str:
        return f"AmiTarget(host={self.host!r}, port={self.port}, user={self.user!r}, secret=<hidden>)"

    __str__ = __repr__

    def describe(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"


def _address(text: str, default_port: int) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT, or HOST alone (the [ami] port)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise AmiSettingsError(f"--ami {text!r}: expected HOST:PORT or [IPv6]:PORT")
        port_text = rest[1:] if rest else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise AmiSettingsError(f"--ami {text!r}: no host (expected HOST:PORT, e.g. 127.0.0.1:5038)")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= MAX_PORT:
        raise AmiSettingsError(f"--ami {text!r}: the port must be 1..{MAX_PORT}")
    return host, int(port_text)


def _secret(config: AmiConfig, secret: str | None) -> str | None:
    """--ami-secret, else RPOGUARD_AMI_SECRET, else [ami] secret_file, else [ami] secret."""
    if secret:
        return secret
    from_env = os.environ.get(ENV_AMI_SECRET)
    if from_env:
        return from_env
    if config.secret_file:
        try:
            text = Path(config.secret_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise AmiSettingsError(f"cannot read the AMI secret file {config.secret_file}: {reason}") from None
        if not text.strip():
            raise AmiSettingsError(f"the AMI secret file {config.secret_file} is empty")
        return text.strip()
    return config.secret or None


def ami_target(config: AmiConfig, *, address: str | None = None, user: str | None = None,
               secret: str | None = None) -> AmiTarget:
    """Where and as whom to log in: the options override the [ami] section of the config."""
    host, port = _address(address, config.port) if address else (config.host, config.port)
    login = user or config.user
    if not login:
        raise AmiSettingsError("no AMI user: give --ami-user or set [ami] user in the config (a user of "
                               "Asterisk's manager.conf)")
    password = _secret(config, secret)
    if not password:
        raise AmiSettingsError(f"no AMI secret for user {login}: set {ENV_AMI_SECRET}, [ami] secret_file in the "
                               "config, or --ami-secret")
    return AmiTarget(host=host, port=port, user=login, secret=password)


def add_ami_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ami", metavar="HOST:PORT",
                        help="Asterisk's manager interface (default: [ami] host and port, 127.0.0.1:5038)")
    parser.add_argument("--ami-user", metavar="USER", help="a manager.conf user (default: [ami] user)")
    parser.add_argument("--ami-secret", metavar="SECRET",
                        help=f"its secret; better {ENV_AMI_SECRET} or [ami] secret_file, since a command line "
                             "is visible to every local user (ps)")


class _Protocol(AMIProtocol):
    """panoramisk's protocol, telling when its socket is really closed."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.gone.done():
            self.gone.set_result(None)


class _OneShotManager(Manager):  # type: ignore[misc]
    """A Manager that neither reconnects nor pings by itself (see the module's docstring)."""

    def ping(self) -> None:
        """No timer of its own: `watch` pings with its own timeout."""

    def connection_lost(self, exc: Any) -> None:
        self._connected = False
        if self.pinger:
            self.pinger.cancel()
            self.pinger = None
        if self.authenticated:  # a refused login ends the session: that is said once, by connect()
            log.warning("AMI connection to %s:%s lost", self.config["host"], self.config["port"])
        # Actions still waiting for an answer will get none: fail them instead of waiting for ever.
        while self.awaiting_actions:
            action = self.awaiting_actions.popleft()
            if not action.future.done():
                action.future.set_exception(AmiUnavailable("the AMI connection was lost before Asterisk answered"))
                # Awaiting it still raises; nobody awaiting it is no reason for asyncio to log it at exit.
                action.future.exception()
        self.loop.call_soon(self.on_disconnect, self, exc)


async def disconnect(manager: Manager) -> None:
    """Close the connection and wait until its socket is released (no reconnection, nothing left pending)."""
    manager.close()
    protocol = getattr(manager, "protocol", None)
    gone = getattr(protocol, "gone", None)
    if gone is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(gone), _CLOSE_WAIT)


# One deadline for both steps (the socket, then the login), so the caller passes the time it allows.
async def connect(target: AmiTarget, *, events: bool, timeout: float) -> Manager:  # noqa: ASYNC109
    """A logged-in panoramisk Manager, or AmiUnavailable within `timeout` seconds. Close it with
    `disconnect()` (or `Manager.close()`); it never reconnects by itself."""
    loop = asyncio.get_running_loop()
    where = f"{target.host}:{target.port}"
    manager = _OneShotManager(host=target.host, port=target.port, username=target.user, secret=target.secret,
                              events="on" if events else "off", ping_delay=0, loop=loop, log=log,
                              protocol_factory=_Protocol)
    deadline = loop.time() + timeout
    try:
        async with asyncio.timeout_at(deadline):
            transport, protocol = await loop.create_connection(_Protocol, target.host, target.port)
    except TimeoutError:
        raise AmiUnavailable(f"cannot reach Asterisk's manager at {where}: no connection within {timeout:g} s") \
            from None
    except OSError as exc:
        # asyncio words a refusal "Connect call failed (...)": the errno says it better; a name that does not
        # resolve has only its resolver's words.
        if isinstance(exc, socket.gaierror) or not exc.errno or exc.errno < 0:
            reason = f"{exc.strerror or exc}".lower()
        else:
            reason = os.strerror(exc.errno).lower()
        raise AmiUnavailable(f"cannot reach Asterisk's manager at {where}: {reason}") from None
    # panoramisk's own connect() would retry a failed connection for ever: the socket is made here, and the
    # Manager takes it over as if it had made it (it then sends the Login).
    made: asyncio.Future[tuple[Any, Any]] = loop.create_future()
    made.set_result((transport, protocol))
    manager.connection_made(made)
    login = manager.authenticated_future
    try:
        # asyncio.wait, not wait_for: cancelling the login future would raise inside panoramisk's callback.
        await asyncio.wait({login, protocol.gone}, timeout=max(0.0, deadline - loop.time()),
                           return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # cancelled while logging in: the socket is not left behind
        manager.close()
        raise
    if not login.done():
        closed = protocol.gone.done()
        await disconnect(manager)
        raise AmiUnavailable(f"Asterisk's manager at {where} " + ("closed the connection before answering the login"
                             if closed else f"did not answer the login within {timeout:g} s"))
    reply = login.result()
    if not manager.authenticated:
        await disconnect(manager)
        said = str(reply.get("Message", "") or reply.get("Response", "")).strip()
        raise AmiUnavailable(f"Asterisk's manager at {where} refused the login of user {target.user}"
                             + (f" ({said})" if said else "") + ": check the user and secret in manager.conf")
    log.info("AMI: logged in as %s (events %s)", target.describe(), "on" if events else "off")
    return manager
