"""watch: every trunk leg Asterisk dials, matched live to its ALLOW decision (docs/bypass.md)."""

from __future__ import annotations

import argparse
import dataclasses

from rpoguard.bypass.ami import AmiSettingsError, add_ami_options, ami_target
from rpoguard.bypass.watch import AmiWatch, BypassWatcher
from rpoguard.cli.common import Subcommands, UsageError, declare
from rpoguard.cli.runner import ServerCommand, Service, ServiceFactory
from rpoguard.config import Config
from rpoguard.db.supervisor import SupervisedStore


def _prepare_watch(args: argparse.Namespace, config: Config) -> ServiceFactory:
    try:
        target = ami_target(config.ami, address=args.ami, user=args.ami_user, secret=args.ami_secret)
    except AmiSettingsError as exc:
        raise UsageError(str(exc)) from None
    watch = config.watch
    if args.trunk:
        watch = dataclasses.replace(watch, trunks=tuple(args.trunk))
    if not watch.trunks:
        raise UsageError('no trunks to watch: set [watch] trunks = ["PJSIP/carrier-*"] in the config, or give '
                         "--trunk PATTERN (the channel names of your carrier endpoints)")

    def build(store: SupervisedStore) -> Service:
        watcher = BypassWatcher(store, watch, watching=target.describe(), trunk_prefix=config.trunk_prefix,
                                enforce=args.enforce)
        service = AmiWatch(watcher, target, config.ami)
        watcher.hangup = service.hangup
        return service

    return build


def register(commands: Subcommands) -> None:
    p = commands.add_parser(
        "watch", help="report (and with --enforce hang up) every call that reaches a trunk without the gate",
        description="Follow Asterisk's manager interface (AMI) and match every call dialled on a trunk ([watch] "
                    "trunks) to an ALLOW decision for the same call and number, made shortly before and used "
                    "once. A call without one is a bypass: logged at ERROR, stored (see `findings list`), and "
                    "with --enforce hung up at once. A period without AMI is stored as 'not watched'.")
    add_ami_options(p)
    p.add_argument("--trunk", action="append", metavar="PATTERN",
                   help="a trunk's channel names, e.g. 'PJSIP/carrier-*' (repeatable; default [watch] trunks)")
    p.add_argument("--enforce", action="store_true",
                   help="also hang up a bypassing call's trunk leg through AMI (needs write = call)")
    declare(p, ServerCommand(_prepare_watch, stopped="rpoguard watch stopped"))
