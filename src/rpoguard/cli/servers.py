"""serve, ari, agi: the front ends Asterisk talks to."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
from pathlib import Path

from rpoguard import __version__
from rpoguard.agi.ari import AriClient, AriGate
from rpoguard.agi.routes import build_routes
from rpoguard.agi.server import FastAgiServer
from rpoguard.agi.stdio import serve_stdio
from rpoguard.cli import options
from rpoguard.cli.common import StoreCommand, Subcommands, UsageError, declare
from rpoguard.cli.runner import ServerCommand, Service, ServiceFactory
from rpoguard.config import Config
from rpoguard.db.store import Store
from rpoguard.db.supervisor import SupervisedStore
from rpoguard.db.urls import display_name
from rpoguard.gate import Gate

log = logging.getLogger(__name__)


class _FastAgi:
    """`rpoguard serve`: the FastAGI server, as the runner drives it."""

    name = "FastAGI server"

    def __init__(self, server: FastAgiServer, host: str, port: int, config: Config) -> None:
        self.server = server
        self.host = host
        self.port = port
        self.db = config.db

    async def start(self) -> None:
        try:
            await self.server.start()
        except OSError as exc:
            # A busy port, a privileged one, an address this machine does not have: the operator's to fix.
            raise UsageError(f"cannot listen on {self.host}:{self.port}:"
                             f" {os.strerror(exc.errno).lower() if exc.errno else exc}") from None
        log.warning("rpoguard %s: FastAGI gate listening on %s:%d (database %s, event loop %s)", __version__,
                    self.host, self.server.port, display_name(self.db),
                    type(asyncio.get_running_loop()).__module__.split(".")[0])

    async def serve(self) -> None:
        await self.server.serve_forever()

    async def stop(self) -> None:
        await self.server.stop()

    async def close(self) -> None:
        """Nothing beyond what stop() closes."""


def _prepare_serve(args: argparse.Namespace, config: Config) -> ServiceFactory:
    serve = config.serve

    listen = dataclasses.replace(serve, host=args.host or serve.host,
                                 port=serve.port if args.port is None else args.port)

    def build(store: SupervisedStore) -> Service:
        return _FastAgi(FastAgiServer(listen, build_routes(Gate(store, config))), listen.host, listen.port, config)

    return build


ENV_ARI_PASSWORD = "RPOGUARD_ARI_PASSWORD"  # noqa: S105 (the name of a variable, not a password)


def _ari_password(args: argparse.Namespace, config: Config) -> str:
    """--password, else RPOGUARD_ARI_PASSWORD, else [ari] password_file, else [ari] password."""
    if args.password is not None:
        return str(args.password)
    from_env = os.environ.get(ENV_ARI_PASSWORD)
    if from_env:
        return from_env
    ari = config.ari
    if ari.password_file:
        try:
            text = Path(ari.password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read the ARI password file {ari.password_file}: {exc.strerror}") from exc
        # One line; a trailing newline from an editor is not part of the password.
        password = text.rstrip("\r\n")
        if not password:
            raise UsageError(f"the ARI password file {ari.password_file} is empty")
        return password
    if ari.password:
        return ari.password
    raise UsageError(f"no ARI password: set {ENV_ARI_PASSWORD}, [ari] password_file in the config, or --password")


class _Ari:
    """`rpoguard ari`: the Stasis application, as the runner drives it."""

    name = "ARI gate"

    def __init__(self, gate: AriGate, client: AriClient, user: str, config: Config) -> None:
        self.gate = gate
        self.client = client
        self.user = user
        self.db = config.db

    async def start(self) -> None:
        log.warning("rpoguard %s: ARI gate for Stasis(%s,...) on %s as %s (database %s)", __version__,
                    self.gate.app, self.client.base, self.user, self.db)

    async def serve(self) -> None:
        await self.gate.run()

    async def stop(self) -> None:
        self.gate.stop()

    async def close(self) -> None:
        await self.client.close()


def _prepare_ari(args: argparse.Namespace, config: Config) -> ServiceFactory:
    ari = config.ari
    user = args.user or ari.user
    if not user:
        raise UsageError("no ARI user: give --user or set [ari] user in the config (a user of Asterisk's ari.conf)")
    ari = dataclasses.replace(ari, url=args.url or ari.url, user=user, app=args.app or ari.app)
    try:
        client = AriClient(ari, _ari_password(args, config))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not ari.app or "," in ari.app:
        raise UsageError(f"--app {ari.app!r}: must be a non-empty name without commas")

    # As `serve`: the database is opened under supervision, so a missing one blocks with engine_error.
    def build(store: SupervisedStore) -> Service:
        return _Ari(AriGate(ari, client, Gate(store, config)), client, user, config)

    return build


async def cmd_agi(args: argparse.Namespace, store: Store, config: Config) -> int:
    # The AGI arguments also arrive as agi_arg_N in the environment, where the route reads them; the copies
    # Asterisk puts on the command line are ignored so that a value starting with '-' cannot break parsing.
    return await serve_stdio(build_routes(Gate(store, config)), args.route,
                             session_deadline=config.serve.session_deadline)


def register(commands: Subcommands) -> None:
    p = commands.add_parser("serve", help="run the FastAGI gate for Asterisk (127.0.0.1:4573 by default)",
                            description="Run the FastAGI gate. Asterisk asks it before each call with "
                                        "AGI(agi://127.0.0.1:4573/check?campaign=C,NUMBER); see "
                                        "dialplan/rpoguard.conf. "
                                        "Stops cleanly on SIGTERM, finishing the calls in flight.")
    declare(p, ServerCommand(_prepare_serve, "rpoguard stopped", freeze_heap=True))
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; another address needs "
                                  "[serve] allowed_clients in the config: FastAGI has no authentication)")
    p.add_argument("--port", type=options.port, help="port to listen on (default 4573)")
    options.event_loop_option(p)

    p = commands.add_parser("ari", help="run the ARI gate: a Stasis application deciding like FastAGI's check",
                            description="Run the ARI gate. A channel entering Stasis(APP,NUMBER,CAMPAIGN"
                                        "[,CALLER_ID]) is decided as FastAGI's check decides it: an allowed "
                                        "one continues in the dialplan, a blocked one is hung up with cause "
                                        "21. See rpoguard-check-ari in dialplan/rpoguard.conf. Options "
                                        "default to the [ari] section of the config. Reconnects by itself; "
                                        "stops on SIGTERM.")
    declare(p, ServerCommand(_prepare_ari, "rpoguard ari stopped"))
    p.add_argument("--url", help="Asterisk's HTTP server (http.conf), default http://127.0.0.1:8088")
    p.add_argument("--app", help="the Stasis application name (default rpoguard)")
    options.event_loop_option(p)
    p.add_argument("--user", help="an ari.conf user")
    p.add_argument("--password", help=f"its password; better {ENV_ARI_PASSWORD} or [ari] password_file, "
                                      "since a command line is visible to every local user")

    p = commands.add_parser("agi", help="the same routes as a classic AGI program (one process per call)",
                            description="Serve one classic AGI session on standard input/output, for "
                                        "AGI(rpoguard-agi,check,NUMBER,CAMPAIGN) from agi-bin. Slower than "
                                        "'serve': a new process per call.")
    declare(p, StoreCommand(cmd_agi))
    p.add_argument("--route", choices=("check", "optout"),
                   help="the route to run (default: the first AGI argument, or the program name rpoguard-ROUTE)")
    p.add_argument("agi_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
