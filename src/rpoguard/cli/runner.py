"""Starting the long-lived front ends (`serve`, `ari`) and stopping them: the event loop they run on, the
database opened under supervision, the heap frozen once started, SIGTERM and SIGINT.

A server command is a ServerCommand: its `prepare` reads and checks the options before anything is opened
(a usage error is then all the operator sees) and returns what builds the Service around the gate's store;
run_service does the rest, the same way for every front end."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from rpoguard.anchor import writer_from_config
from rpoguard.cli.common import EXIT_OK, LoopFactory
from rpoguard.config import Config, ConfigError
from rpoguard.db.supervisor import SupervisedStore

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Service(Protocol):
    """A front end the runner starts, runs until a stop signal, and closes."""

    # For the log: "received SIGTERM: stopping the <name>".
    name: str

    async def start(self) -> None:
        """Get ready (listen) and log where; a problem the operator must fix is a UsageError."""

    async def serve(self) -> None:
        """Run until stop() has taken effect."""

    async def stop(self) -> None:
        """Stop cleanly, dealing with what is in flight; serve() then returns."""

    async def close(self) -> None:
        """Release what the service holds besides the store; called however start() or serve() ended."""


ServiceFactory = Callable[[SupervisedStore], Service]


@dataclass(frozen=True, slots=True)
class ServerCommand:
    """A long-lived front end. `stopped`: the line logged once it stopped cleanly. `freeze_heap`: move what
    start-up loaded out of the garbage collector's reach (see run_service)."""

    prepare: Callable[[argparse.Namespace, Config], ServiceFactory]
    stopped: str
    freeze_heap: bool = False

    def loop_factory(self, args: argparse.Namespace, config: Config) -> LoopFactory | None:
        name = getattr(args, "event_loop", None) or config.serve.event_loop
        if name == "asyncio":
            return None
        try:
            import uvloop  # noqa: PLC0415 -- optional: imported only when chosen
        except ImportError:
            raise ConfigError("event loop uvloop chosen, but uvloop is not installed (pip install "
                              "'rpoguard[uvloop]'), or choose asyncio") from None
        factory: LoopFactory = uvloop.new_event_loop
        return factory

    async def run(self, args: argparse.Namespace, config: Config) -> int:
        return await run_service(self.prepare(args, config), config, stopped=self.stopped,
                                 freeze_heap=self.freeze_heap)


async def supervised_store(config: Config) -> SupervisedStore:
    """The servers open the database themselves, under supervision: they start and stay up without one,
    blocking every call with engine_error until the database is (back) in place."""
    supervised = SupervisedStore.for_database(config.db, anchor=writer_from_config(config.audit, config.db))
    await supervised.start()
    return supervised


async def run_service(build: ServiceFactory, config: Config, *, stopped: str, freeze_heap: bool) -> int:
    supervised = await supervised_store(config)
    try:
        service = build(supervised)
        try:
            await service.start()
            if freeze_heap:
                # Everything loaded so far (phonenumbers' metadata, holidays, compiled regexes) lives as long
                # as the server: out of the collector's reach, garbage collections stay short during calls.
                gc.collect()
                gc.freeze()
            await serve_until_signalled(service)
        finally:
            await service.close()
    finally:
        await supervised.close()
    log.warning(stopped)
    return EXIT_OK


async def serve_until_signalled(service: Service) -> None:
    """Serve until SIGTERM or SIGINT, then stop the service and wait for it (a second signal changes nothing)."""
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def on_signal(signum: signal.Signals) -> None:
        log.info("received %s: stopping the %s", signum.name, service.name)
        if not stopping:
            stopping.append(loop.create_task(service.stop()))

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await service.serve()
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        if stopping:
            await stopping[0]
