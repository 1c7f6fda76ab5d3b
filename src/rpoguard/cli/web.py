"""web: the compliance console (docs/console.md)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import logging
import os
import ssl

from aiohttp import web

from rpoguard import __version__
from rpoguard.cli.common import Subcommands, UsageError, declare
from rpoguard.cli.runner import ServerCommand, Service, ServiceFactory
from rpoguard.config import Config, WebConfig
from rpoguard.db.supervisor import SupervisedStore
from rpoguard.db.urls import display_name
from rpoguard.web.app import make_app

log = logging.getLogger(__name__)

# How long a stopping console lets requests in flight finish (an upload's import keeps its own transaction:
# cut short, it leaves the old data serving).
SHUTDOWN_GRACE = 5.0


class _Console:
    name = "console"

    def __init__(self, app: web.Application, listen: WebConfig, config: Config) -> None:
        self.app = app
        self.listen = listen
        self.db = config.db
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE)
        self.site: web.TCPSite | None = None
        self.port = listen.port
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        await self.runner.setup()
        context = _tls_context(self.listen) if self.listen.tls else None
        self.site = web.TCPSite(self.runner, self.listen.host, self.listen.port, ssl_context=context)
        try:
            await self.site.start()
        except OSError as exc:
            raise UsageError(f"cannot listen on {self.listen.host}:{self.listen.port}:"
                             f" {os.strerror(exc.errno).lower() if exc.errno else exc}") from None
        # The port it really listens on (0 picks a free one): tests and the log need it.
        self.port = int(self.runner.addresses[0][1])
        scheme = "https" if self.listen.tls else "http"
        log.warning("rpoguard %s: console on %s://%s:%d/ (database %s)", __version__, scheme, self.listen.host,
                    self.port, display_name(self.db))

    async def serve(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        self._stopped.set()

    async def close(self) -> None:
        await self.runner.cleanup()


def _tls_context(listen: WebConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(listen.tls_cert), str(listen.tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load the console's TLS certificate {listen.tls_cert} and key {listen.tls_key}:"
                         f" {exc}") from None
    return context


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(listen: WebConfig) -> None:
    """Loopback by default. Beyond it passwords and session cookies would cross the network: only with TLS
    served here, or an explicit allow_plain_http / --allow-plain-http (e.g. a TLS proxy on another host of a
    private network)."""
    if is_loopback(listen.host) or listen.tls or listen.allow_plain_http:
        return
    raise UsageError(f"refusing to serve the console on {listen.host} over plain HTTP: passwords and session "
                     "cookies would cross the network in clear. Keep it on 127.0.0.1 behind a TLS reverse proxy "
                     "(deploy/nginx-rpoguard.conf), set [web] tls_cert and tls_key, or, knowing why, "
                     "--allow-plain-http")


def _prepare_web(args: argparse.Namespace, config: Config) -> ServiceFactory:
    listen = dataclasses.replace(config.web, host=args.host or config.web.host,
                                 port=config.web.port if args.port is None else args.port,
                                 allow_plain_http=config.web.allow_plain_http or args.allow_plain_http)
    check_listen(listen)
    config = dataclasses.replace(config, web=listen)

    def build(store: SupervisedStore) -> Service:
        return _Console(make_app(store, config), listen, config)

    return build


def register(commands: Subcommands) -> None:
    p = commands.add_parser(
        "web", help="the compliance console: a web page for operators and DPOs (127.0.0.1:8470)",
        description="Serve the compliance console: overview, a number's evidence and decisions, the decision "
                    "log, imports, the numbers due for the RPO, the audit, principals and campaigns. Log in "
                    "with a user made by `rpoguard user add`. Loopback only unless TLS is configured "
                    "([web] tls_cert, tls_key) or --allow-plain-http is given.")
    p.add_argument("--host", help="address to listen on (default [web] host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default [web] port, 8470; 0 picks a free one)")
    p.add_argument("--allow-plain-http", action="store_true",
                   help="listen beyond loopback without TLS (only on a network you trust, behind a TLS proxy)")
    declare(p, ServerCommand(_prepare_web, stopped="rpoguard web stopped"))
