"""Starting the long-lived front ends (`serve`, `ari`, `watch`, `web`) and stopping them: the event loop they
run on, the database opened under supervision, the heap frozen once started, SIGTERM and SIGINT, and
systemd's notifications (READY=1, WATCHDOG=1, STOPPING=1) when it runs them (sdnotify.py).

A server command is a ServerCommand: its `prepare` reads and checks the options before anything is opened
(a usage error is then all the operator sees) and returns what builds the Service around the gate's store;
run_service does the rest, the same way for every front end."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from rpoguard.anchor import writer_from_config
from rpoguard.cli.common import EXIT_OK, LoopFactory
from rpoguard.config import Config, ConfigError
from rpoguard.db.store import StoreError
from rpoguard.db.supervisor import WATCH_INTERVAL, SupervisedStore
from rpoguard.sdnotify import Notifier, watchdog, watchdog_interval

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
    notifier = Notifier.from_environ()
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
            async with _systemd(notifier, supervised, service.name):
                await serve_until_signalled(service, notifier)
        finally:
            await service.close()
    finally:
        await supervised.close()
        notifier.close()
    log.warning(stopped)
    return EXIT_OK


@contextlib.asynccontextmanager
async def _systemd(notifier: Notifier, store: SupervisedStore, name: str) -> AsyncIterator[None]:
    """While the service serves: READY=1 once the store has answered (the service listens already), and the
    watchdog's pings from this loop. Nothing runs outside systemd."""
    if not notifier.enabled:
        yield
        return
    tasks = [asyncio.create_task(_ready(notifier, store, name))]
    interval = watchdog_interval()
    if interval is not None:
        tasks.append(asyncio.create_task(watchdog(notifier, interval)))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _ready(notifier: Notifier, store: SupervisedStore, name: str) -> None:
    """READY=1 after one answered query. Until then the service is up but blocks every call (engine_error):
    systemd and whoever is ordered after it wait, and STATUS= says why."""
    told = ""
    while True:
        try:
            await store.get_campaign("")
        except StoreError as exc:
            cause = f"waiting for the database: {exc}"
            if cause != told:
                notifier.send(f"STATUS={cause}")
                told = cause
            await asyncio.sleep(WATCH_INTERVAL)
            continue
        notifier.send("READY=1", f"STATUS={name} serving")
        return


async def serve_until_signalled(service: Service, notifier: Notifier | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then stop the service and wait for it (a second signal changes nothing)."""
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def on_signal(signum: signal.Signals) -> None:
        log.info("received %s: stopping the %s", signum.name, service.name)
        if not stopping:
            if notifier is not None:
                notifier.send("STOPPING=1", f"STATUS=stopping ({signum.name})")
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
