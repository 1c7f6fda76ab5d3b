"""Placeholder until the AMI helper lands (the same API)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from rpoguard.config import AmiConfig

ENV_AMI_SECRET = "RPOGUARD_AMI_SECRET"  # noqa: S105


class AmiSettingsError(ValueError):
    pass


@dataclass(frozen=True)
class AmiTarget:
    host: str
    port: int
    user: str
    secret: str = field(repr=False)

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def ami_target(config: AmiConfig, *, address: str | None = None, user: str | None = None,
               secret: str | None = None) -> AmiTarget:
    host, port = config.host, config.port
    if address:
        host, _, port_text = address.rpartition(":")
        port = int(port_text)
    secret = secret or os.environ.get(ENV_AMI_SECRET) or config.secret
    if not (user or config.user) or not secret:
        raise AmiSettingsError("no AMI user or secret")
    return AmiTarget(host, port, user or config.user, secret)


def add_ami_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ami", metavar="HOST:PORT")
    parser.add_argument("--ami-user", metavar="USER")
    parser.add_argument("--ami-secret", metavar="SECRET")
