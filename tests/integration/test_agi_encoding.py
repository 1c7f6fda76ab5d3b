"""AGI values that are not UTF-8, over a real socket (classic AGI: test_agi_stdio.py).

Asterisk guarantees no encoding: a caller name set by an older PBX or a carrier may well be Latin-1
("Societ\\xe0"). A value the decision does not read is kept with U+FFFD and the call gets its normal
decision; a value it reads (the number, the campaign, the caller ID and its presentation, the route) ends
the session with ``failure``, so the dialplan blocks the call with engine_error instead of deciding on a
value that is not the one the PBX meant. The oddity is logged once per process and field name, without
the value.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from rpoguard.agi import protocol
from rpoguard.agi.routes import build_routes
from rpoguard.agi.server import FastAgiServer
from rpoguard.config import Config, ServeConfig
from rpoguard.constants import CHANNEL_ALLOW, VAR_DECISION, VAR_NUMBER, VAR_REASON
from rpoguard.db import open_store
from rpoguard.gate import Gate
from support.agi_fakes import ALLOW_VERDICT, FakeGate, Transcript, make_env, play

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CliRunner = Callable[..., Any]

LISTED = "0645678901"  # examples/: in the directory, not registered
SOCIETA = "Società Srl".encode("latin-1")  # b"Societ\xe0 Srl", as a Latin-1 PBX sends it
WORKDAY = datetime(2026, 11, 24, 11, 0, tzinfo=ZoneInfo("Europe/Rome"))  # a Tuesday, inside calling hours
NUMBER = "0612345678"


@pytest.fixture(autouse=True)
def _fresh_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    # "Once per process": each test starts as a fresh process would.
    monkeypatch.setattr(protocol, "_reported_fields", set())


async def sessions(gate: Any, envs: list[bytes]) -> list[Transcript]:
    async with FastAgiServer(ServeConfig(port=0), build_routes(gate)) as server:
        return [await play(server.port, env) for env in envs]


def encoding_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == protocol.log.name and r.levelno == logging.WARNING]


# -- the real gate -----------------------------------------------------------------------------------------------


def test_latin1_caller_name_gets_the_real_gates_allow(
    run_cli: CliRunner, store_url: str, run: Callable[..., Any]
) -> None:
    def cli(*args: Any) -> str:
        result = run_cli(*args, env={"RPOGUARD_DB": store_url})
        assert result.code == 0, result.err
        return str(result.out)

    cli("principal", "add", "acme", "--name", "ACME", "--caller-id", "06 9480 1234")
    cli("campaign", "add", "autunno26", "--principal", "acme")
    cli("registry", "import", EXAMPLES / "rpo-answers.csv", "--checked-at", "2026-11-20")
    cli("directory", "import", EXAMPLES / "directory.txt", "--listed-at", "2026-11-20")
    env = make_env(
        "check?campaign=autunno26",
        (LISTED,),
        overrides={
            "agi_calleridname": SOCIETA,
            # Evidence only: kept in the audit row with U+FFFD, the row still valid UTF-8 and hashed.
            "agi_channel": b"PJSIP/centralin\xe9-00000002",
            "agi_accountcode": b"vendite-\xe0",
            "agi_uniqueid": "1764000000.7",
        },
    )

    async def scenario() -> Transcript:
        store = open_store(store_url)
        await store.open()
        try:
            (transcript,) = await sessions(Gate(store, Config(), clock=lambda: WORKDAY), [env])
        finally:
            await store.close()
        return transcript

    t = run(scenario())
    assert t.dialplan_allows and not t.failure, t
    assert t.variables[VAR_NUMBER] == "+39" + LISTED and t.variables[VAR_REASON] == ""
    [row] = [json.loads(line) for line in cli("audit", "export", "--format", "jsonl").splitlines()]
    assert (row["decision"], row["basis"], row["uniqueid"]) == ("allow", "listed", "1764000000.7")
    assert row["channel"] == "PJSIP/centralin\ufffd-00000002"
    evidence = row["evidence"] if isinstance(row["evidence"], dict) else json.loads(row["evidence"])
    assert evidence["input"]["agi_accountcode"] == "vendite-\ufffd"
    assert cli("audit", "verify").startswith("audit log intact: 1 decision(s)")


# -- values the decision reads --------------------------------------------------------------------------------------

STRICT = [
    pytest.param("check?campaign=C1", (b"06123\xe05678",), {}, id="number-argument"),
    pytest.param("check?campaign=C1", (), {"agi_extension": b"06123\xe05678"}, id="number-extension"),
    pytest.param("check?campaign=Soci%E0t%E0", (NUMBER,), {}, id="campaign-query"),
    pytest.param("check", (NUMBER, SOCIETA), {}, id="campaign-argument"),
    pytest.param("check?campaign=C1", (NUMBER, "C1", b"069480\xe01234"), {}, id="caller-id-argument"),
    pytest.param("check?campaign=C1", (NUMBER,), {"agi_callerid": b"069480\xe01234"}, id="caller-id-channel"),
    pytest.param("check?campaign=C1", (NUMBER,), {"agi_callingpres": b"\xe0"}, id="presentation"),
    pytest.param(b"check?campaign=Societ\xe0", (NUMBER,), {}, id="script"),
    pytest.param("check?campaign=C1", (NUMBER,), {"agi_request": b"agi://127.0.0.1/check?campaign=C\xe0"}, id="url"),
    pytest.param("optout?campaign=C1", (b"06123\xe05678",), {}, id="optout-number"),
]


@pytest.mark.parametrize(("script", "args", "overrides"), STRICT)
def test_a_value_the_decision_reads_that_is_not_utf8_answers_failure(
    run: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    script: str | bytes,
    args: tuple[str | bytes, ...],
    overrides: Mapping[str, str | bytes],
) -> None:
    gate = FakeGate(ALLOW_VERDICT)  # a gate that would allow anything it were asked
    (t,) = run(sessions(gate, [make_env(script, args, overrides=overrides)]))
    assert t.failed_closed and t.written == b"failure\n", t
    assert gate.calls == [] and gate.optouts == []
    # One line says why, naming the field and not the value.
    refused = [r.getMessage() for r in caplog.records if "not UTF-8, and the decision reads it" in r.getMessage()]
    assert len(refused) == 1, refused
    assert "Societ" not in refused[0] and "06123" not in refused[0]


# -- values it does not read ----------------------------------------------------------------------------------------

LENIENT = [
    # The number comes from argument 1, so agi_extension is only evidence.
    pytest.param("check?campaign=C1", (NUMBER,), {"agi_extension": b"s\xe0"}, id="extension-unread"),
    # The campaign comes from the query, so argument 2 is not read.
    pytest.param("check?campaign=C1", (NUMBER, SOCIETA), {}, id="argument-2-unread"),
    pytest.param("check?campaign=C1&note=Soci%E0t%E0", (NUMBER,), {}, id="other-query-key"),
    # Argument 3 gives the caller ID, so the channel's is not read.
    pytest.param("check?campaign=C1", (NUMBER, "C1", "0694801234"), {"agi_callerid": b"069\xe0"}, id="callerid-unread"),
    pytest.param(
        "check?campaign=C1",
        (NUMBER,),
        {
            "agi_calleridname": SOCIETA,
            "agi_channel": b"PJSIP/caf\xe9-00000002",
            "agi_uniqueid": b"1764000000.\xe0",
            "agi_accountcode": b"\xe0",
            "agi_language": b"\xe0",
            "agi_type": b"\xe0",
            "agi_dnid": b"\xe0",
            "agi_rdnis": b"\xe0",
            "agi_context": b"\xe0",
            "agi_version": b"\xe0",
            "agi_threadid": b"\xe0",
            "agi_\xe0": b"\xe0",
        },
        id="evidence-and-unread-fields",
    ),
]


@pytest.mark.parametrize(("script", "args", "overrides"), LENIENT)
def test_a_value_the_decision_does_not_read_is_kept_with_replacement(
    run: Callable[..., Any], script: str, args: tuple[str | bytes, ...], overrides: Mapping[str, str | bytes]
) -> None:
    gate = FakeGate(ALLOW_VERDICT)
    (t,) = run(sessions(gate, [make_env(script, args, overrides=overrides)]))
    assert t.dialplan_allows and t.variables[VAR_DECISION] == CHANNEL_ALLOW, t
    (call,) = gate.calls
    assert (call.raw_number, call.campaign_id) == (NUMBER, "C1")
    assert call.caller_id == "0694801234"
    for key, raw in overrides.items():
        if key == "agi_channel":
            assert call.channel == raw.decode("utf-8", "replace")  # type: ignore[union-attr]
        if key in call.extra:
            assert call.extra[key] == raw.decode("utf-8", "replace")  # type: ignore[union-attr]
    if SOCIETA in args:
        assert call.extra["arg_2"] == "Societ\ufffd Srl"


def test_a_withheld_caller_id_argument_is_not_read(run: Callable[..., Any]) -> None:
    gate = FakeGate(ALLOW_VERDICT)
    env = make_env("check?campaign=C1", (NUMBER, "C1", b"069480\xe01234"), overrides={"agi_callingpres": "32"})
    (t,) = run(sessions(gate, [env]))
    assert t.dialplan_allows
    assert gate.calls[0].caller_id == ""


@pytest.mark.parametrize("pres", ["junk", "", "0x20"])
def test_a_presentation_that_is_not_a_number_counts_as_withheld(run: Callable[..., Any], pres: str) -> None:
    # It cannot show that the number is presented, so rule 10 must not see the caller ID as presented.
    gate = FakeGate(ALLOW_VERDICT)
    run(sessions(gate, [make_env(overrides={"agi_callingpres": pres})]))
    assert gate.calls[0].caller_id == ""


# -- the log ---------------------------------------------------------------------------------------------------------


def test_the_oddity_is_logged_once_per_field_for_many_sessions(
    run: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    gate = FakeGate(ALLOW_VERDICT)
    envs = [
        make_env(overrides={"agi_calleridname": SOCIETA, "agi_channel": b"PJSIP/caf\xe9-%d" % i}) for i in range(40)
    ]
    transcripts = run(sessions(gate, envs))
    assert all(t.dialplan_allows for t in transcripts)
    warnings = encoding_warnings(caplog)
    assert len(warnings) == 2, warnings
    assert any("'agi_calleridname' is not UTF-8" in w for w in warnings), warnings
    assert any("'agi_channel' is not UTF-8" in w for w in warnings), warnings
    # Never the value: a caller name is personal data.
    assert not any("Societ" in w or "caf" in w for w in warnings), warnings


def test_the_log_stays_bounded_when_every_session_makes_up_new_field_names(
    run: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    gate = FakeGate(ALLOW_VERDICT)
    envs = [
        make_env(overrides={f"x_odd_{session}_{i}": b"\xe0" for i in range(20)}) for session in range(5)
    ]
    transcripts = run(sessions(gate, envs))
    assert all(t.dialplan_allows for t in transcripts)
    warnings = encoding_warnings(caplog)
    assert len(warnings) == protocol.MAX_REPORTED_FIELDS + 1, warnings
    assert "no further field is reported" in warnings[-1]


def test_concurrent_sessions_share_the_once_per_field_warning(
    run: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    gate = FakeGate(ALLOW_VERDICT, delay=0.01)
    env = make_env(overrides={"agi_calleridname": SOCIETA})

    async def scenario() -> list[Transcript]:
        async with FastAgiServer(ServeConfig(port=0), build_routes(gate)) as server:
            return list(await asyncio.gather(*(play(server.port, env) for _ in range(32))))

    assert all(t.dialplan_allows for t in run(scenario()))
    assert len(encoding_warnings(caplog)) == 1
