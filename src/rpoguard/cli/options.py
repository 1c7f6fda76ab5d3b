"""Argument types and the options several commands share. A bad value is argparse's error (exit 2, with
the usage line), except numbers, whose message comes from the normaliser."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rpoguard.cli.common import UsageError
from rpoguard.config import EVENT_LOOPS, MAX_PORT
from rpoguard.ingest.csvfile import DEFAULT_ENCODING, encoding_name
from rpoguard.numbers import NumberError, normalize, normalize_caller_id
from rpoguard.timeutil import TimeFormatError, parse_date, parse_time


def time_arg(text: str) -> datetime:
    try:
        return parse_time(text)
    except TimeFormatError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def date_arg(text: str) -> Any:
    try:
        return parse_date(text)
    except TimeFormatError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def encoding_arg(text: str) -> str:
    try:
        return encoding_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _int_from(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be {minimum} or more")
        return value

    return parse


positive_int = _int_from(1)
non_negative_int = _int_from(0)


def port(text: str) -> int:
    value = non_negative_int(text)
    if value > MAX_PORT:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0..{MAX_PORT}; 0 picks a free one)")
    return value


def number(text: str) -> str:
    try:
        return normalize(text).e164
    except NumberError as exc:
        raise UsageError(str(exc)) from None


def caller_id(text: str) -> str:
    try:
        return normalize_caller_id(text)
    except NumberError as exc:
        raise UsageError(f"caller ID: {exc}") from None


def json_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def encoding_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoding", type=encoding_arg, default=DEFAULT_ENCODING, metavar="NAME",
                        help="the input files' encoding: utf-8 (default; a byte-order mark is fine), cp1252 "
                             "(Windows-1252, what Excel saves in Italy), latin-1, utf-16...")


def csv_import_options(parser: argparse.ArgumentParser) -> None:
    """What every CSV import (consents, contracts, refusals) takes: the file, --skip-invalid, --json, --encoding."""
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("--skip-invalid", action="store_true", help="import the good rows and report the bad ones")
    json_option(parser, "the import's summary (one object)")
    encoding_option(parser)


def column_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--column", metavar="NAME|N",
                        help="the column holding the numbers, by its header name or its number from 1 (default: "
                             "the column the header names telefono, cellulare, numero, phone...; else the only "
                             "one holding numbers)")


def event_loop_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--event-loop", choices=EVENT_LOOPS,
                        help="asyncio's own loop or uvloop (pip install 'rpoguard[uvloop]'); default: [serve] "
                             "event_loop in the config, else asyncio")
