"""Asterisk's own records of calls, read as trunk legs for `reconcile` (docs/bypass.md "## reconcile").

Two formats, streamed row by row with their line numbers, never held whole:

- CDR: cdr_csv's Master.csv (no header). Sixteen columns (accountcode, src, dst, dcontext, clid, channel,
  dstchannel, lastapp, lastdata, start, answer, end, duration, billsec, disposition, amaflags), then, as
  cdr.conf [csv] says, uniqueid (loguniqueid), userfield (loguserfield) and peeraccount, linkedid, sequence
  (newcdrcolumns). Times are the PBX's local time (UTC with usegmtime).
- CEL: cel_custom's Master.csv in the layout of Asterisk's sample cel_custom.conf: Asterisk 22's legacy
  mapping (20 columns) or advanced one (24 columns), or the legacy mapping of later samples (21 columns).

A row is a trunk leg when a channel it names matches `[watch] trunks`. What cannot be read is reported
with its line, never guessed: a leg that cannot be proven covered is a finding (fail closed).
"""

from __future__ import annotations

import csv
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from rpoguard.bypass.match import SECOND_US, TrunkLeg, TrunkPatterns, dialled_number
from rpoguard.timeutil import to_us

FORMAT_CDR = "cdr"
FORMAT_CEL = "cel"

# cdr_csv's columns (0-based) and its optional tails.
_CDR_BASE = 16
_DST, _CHANNEL, _DSTCHANNEL, _LASTAPP, _LASTDATA, _START, _END = 2, 5, 6, 7, 8, 9, 11
_CDR_HEADER = {"accountcode", "src", "dst", "channel", "dstchannel"}
# Asterisk's uniqueid: seconds.sequence, optionally after the system name ([options] systemname); or an id
# an ARI or AMI originate chose (a UUID).
_UNIQUEID = re.compile(r"(?:.+-)?\d+\.\d+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_LOCAL_TIME = re.compile(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}):(\d{2})(?:\.(\d{1,6}))?")
# cel.conf without dateformat: seconds.microseconds ("%ld.%06ld"), always six digits.
_EPOCH_TIME = re.compile(r"(\d{9,11})\.(\d{6})")
# Asterisk's event names (CHAN_START, APP_START...) or a CELGenUserEvent name: one word.
_CEL_EVENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*")

# The layouts of cel_custom.conf's sample, by their number of columns: (eventtype, eventtime, exten, channame,
# appname, appdata, uniqueid, linkedid). Asterisk 22's legacy mapping (20) and advanced one (24: eventtype,
# eventenum, userdeftype, a literal, eventtime, ...), and the legacy mapping of later samples, which adds a
# literal after eventtype (21).
_CEL_LAYOUTS = {20: (0, 1, 7, 9, 10, 11, 14, 15), 21: (0, 2, 8, 10, 11, 12, 15, 16),
                24: (0, 4, 10, 12, 13, 14, 17, 18)}
CEL_CHAN_START = "CHAN_START"
CEL_APP_START = "APP_START"
# A Dial's APP_START comes milliseconds before the CHAN_START of the channels it creates; one this old
# names no channel still to come.
_DIAL_MEMORY_US = 600 * SECOND_US
# How long (in the file's time) a trunk channel waits for a Dial written after it.
_DIAL_WAIT_US = 5 * SECOND_US

NO_UNIQUEID = ("no uniqueid column, so the leg cannot be tied to its call (cdr.conf [csv] loguniqueid = yes, "
               "and newcdrcolumns = yes for the linkedid)")


@dataclass(frozen=True, slots=True)
class LegRecord:
    """A trunk leg and the line its record began on."""

    line: int
    leg: TrunkLeg


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A record that cannot be read (it may be a trunk leg: it counts as one not proven covered)."""

    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class _Waiting:
    """A CEL trunk channel whose Dial is not read yet."""

    line: int
    at_us: int
    channel: str
    linkedid: str | None
    uniqueid: str | None


_WAITING = object()  # _cel: a trunk leg, handed out once its Dial is read or waited for


class LocalTimes:
    """Times as Asterisk writes them ("%Y-%m-%d %H:%M:%S", the PBX's local time) -> µs since the epoch.

    Each returns (earliest, latest): in the hour a DST change repeats, the wall time names two instants and
    both are kept so the match window widens rather than guessing. Offsets are cached per minute (a month
    of records holds a few tens of thousands), as zoneinfo costs microseconds a call."""

    def __init__(self, zone: tzinfo) -> None:
        self.zone = zone
        self._minutes: dict[str, tuple[int, int] | str] = {}

    def parse(self, text: str) -> tuple[int, int]:
        """(earliest, latest) µs; ValueError naming the value when it is not such a time or does not exist."""
        m = _LOCAL_TIME.fullmatch(text)
        if m is None:
            raise ValueError(f"{text[:40]!r} is not a time written as Asterisk writes it (2026-11-24 11:00:03)")
        minute = m.group(1)
        cached = self._minutes.get(minute)
        if cached is None:
            cached = self._minutes[minute] = self._minute(minute)
        if isinstance(cached, str):
            raise ValueError(cached)
        extra = int(m.group(2)) * SECOND_US + (int(m.group(3).ljust(6, "0")) if m.group(3) else 0)
        if extra >= 60 * SECOND_US:
            raise ValueError(f"{text[:40]!r} is not a valid time")
        return cached[0] + extra, cached[1] + extra

    def _minute(self, minute: str) -> tuple[int, int] | str:
        try:
            naive = datetime.strptime(minute, "%Y-%m-%d %H:%M")
        except ValueError:
            return f"{minute!r} is not a valid date and time"
        readings = []
        for fold in (0, 1):
            moment = naive.replace(tzinfo=self.zone, fold=fold)
            # A wall time the clocks skipped does not come back the same: the file is not in this zone.
            if moment.astimezone(UTC).astimezone(self.zone).replace(tzinfo=None) == naive:
                readings.append(to_us(moment))
        if not readings:
            return (f"{minute} does not exist in {self.zone} (the clocks skipped it): the file was not written "
                    "in that time zone (--timezone)")
        return min(readings), max(readings)


def _epoch_us(text: str) -> int | None:
    m = _EPOCH_TIME.fullmatch(text)
    if m is None:
        return None
    return int(m.group(1)) * SECOND_US + int(m.group(2))


def _endpoint(channel: str) -> tuple[str, str]:
    """("pjsip", "carrier") from "PJSIP/carrier-0000001a": the technology and the endpoint or peer."""
    tech, _, rest = channel.partition("/")
    return tech.lower(), rest.rsplit("-", 1)[0]


def dial_target(channel: str, appdata: str) -> str | None:
    """The target of a Dial() argument that created `channel`: "PJSIP/+39333...@carrier" names endpoint
    carrier, "SIP/carrier/0333..." peer carrier. The only target of that technology when none names it
    (a resource Asterisk rewrote); None when there is none or several."""
    tech, endpoint = _endpoint(channel)
    same_tech = []
    for written in appdata.split(",", 1)[0].split("&"):
        target = written.strip()
        t_tech, _, resource = target.partition("/")
        if t_tech.lower() != tech or not resource:
            continue
        same_tech.append(target)
        if "/" in resource:
            named = resource.split("/", 1)[0]
        elif "@" in resource:
            named = resource.rsplit("@", 1)[1]
        else:
            named = resource
        if named == endpoint:
            return target
    return same_tech[0] if len(same_tech) == 1 else None


def _dialled(target: str | None, fallback: str, trunk_prefix: str) -> tuple[str, str | None]:
    """What the trunk was asked to dial and its E.164 number. A target that names a user part ("NUMBER@",
    "peer/NUMBER") is read alone: a route that dialled something else than the extension it was asked for
    must not be matched through the extension. A plain endpoint ("PJSIP/carrier") dials the extension."""
    if target is not None:
        resource = target.partition("/")[2]
        if "@" in resource or "/" in resource:
            return resource, dialled_number(resource, trunk_prefix)
    return fallback, dialled_number(fallback, trunk_prefix) if fallback else None


class _Rows:
    """csv rows with the line each began on; a row csv cannot split is an Unreadable."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._reader = csv.reader(lines, strict=False)

    def __iter__(self) -> Iterator[tuple[int, list[str] | Unreadable]]:
        reader = self._reader
        last = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield last + 1, Unreadable(last + 1, f"not a CSV record: {exc}")
                last = reader.line_num
                continue
            first, last = last + 1, reader.line_num
            yield first, row


class RecordReader:
    """The trunk legs of one file, and how many records of each kind it held (read while iterating)."""

    def __init__(self, lines: Iterable[str], fmt: str, patterns: TrunkPatterns, zone: tzinfo,
                 trunk_prefix: str = "", *, numbers: bool = True) -> None:
        if fmt not in (FORMAT_CDR, FORMAT_CEL):
            raise ValueError(f"unknown record format {fmt!r}")
        self.fmt = fmt
        self.patterns = patterns
        self.times = LocalTimes(zone)
        self.trunk_prefix = trunk_prefix
        # False: legs without their number (reading it is most of the cost), for a pass that needs times only.
        self.numbers = numbers
        self._rows = _Rows(lines)
        self.records = 0
        self.not_legs = 0
        self.readable = 0  # records in the format (trunk legs or not), so a file of another kind is told apart
        self.without_uniqueid = 0  # CDR trunk legs without the uniqueid column
        self.first_problem: Unreadable | None = None
        # CEL: the Dials seen lately, by the call (linkedid): (time, uniqueid, appdata, exten); the trunk
        # channels whose Dial is not in the file yet, oldest first; legs ready to be handed out.
        self._dials: OrderedDict[str, list[tuple[int, str, str, str]]] = OrderedDict()
        self._waiting: list[_Waiting] = []
        self._ready: list[LegRecord] = []

    def __iter__(self) -> Iterator[LegRecord | Unreadable]:
        parse = self._cdr if self.fmt == FORMAT_CDR else self._cel
        for line, row in self._rows:
            if isinstance(row, Unreadable):
                self.records += 1
                yield self._problem(row)
                continue
            if not row or row == [""]:
                continue  # a blank line is no record
            if line == 1 and self.fmt == FORMAT_CDR and {c.strip().lower() for c in row} >= _CDR_HEADER:
                continue  # a header some exports add
            self.records += 1
            item = parse(line, row)
            if item is None:
                self.readable += 1
                self.not_legs += 1
            elif isinstance(item, Unreadable):
                yield self._problem(item)
            elif item is not _WAITING:
                self.readable += 1
                yield item
            else:
                self.readable += 1
            if self._ready:
                yield from self._ready
                self._ready.clear()
        # The end of the file: a trunk channel still waiting for its Dial had none.
        for waiting in self._waiting:
            yield self._cel_leg(waiting, None)
        self._waiting.clear()

    def _problem(self, item: Unreadable) -> Unreadable:
        if self.first_problem is None:
            self.first_problem = item
        return item

    # -- CDR -------------------------------------------------------------------------------------------

    def _cdr(self, line: int, row: list[str]) -> LegRecord | Unreadable | None:
        n = len(row)
        if not _CDR_BASE <= n <= _CDR_BASE + 5:
            return Unreadable(line, f"{n} columns; cdr_csv writes {_CDR_BASE} to {_CDR_BASE + 5}")
        channel, dstchannel = row[_CHANNEL], row[_DSTCHANNEL]
        to_trunk = bool(dstchannel) and self.patterns.match(dstchannel)
        # Every record's start is checked: a file of another kind with as many columns must not pass for
        # records without trunk legs.
        try:
            at_us = self.times.parse(row[_START])[0]
        except ValueError as exc:
            return Unreadable(line, f"start: {exc}")
        if not to_trunk and not self.patterns.match(channel):
            return None
        uniqueid, linkedid = self._cdr_ids(row)
        try:
            until_us = self.times.parse(row[_END])[1] if row[_END] else None
        except ValueError as exc:
            return Unreadable(line, f"trunk leg {dstchannel if to_trunk else channel}: end: {exc}")
        if uniqueid is None:
            self.readable += 1  # in the format, but short of what proves the leg
            self.without_uniqueid += 1
            return Unreadable(line, f"trunk leg {dstchannel if to_trunk else channel}: {NO_UNIQUEID}")
        if to_trunk:
            target = dial_target(dstchannel, row[_LASTDATA]) if row[_LASTAPP].lower() == "dial" else None
            dialled, number = _dialled(target, row[_DST].strip(), self.trunk_prefix) if self.numbers else ("", None)
            leg = TrunkLeg(at_us=at_us, channel=dstchannel, dialled=dialled, number=number,
                           caller_uniqueid=uniqueid, linkedid=linkedid, until_us=until_us)
        else:
            # Originated straight to the trunk: no channel asked before the carrier was dialled, and the
            # row's dst is where the answered call went next, not what the carrier dialled.
            leg = TrunkLeg(at_us=at_us, channel=channel, dialled="", number=None, linkedid=linkedid,
                           uniqueid=uniqueid, until_us=until_us)
        return LegRecord(line, leg)

    @staticmethod
    def _cdr_ids(row: list[str]) -> tuple[str | None, str | None]:
        """(uniqueid, linkedid) as cdr.conf laid them out: loguniqueid, then loguserfield, then newcdrcolumns'
        peeraccount, linkedid, sequence. Only the counts 17 and 20 are ambiguous (uniqueid or userfield): the
        value is taken as a uniqueid when it has the form of one."""
        extra = len(row) - _CDR_BASE
        linkedid = row[-2] or None if extra >= 3 else None
        own = extra - 3 if extra >= 3 else extra  # uniqueid and/or userfield
        if own == 2 or (own == 1 and _UNIQUEID.fullmatch(row[_CDR_BASE])):
            return row[_CDR_BASE] or None, linkedid
        return None, linkedid

    # -- CEL -------------------------------------------------------------------------------------------

    def _cel(self, line: int, row: list[str]) -> LegRecord | Unreadable | object | None:
        layout = _CEL_LAYOUTS.get(len(row))
        if layout is None:
            return Unreadable(line, f"{len(row)} columns; the layouts of cel_custom.conf's sample have "
                                    f"{' or '.join(str(n) for n in sorted(_CEL_LAYOUTS))}")
        etype, etime, exten, chan, app, appdata, uid, lid = layout
        event = row[etype].strip()
        if not _CEL_EVENT.fullmatch(event):
            return Unreadable(line, f"{event[:40]!r} is not a CEL event type")
        # Every event's time is checked: a file of another kind with as many columns must not pass.
        text = row[etime].strip()
        at_us = _epoch_us(text)
        if at_us is None:
            try:
                at_us = self.times.parse(text)[0]
            except ValueError as exc:
                return Unreadable(line, f"{event} event time: {exc}")
        if self._waiting and self._waiting[0].at_us < at_us - _DIAL_WAIT_US:
            self._give_up_waiting(at_us - _DIAL_WAIT_US)
        if event == CEL_APP_START:
            if row[app].strip().lower() == "dial" and row[lid]:
                dial = (at_us, row[uid], row[appdata], row[exten].strip())
                self._remember_dial(row[lid], dial)
                self._resolve_waiting(row[lid], dial)
            return None
        if event != CEL_CHAN_START or not self.patterns.match(row[chan]):
            return None
        waiting = _Waiting(line, at_us, row[chan], row[lid] or None, row[uid] or None)
        for dial in reversed(self._dials.get(row[lid], ())):
            if dial_target(waiting.channel, dial[2]) is not None:
                return self._cel_leg(waiting, dial)
        # Events reach the file through Asterisk's message bus: the Dial may be written just after.
        self._waiting.append(waiting)
        return _WAITING

    def _cel_leg(self, waiting: _Waiting, dial: tuple[int, str, str, str] | None) -> LegRecord:
        caller, dialled, number = None, "", None
        if dial is not None:
            caller = dial[1] or None
            if self.numbers:
                dialled, number = _dialled(dial_target(waiting.channel, dial[2]), dial[3], self.trunk_prefix)
        return LegRecord(waiting.line, TrunkLeg(at_us=waiting.at_us, channel=waiting.channel, dialled=dialled,
                                                number=number, caller_uniqueid=caller, linkedid=waiting.linkedid,
                                                uniqueid=waiting.uniqueid))

    def _resolve_waiting(self, linkedid: str, dial: tuple[int, str, str, str]) -> None:
        keep = []
        for waiting in self._waiting:
            if waiting.linkedid == linkedid and dial_target(waiting.channel, dial[2]) is not None:
                self._ready.append(self._cel_leg(waiting, dial))
            else:
                keep.append(waiting)
        self._waiting = keep

    def _give_up_waiting(self, before_us: int) -> None:
        while self._waiting and self._waiting[0].at_us < before_us:
            self._ready.append(self._cel_leg(self._waiting.pop(0), None))

    def _remember_dial(self, linkedid: str, dial: tuple[int, str, str, str]) -> None:
        dials = self._dials
        dials.setdefault(linkedid, []).append(dial)
        dials.move_to_end(linkedid)
        while dials:
            oldest = next(iter(dials.values()))
            if oldest[-1][0] >= dial[0] - _DIAL_MEMORY_US:
                break
            dials.popitem(last=False)
