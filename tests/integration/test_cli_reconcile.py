"""`rpoguard reconcile` through the real console script, on SQLite and PostgreSQL: the report and its exit
code (0 every trunk leg covered, 1 a bypass or an unreadable record, 2 a usage or input error), JSON Lines,
--from/--to, --timezone, and that it never creates a database."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rpoguard.audit import AuditEntry
from rpoguard.db.store import Store
from rpoguard.timeutil import parse_time, to_us

AT = "2026-11-24T11:00:03"  # Europe/Rome
NUM = "+393331234567"
UID_OK, UID_BAD = "1795514400.11", "1795514400.12"

Cli = Callable[..., Any]


def cdr(uid: str, *, start: str = "2026-11-24 11:00:03", end: str = "2026-11-24 11:00:40", number: str = NUM,
        channel: str = "PJSIP/carrier-0000000a") -> list[str]:
    return ["", "0694801234", number[3:], "outbound", "", "Local/agent@dialler-0001;2", channel, "Dial",
            f"PJSIP/{number}@carrier,30", start, "", end, "37", "0", "NO ANSWER", "DOCUMENTATION", uid]


def csv_text(*rows: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    return out.getvalue()


@pytest.fixture
def config(write_file: Callable[..., Path]) -> Path:
    return write_file("rpoguard.toml", '[watch]\ntrunks = ["PJSIP/carrier-*"]\n')


@pytest.fixture
def cli(run_cli: Cli, store_url: str, config: Path) -> Cli:
    def runner(*args: Any, env: dict[str, str] | None = None) -> Any:
        return run_cli("reconcile", *args, env={"RPOGUARD_DB": store_url, "RPOGUARD_CONFIG": str(config),
                                                **(env or {})})
    return runner


@pytest.fixture
def decided(store: Store, run: Callable[..., Any], make_entry: Callable[..., AuditEntry]) -> Store:
    """One ALLOW, made by the channel UID_OK two seconds before its trunk leg began."""
    run(store.add_principal("acme", "ACME", []))
    run(store.add_campaign("spring26", "acme", False, None, None))
    run(store.append_decision(make_entry(decision_id="d-ok", ts_us=to_us(parse_time(AT)) - 2_000_000, number=NUM,
                                         uniqueid=UID_OK, source="fastagi")))
    return store


def test_every_leg_covered_exits_0_and_a_bypass_is_printed_with_its_why(
        cli: Cli, decided: Store, write_file: Callable[..., Path]) -> None:
    good = write_file("good.csv", csv_text(cdr(UID_OK), cdr(UID_OK, channel="PJSIP/agent-0002")))
    code, out, err = cli("--cdr", good)
    assert (code, err) == (0, "")
    assert "2 record(s) read; 1 trunk leg(s): 1 covered, 0 bypass(es)\n  1 not trunk legs;" in out
    assert "every trunk leg had its ALLOW decision" in out

    mixed = write_file("mixed.csv", csv_text(cdr(UID_OK), cdr(UID_BAD, number="+393470000001")))
    code, out, err = cli("--cdr", mixed)
    assert (code, err) == (1, "")
    assert ("BYPASS 2026-11-24T11:00:03+01:00  PJSIP/carrier-0000000a  +393470000001  no_decision: no ALLOW "
            "decision for this call: the route did not ask the gate (line 2)") in out
    assert "1 covered, 1 bypass(es) (no_decision 1)" in out and "every trunk leg" not in out


def test_json_lines_one_a_bypass_then_the_summary(cli: Cli, decided: Store, write_file: Callable[..., Path]) -> None:
    path = write_file("m.csv", csv_text(cdr(UID_OK, number="+393470000001"),
                                        cdr(UID_OK, channel="PJSIP/carrier-0000000b")) + '"torn\n')
    code, out, _ = cli("--cdr", path, "--json")
    assert code == 1
    first, summary = (json.loads(line) for line in out.splitlines())
    assert first == {"kind": "bypass", "line": 1, "at": "2026-11-24T10:00:03.000000Z",
                     "channel": "PJSIP/carrier-0000000a", "dialled": "+393470000001@carrier",
                     "number": "+393470000001", "why": "other_number",
                     "text": "the call's ALLOW was for another number",
                     "decision_id": "d-ok", "caller_uniqueid": UID_OK, "linkedid": None, "uniqueid": None}
    assert {k: summary[k] for k in ("kind", "records", "trunk_legs", "covered", "bypasses", "bypasses_by_why",
                                    "unreadable", "proven")} == {
        "kind": "summary", "records": 3, "trunk_legs": 2, "covered": 1, "bypasses": 1,
        "bypasses_by_why": {"other_number": 1}, "unreadable": 1, "proven": False}
    assert summary["unreadable_lines"] == [{"line": 3, "error": "1 columns; cdr_csv writes 16 to 21"}]


def test_an_unreadable_record_alone_fails_closed_with_its_line(
        cli: Cli, decided: Store, write_file: Callable[..., Path]) -> None:
    path = write_file("m.csv", csv_text(cdr(UID_OK), cdr(UID_OK, start="2026-11-24 25:00:00")))
    code, out, _ = cli("--cdr", path)
    assert code == 1
    assert "UNREADABLE line 2: start: '2026-11-24 25:00' is not a valid date and time" in out
    assert "1 unreadable (lines 2)" in out


def test_from_to_and_the_time_zone_the_pbx_wrote_in(cli: Cli, decided: Store,
                                                    write_file: Callable[..., Path]) -> None:
    path = write_file("m.csv", csv_text(cdr(UID_OK), cdr(UID_BAD, start="2026-11-25 09:00:00",
                                                         end="2026-11-25 09:01:00")))
    code, out, _ = cli("--cdr", path, "--to", "2026-11-25")
    assert code == 0 and "1 trunk leg(s) outside --from/--to" in out
    code, out, _ = cli("--cdr", path, "--from", "2026-11-25T09:00", "--json")
    assert code == 1 and json.loads(out.splitlines()[0])["why"] == "no_decision"
    # The same wall time read as UTC is an hour later: the decision came 1 h 2 s earlier, not shortly before.
    code, out, _ = cli("--cdr", path, "--to", "2026-11-25", "--timezone", "UTC")
    assert code == 1 and "no_decision" in out


@pytest.mark.parametrize(("args", "config_text", "message"), [
    (("--cdr", "missing.csv"), None, "No such file or directory: missing.csv"),
    (("--cdr", "notes.txt"), None, "notes.txt is not a cdr_csv Master.csv (line 1: 1 columns"),
    (("--cel", "good.csv"), None, "good.csv is not a cel_custom Master.csv (line 1: 17 columns"),
    (("--cel", "full.csv"), None, "full.csv is not a cel_custom Master.csv (line 1: acct event time"),
    (("--cdr", "good.csv"), "", "no trunks to check: set [watch] trunks"),
    (("--cdr", "good.csv", "--timezone", "Mars/Olympus"), None, "'Mars/Olympus' is not a time zone"),
    (("--cdr", "good.csv", "--cel", "good.csv"), None, "not allowed with argument"),
    (("--cdr", "good.csv", "--from", "2026-11-25", "--to", "2026-11-24"), None, "--to must be later than --from"),
])
def test_usage_and_input_errors_exit_2_with_one_line(
        cli: Cli, decided: Store, write_file: Callable[..., Path], config: Path, args: tuple[str, ...],
        config_text: str | None, message: str) -> None:
    write_file("good.csv", csv_text(cdr(UID_OK)))
    write_file("notes.txt", "just some notes\n")
    write_file("full.csv", csv_text(["acct", *cdr(UID_OK)[1:], "", "", UID_OK]))  # 20 columns, as CEL's
    if config_text is not None:
        config.write_text(config_text)
    code, out, err = cli(*args)
    assert code == 2 and message in err and out == ""
    if not err.startswith("usage:"):
        assert err.startswith("rpoguard: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.sqlite_only
def test_it_never_creates_the_database(run_cli: Cli, config: Path, write_file: Callable[..., Path],
                                       tmp_path: Path) -> None:
    path = write_file("good.csv", csv_text(cdr(UID_OK)))
    missing = tmp_path / "none.db"
    code, _, err = run_cli("reconcile", "--cdr", path, env={"RPOGUARD_DB": str(missing),
                                                            "RPOGUARD_CONFIG": str(config)})
    assert code == 2 and err.startswith("rpoguard: ") and not missing.exists()


def test_a_cel_file_in_the_sample_layout(cli: Cli, decided: Store, write_file: Callable[..., Path]) -> None:
    def cel(event: str, time: str, channame: str, uniqueid: str, *, app: str = "", appdata: str = "",
            linkedid: str = UID_OK) -> list[str]:
        # The legacy mapping of Asterisk 22's sample cel_custom.conf.
        return [event, time, "", "0694801234", "", "", "", "3331234567", "outbound", channame, app, appdata,
                "DOCUMENTATION", "", uniqueid, linkedid, "", "", "", ""]

    path = write_file("cel.csv", csv_text(
        cel("CHAN_START", "2026-11-24 11:00:00", "Local/agent@dialler-0001;2", UID_OK),
        cel("APP_START", "2026-11-24 11:00:02", "Local/agent@dialler-0001;2", UID_OK, app="Dial",
            appdata=f"PJSIP/{NUM}@carrier,30"),
        cel("CHAN_START", "2026-11-24 11:00:02", "PJSIP/carrier-0000000a", "1795514402.13"),
        cel("CHAN_START", "2026-11-24 11:05:00", "PJSIP/carrier-0000000b", "1795514700.14",
            linkedid="1795514700.14"),
    ))
    code, out, _ = cli("--cel", path, "--json")
    assert code == 1
    bypass, summary = (json.loads(line) for line in out.splitlines())
    assert (bypass["channel"], bypass["why"], bypass["line"]) == ("PJSIP/carrier-0000000b", "no_decision", 4)
    assert (summary["format"], summary["trunk_legs"], summary["covered"], summary["not_trunk_legs"]) == ("cel", 2, 1, 2)
