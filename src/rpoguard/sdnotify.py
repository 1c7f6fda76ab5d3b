"""systemd's notification protocol without a dependency: datagrams to $NOTIFY_SOCKET (sd_notify(3)).

Under `Type=notify` the servers say READY=1 once they serve, STATUS= lines on the way, STOPPING=1 on
shutdown, and WATCHDOG=1 from a task on their event loop: a wedged loop stops pinging and systemd restarts
it. Outside systemd (no $NOTIFY_SOCKET) nothing at all is sent."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

from rpoguard.constants import ENV_NOTIFY_SOCKET, ENV_WATCHDOG_PID, ENV_WATCHDOG_USEC

log = logging.getLogger(__name__)


class Notifier:
    """Sends notifications to one socket; a send never blocks and a failure is logged once, not per ping."""

    def __init__(self, address: str | None) -> None:
        self._address = _socket_address(address) if address else None
        self._sock: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environ(cls, env: Mapping[str, str] | None = None) -> Notifier:
        return cls((os.environ if env is None else env).get(ENV_NOTIFY_SOCKET) or None)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *lines: str) -> bool:
        """Send `lines` as one datagram; whether it went (always False outside systemd)."""
        if self._address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            # systemd gone or its queue full: the service keeps serving; once in the log is enough.
            if not self._failed:
                self._failed = True
                log.warning("systemd notification to %s failed: %s", self._address, exc)
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _socket_address(address: str) -> str | bytes:
    # '@name' is Linux's abstract namespace: a leading NUL byte instead of a path.
    return b"\0" + address[1:].encode() if address.startswith("@") else address


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None when the watchdog is off for
    this process (sd_watchdog_enabled: unset or invalid value, or $WATCHDOG_PID naming another process)."""
    env = os.environ if env is None else env
    usec = env.get(ENV_WATCHDOG_USEC, "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = env.get(ENV_WATCHDOG_PID)
    if owner is not None and owner != str(os.getpid() if pid is None else pid):
        return None
    return int(usec) / 2 / 1_000_000


async def watchdog(notifier: Notifier, interval: float) -> None:
    """Ping every `interval` seconds until cancelled; runs on the service's own loop on purpose."""
    while True:
        notifier.send("WATCHDOG=1")
        await asyncio.sleep(interval)
