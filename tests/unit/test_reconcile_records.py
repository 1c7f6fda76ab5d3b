"""Asterisk's CDR and CEL rows as trunk legs (rpoguard.bypass.records): the column layouts cdr.conf and
cel_custom.conf give, what number each leg dialled, times in the PBX's zone (the DST hour widened), and every
record that cannot be read reported with its line."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from rpoguard.bypass.match import SECOND_US, TrunkPatterns
from rpoguard.bypass.records import (
    FORMAT_CDR,
    FORMAT_CEL,
    LegRecord,
    LocalTimes,
    RecordReader,
    Unreadable,
    dial_target,
)
from rpoguard.timeutil import to_us

ROME = ZoneInfo("Europe/Rome")
TRUNKS = TrunkPatterns(["PJSIP/carrier-*", "SIP/old-*"])
UID = "1764756000.42"
LID = "1764756000.40"


def cdr_row(*, channel: str = "PJSIP/agent-00000001", dstchannel: str = "PJSIP/carrier-0000000a",
            lastapp: str = "Dial", lastdata: str = "PJSIP/+393331234567@carrier,30", dst: str = "3331234567",
            start: str = "2026-11-24 11:00:03", end: str = "2026-11-24 11:01:10", tail: tuple[str, ...] = (UID,)
            ) -> list[str]:
    return ["acct", "0694801234", dst, "outbound", '"ACME" <0694801234>', channel, dstchannel, lastapp, lastdata,
            start, "", end, "67", "0", "NO ANSWER", "DOCUMENTATION", *tail]


def csv_text(*rows: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    return out.getvalue()


def read(text: str, fmt: str = FORMAT_CDR, zone: ZoneInfo = ROME) -> tuple[RecordReader, list[LegRecord | Unreadable]]:
    reader = RecordReader(io.StringIO(text), fmt, TRUNKS, zone)
    return reader, list(reader)


def rome_us(text: str) -> int:
    return to_us(datetime.fromisoformat(text).replace(tzinfo=ROME))


def test_a_dial_to_the_trunk_is_a_leg_of_the_calling_channel_with_the_number_of_its_dial_target() -> None:
    reader, items = read(csv_text(cdr_row(), cdr_row(dstchannel="PJSIP/agent-00000002")))
    [item] = items
    assert isinstance(item, LegRecord) and item.line == 1
    leg = item.leg
    assert (leg.channel, leg.dialled, leg.number) == ("PJSIP/carrier-0000000a", "+393331234567@carrier",
                                                      "+393331234567")
    assert (leg.caller_uniqueid, leg.uniqueid, leg.linkedid) == (UID, None, None)
    assert leg.at_us == rome_us("2026-11-24T11:00:03") and leg.until_us == rome_us("2026-11-24T11:01:10")
    assert (reader.records, reader.not_legs, reader.readable) == (2, 1, 2)


@pytest.mark.parametrize(("tail", "uniqueid", "linkedid"), [
    ((UID,), UID, None),                                 # loguniqueid
    ((UID, "camp7"), UID, None),                         # loguniqueid + loguserfield
    ((UID, "camp7", "", LID, "3"), UID, LID),            # ... + newcdrcolumns
    ((UID, "", LID, "3"), UID, LID),                     # loguniqueid + newcdrcolumns
    (("host-1764756000.42", "x"), "host-1764756000.42", None),  # [options] systemname before the uniqueid
])
def test_uniqueid_and_linkedid_are_found_in_every_layout_cdr_conf_gives(tail: tuple[str, ...], uniqueid: str,
                                                                        linkedid: str | None) -> None:
    _, [item] = read(csv_text(cdr_row(tail=tail)))
    assert isinstance(item, LegRecord)
    assert (item.leg.caller_uniqueid, item.leg.linkedid) == (uniqueid, linkedid)


@pytest.mark.parametrize("tail", [(), ("camp7",), ("", LID, "3")])
def test_a_trunk_leg_without_the_uniqueid_column_cannot_be_tied_to_its_call(tail: tuple[str, ...]) -> None:
    reader, [item] = read(csv_text(cdr_row(tail=tail)))
    assert isinstance(item, Unreadable) and "loguniqueid = yes" in item.reason
    assert reader.without_uniqueid == 1


def test_a_plain_endpoint_target_dials_the_extension_and_a_rewritten_target_is_never_read_through_it() -> None:
    _, items = read(csv_text(
        cdr_row(lastdata="PJSIP/carrier,30", dst="0645678901"),
        cdr_row(lastdata="PJSIP/0044201234567@carrier", dst="3331234567"),  # dialled abroad, extension Italian
        cdr_row(lastdata="SIP/old/3331234567,30", dstchannel="SIP/old-00000003", dst="9"),
        cdr_row(lastapp="Queue", lastdata="sales", dst="3331234567"),
    ))
    legs = [i.leg for i in items if isinstance(i, LegRecord)]
    assert [(leg.dialled, leg.number) for leg in legs] == [
        ("0645678901", "+390645678901"), ("0044201234567@carrier", None), ("old/3331234567", "+393331234567"),
        ("3331234567", "+393331234567"),
    ]


def test_dial_target_names_the_trunk_among_several() -> None:
    data = "PJSIP/agent7&PJSIP/+39333@other&PJSIP/+39347@carrier,30,U(x)"
    assert dial_target("PJSIP/carrier-0000001a", data) == "PJSIP/+39347@carrier"
    assert dial_target("PJSIP/carrier-0000001a", "PJSIP/a/sip:+39347@h&PJSIP/b/sip:1@h") is None
    assert dial_target("SIP/old-0001", "SIP/old/0333") == "SIP/old/0333"
    assert dial_target("PJSIP/carrier-0001", "IAX2/carrier/0333") is None


def test_an_originate_straight_to_the_trunk_is_a_leg_with_no_caller_and_no_number() -> None:
    _, [item] = read(csv_text(cdr_row(channel="PJSIP/carrier-0000000b", dstchannel="", lastapp="AGI",
                                      lastdata="agi://127.0.0.1/check", dst="3331234567")))
    assert isinstance(item, LegRecord)
    leg = item.leg
    assert (leg.channel, leg.caller_uniqueid, leg.uniqueid, leg.number) == ("PJSIP/carrier-0000000b", None, UID,
                                                                            None)


def test_bad_rows_are_unreadable_with_their_lines_and_the_rest_is_read() -> None:
    text = (csv_text(cdr_row())
            + '"short","row"\n'
            + csv_text(cdr_row(start="24/11/2026 11:00"))
            + csv_text(cdr_row(end="2026-11-31 10:00:00"))
            + csv_text(cdr_row(start="bad", dstchannel="PJSIP/agent-0002"))  # not a trunk leg, still checked
            + csv_text(cdr_row(end="bad", dstchannel="PJSIP/agent-0002"))  # not a trunk leg: its end unread
            + "\n"
            + csv_text(cdr_row()))
    reader, items = read(text)
    assert [(type(i).__name__, i.line) for i in items] == [
        ("LegRecord", 1), ("Unreadable", 2), ("Unreadable", 3), ("Unreadable", 4), ("Unreadable", 5),
        ("LegRecord", 8)]
    reasons = [i.reason for i in items if isinstance(i, Unreadable)]
    assert "2 columns" in reasons[0] and "24/11/2026 11:00" in reasons[1] and "2026-11-31 10:00" in reasons[2]
    assert reasons[3].startswith("start: 'bad'")
    assert (reader.records, reader.not_legs, reader.first_problem) == (7, 1, items[1])


def test_a_header_line_is_no_record() -> None:
    header = ["accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata",
              "start", "answer", "end", "duration", "billsec", "disposition", "amaflags", "uniqueid"]
    reader, items = read(csv_text(header, cdr_row()))
    assert [i.line for i in items] == [2] and reader.records == 1


def test_multiline_quoted_fields_keep_the_line_the_record_began_on() -> None:
    _, items = read(csv_text(cdr_row(), cdr_row(lastdata="PJSIP/+393331234567@carrier,30,\nx"), cdr_row()))
    assert [i.line for i in items] == [1, 2, 4]


def test_local_times_widen_the_repeated_dst_hour_and_refuse_a_skipped_one() -> None:
    times = LocalTimes(ROME)
    early, late = times.parse("2026-10-25 02:30:00")  # clocks go back at 03:00 CEST to 02:00 CET
    assert late - early == 3600 * SECOND_US
    assert early == to_us(datetime.fromisoformat("2026-10-25T02:30:00+02:00"))
    one, same = times.parse("2026-11-24 11:00:03")
    assert one == same == rome_us("2026-11-24T11:00:03")
    with pytest.raises(ValueError, match="does not exist in Europe/Rome"):
        times.parse("2026-03-29 02:30:00")
    with pytest.raises(ValueError, match="not a time"):
        times.parse("2026-11-24T11:00:03")
    utc = LocalTimes(ZoneInfo("UTC"))
    assert utc.parse("2026-11-24 10:00:03.5") == (rome_us("2026-11-24T11:00:03") + SECOND_US // 2,) * 2


def test_a_cdr_leg_in_the_repeated_hour_spans_both_readings() -> None:
    _, [item] = read(csv_text(cdr_row(start="2026-10-25 02:10:00", end="2026-10-25 02:11:00")))
    assert isinstance(item, LegRecord)
    assert item.leg.until_us - item.leg.at_us == 3600 * SECOND_US + 60 * SECOND_US  # type: ignore[operator]


# -- CEL ------------------------------------------------------------------------------------------------

def cel_row(event: str, time: str, channame: str, *, app: str = "", appdata: str = "", uniqueid: str = UID,
            linkedid: str = LID, exten: str = "3331234567") -> list[str]:
    # The legacy mapping of Asterisk 22's sample cel_custom.conf (20 columns).
    return [event, time, "ACME", "0694801234", "", "", "", exten, "outbound", channame, app, appdata,
            "DOCUMENTATION", "acct", uniqueid, linkedid, "", "", "", ""]


def cel_literal(event: str, time: str, channame: str, **kw: str) -> list[str]:
    # Later samples' legacy mapping: a literal after the event type (21 columns).
    row = cel_row(event, time, channame, **kw)
    return [row[0], "My Literal", *row[1:]]


def cel_advanced(event: str, time: str, channame: str, *, app: str = "", appdata: str = "", uniqueid: str = UID,
                 linkedid: str = LID, exten: str = "") -> list[str]:
    # The advanced mapping of Asterisk 22's sample (24 columns).
    return [event, event, "", "Some Literal", time, "ACME", "0694801234", "", "", "", exten, "outbound", channame,
            app, appdata, "DOCUMENTATION", "acct", uniqueid, linkedid, "", "", "", "", ""]


@pytest.mark.parametrize("make", [cel_row, cel_literal, cel_advanced])
def test_a_cel_chan_start_on_the_trunk_is_a_leg_dialled_by_the_dial_on_its_call(make) -> None:  # type: ignore[no-untyped-def]
    text = csv_text(
        make("CHAN_START", "1764756000.000100", "PJSIP/agent-00000001", uniqueid=LID),
        make("APP_START", "1764756001.000000", "PJSIP/agent-00000001", app="Dial",
             appdata="PJSIP/+393331234567@carrier,30", uniqueid=LID),
        make("CHAN_START", "1764756001.250000", "PJSIP/carrier-0000000a", uniqueid="1764756001.43"),
        make("CHAN_START", "1764756002.000000", "PJSIP/carrier-0000000b", uniqueid="1764756002.44",
             linkedid="1764756002.44"),
        make("HANGUP", "1764756009.000000", "PJSIP/carrier-0000000a", uniqueid="1764756001.43"),
    )
    reader, items = read(text, FORMAT_CEL)
    legs = [i.leg for i in items if isinstance(i, LegRecord)]
    assert [(leg.channel, leg.at_us, leg.number, leg.caller_uniqueid, leg.linkedid, leg.uniqueid)
            for leg in legs] == [
        ("PJSIP/carrier-0000000a", 1764756001_250000, "+393331234567", LID, LID, "1764756001.43"),
        ("PJSIP/carrier-0000000b", 1764756002_000000, None, None, "1764756002.44", "1764756002.44"),
    ]
    assert (reader.records, reader.not_legs) == (5, 3)


def test_cel_times_as_cel_conf_dateformat_writes_them_and_bad_rows() -> None:
    text = csv_text(
        cel_row("CHAN_START", "2026-11-24 11:00:03", "PJSIP/carrier-0000000a"),
        cel_row("CHAN_START", "yesterday", "PJSIP/carrier-0000000b"),
        ["CHAN_START", "too", "short"],
        cel_row("HANGUP", "1764756009", "PJSIP/agent-1"),  # Asterisk always writes the microseconds
        cel_row("", "1764756009.000000", "PJSIP/agent-1"),
    )
    _, items = read(text, FORMAT_CEL)
    # The trunk channel waited for a Dial to the end of the file: handed out last.
    assert isinstance(items[-1], LegRecord) and items[-1].leg.at_us == rome_us("2026-11-24T11:00:03")
    assert [(type(i).__name__, i.line) for i in items[:-1]] == [("Unreadable", n) for n in (2, 3, 4, 5)]


def test_a_file_of_one_kind_read_as_the_other_has_no_readable_record() -> None:
    tail = (UID, "x", "", LID, "1")  # 21 columns, as many as a CEL layout
    cdr = csv_text(cdr_row(tail=tail), cdr_row(dstchannel="PJSIP/agent-2", tail=tail))
    reader, items = read(cdr, FORMAT_CEL)
    assert reader.readable == 0 and len(items) == 2
    cel = csv_text(cel_row("HANGUP", "1764756009.000000", "PJSIP/agent-1"))
    reader, items = read(cel, FORMAT_CDR)
    assert reader.readable == 0 and len(items) == 1


def test_a_dial_written_just_after_the_trunk_channel_still_names_its_caller_and_number() -> None:
    text = csv_text(
        cel_row("CHAN_START", "1764756001.250000", "PJSIP/carrier-0000000a", uniqueid="1764756001.43"),
        cel_row("APP_START", "1764756001.000000", "PJSIP/agent-00000001", app="Dial",
                appdata="PJSIP/+393331234567@carrier,30", uniqueid=LID),
        cel_row("CHAN_START", "1764756002.000000", "PJSIP/carrier-0000000b", uniqueid="1764756002.44"),
        cel_row("CHAN_START", "1764756020.000000", "PJSIP/agent-00000009", uniqueid="1764756020.45"),
        cel_row("CHAN_START", "1764756021.000000", "PJSIP/carrier-0000000c", uniqueid="1764756021.46",
                linkedid="1764756021.46"),
    )
    reader, items = read(text, FORMAT_CEL)
    legs = {i.line: i.leg for i in items if isinstance(i, LegRecord)}
    assert sorted(legs) == [1, 3, 5] and len(items) == 3
    assert (legs[1].caller_uniqueid, legs[1].number) == (LID, "+393331234567")
    # The same call's Dial names carrier-0000000b too (read before it); the originate waits in vain.
    assert (legs[3].caller_uniqueid, legs[5].caller_uniqueid, legs[5].number) == (LID, None, None)
    assert (reader.records, reader.readable, reader.not_legs) == (5, 5, 2)
