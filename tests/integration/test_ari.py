"""The ARI gate against a fake ARI over a real socket (tests/support/ari_fakes.py): what it does to each channel, how it
fails closed, reconnects and resyncs. The real Asterisk runs the same scenarios in tests/e2e/test_ari.py."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from rpoguard.agi.ari import AriClient, AriError, AriGate, ari_base, call_request, stasis_args
from rpoguard.config import AriConfig, Config
from rpoguard.constants import BLOCK, SOURCE_ARI, VAR_DECISION, VAR_ID, VAR_NUMBER, VAR_REASON, VAR_REASONS
from rpoguard.db.sqlite import SqliteStore
from rpoguard.gate import Gate, Verdict
from support.ari_fakes import APP, PASSWORD, USER, FakeAri, FakeGate, channel

ALLOWED = "0612345678"
BLOCKED = "3477654321"
FAST = AriConfig(app=APP, decision_deadline=1.0, reconnect_min=0.01, reconnect_max=0.05, answer_grace=0.0)


async def until(predicate: Callable[[], bool], what: str, limit: float = 5.0) -> None:
    """Wait for something the gate does asynchronously; fail naming it if it never happens."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running(gate: Any, options: AriConfig = FAST, *, password: str = PASSWORD,
                  fake: FakeAri | None = None) -> AsyncIterator[tuple[FakeAri, AriGate]]:
    fake = fake or await FakeAri().start()
    config = dataclasses.replace(options, url=fake.url, user=USER, request_timeout=2.0, heartbeat=1.0)
    client = AriClient(config, password)
    ari = AriGate(config, client, gate)
    task = asyncio.get_running_loop().create_task(ari.run())
    try:
        yield fake, ari
    finally:
        ari.stop()
        await asyncio.wait_for(task, 5)
        await client.close()
        await fake.stop()


async def connected(fake: FakeAri, ari: AriGate) -> None:
    await until(lambda: fake.connected.is_set() and ari.ready.is_set(), "the gate connected and resynced")


def assert_answered(actions: list[str], decision: str, reason: str, number: str, decision_id: str,
                    last: str) -> None:
    """The FastAGI check route's variables (the details in any order, the decision after them), then
    ``last`` (continue or hang-up)."""
    details = {f"set {VAR_REASON}={reason}", f"set {VAR_REASONS}={reason}", f"set {VAR_NUMBER}={number}",
               f"set {VAR_ID}={decision_id}"}
    assert len(actions) == 6, actions
    assert set(actions[:4]) == details, actions
    assert actions[4:] == [f"set {VAR_DECISION}={decision}", last], actions


# --------------------------------------------------------------------------------------------- per call


def test_allowed_channel_gets_the_variables_then_continues(run: Callable[..., Any]) -> None:
    gate = FakeGate(allow={ALLOWED})

    async def scenario() -> None:
        async with running(gate) as (fake, ari):
            await connected(fake, ari)
            fake.enter(channel("c1", ALLOWED, "C1"))
            await until(lambda: "c1" in fake.continued, "c1 continued")
            assert_answered(fake.actions("c1"), "ALLOW", "", "+39" + ALLOWED, "id-1", "continue")
            assert fake.hung_up == []

    run(scenario())
    [call] = gate.calls
    assert (call.raw_number, call.campaign_id, call.caller_id, call.source) == (ALLOWED, "C1", "0694801234",
                                                                                 SOURCE_ARI)
    assert (call.uniqueid, call.channel) == ("c1", f"Local/{ALLOWED}@outbound-00000001;2")
    assert call.extra["arg_1"] == ALLOWED and call.extra["ari_callingpres"] == "allowed_not_screened"


def test_blocked_channel_gets_the_variables_then_is_hung_up_with_cause_21(run: Callable[..., Any]) -> None:
    gate = FakeGate()

    async def scenario() -> None:
        async with running(gate) as (fake, ari):
            await connected(fake, ari)
            fake.enter(channel("c2", BLOCKED))
            await until(lambda: fake.hung_up != [], "c2 hung up")
            assert_answered(fake.actions("c2"), "BLOCK", "rpo_registered", "+39" + BLOCKED, "id-1", "hangup 21")
            assert fake.continued == []

    run(scenario())


@pytest.mark.parametrize("pres", ["prohib_not_screened", "prohib", "unavailable", "prohib_passed_screen"])
def test_withheld_presentation_means_no_caller_id(run: Callable[..., Any], pres: str) -> None:
    gate = FakeGate(allow={ALLOWED})

    async def scenario() -> None:
        async with running(gate) as (fake, ari):
            await connected(fake, ari)
            fake.enter(channel("c3", ALLOWED), pres=pres)
            await until(lambda: gate.calls != [], "a check")

    run(scenario())
    assert gate.calls[0].caller_id == "", f"{pres}: the callee sees no number, so none is checked"


def test_caller_id_argument_wins_and_unknown_is_withheld() -> None:
    snap = channel("c4", ALLOWED, caller="0611111111")
    given = call_request(snap, [ALLOWED, "C1", " 0694801234 "], "allowed_not_screened", APP)
    assert given.caller_id == "0694801234"
    own = call_request(snap, [ALLOWED, "C1", ""], "allowed", APP)
    assert own.caller_id == "0611111111"
    unknown = call_request(channel("c5", ALLOWED, caller="unknown"), [ALLOWED, "C1"], "allowed", APP)
    assert unknown.caller_id == ""
    # As FastAGI: an absent number is the extension, an empty one is checked as empty (and refused).
    assert call_request(snap, [], "allowed", APP).raw_number == "s"
    assert call_request(snap, ["", "C1"], "allowed", APP).raw_number == ""
    assert call_request(snap, [ALLOWED, "  "], "allowed", APP).campaign_id is None


def test_stasis_args_from_a_snapshot() -> None:
    assert stasis_args(channel("c", app_data="rpoguard,0612345678,C1,")) == ["0612345678", "C1", ""]
    assert stasis_args(channel("c", app_data="rpoguard")) == []
    # Asterisk's parser would unquote and unescape these; a plain split cannot be trusted with them.
    assert stasis_args(channel("c", app_data='rpoguard,"061,234",C1')) is None
    assert stasis_args(channel("c", app_data="rpoguard,061\\,2,C1")) is None


def test_ari_url_forms_and_errors() -> None:
    assert ari_base("http://127.0.0.1:8088") == "http://127.0.0.1:8088/ari"
    assert ari_base("https://pbx:8089/ari/") == "https://pbx:8089/ari"
    with pytest.raises(ValueError, match="expected http"):
        ari_base("ws://127.0.0.1:8088")
    with pytest.raises(ValueError, match="not in the URL"):
        ari_base("http://u:p@127.0.0.1:8088")
    with pytest.raises(ValueError, match="no ':'"):
        AriClient(AriConfig(url="http://127.0.0.1:8088", user="a:b"), "x")


# --------------------------------------------------------------------------------------------- failures


def test_channel_created_into_the_application_is_hung_up_undecided(run: Callable[..., Any]) -> None:
    gate = FakeGate(allow={ALLOWED})

    async def scenario() -> None:
        async with running(gate) as (fake, ari):
            await connected(fake, ari)
            # A dialer's POST /channels/create?endpoint=PJSIP/...&app=rpoguard: in the app, never dialled.
            created = channel("c18", ALLOWED)
            created["state"] = "Down"
            fake.enter(created)
            await until(lambda: fake.hung_up == [("c18", "21")], "c18 hung up")
            assert fake.actions("c18") == ["hangup 21"] and fake.continued == []

    run(scenario())
    assert gate.calls == []


def test_channel_gone_before_the_decision_is_not_decided(run: Callable[..., Any]) -> None:
    gate = FakeGate(allow={ALLOWED})

    async def scenario() -> None:
        async with running(gate) as (fake, ari):
            await connected(fake, ari)
            # StasisStart arrives, but the caller hung up before the gate could read the channel.
            fake.enter(channel("c6", ALLOWED), announce=False)
            fake.channels.pop("c6")
            ari.handle_event({"type": "StasisStart", "application": APP, "args": [ALLOWED, "C1"],
                              "channel": channel("c6", ALLOWED)})
            await until(lambda: any("/c6/variable" in path for _, path, _ in fake.calls), "presentation read")
            await asyncio.sleep(0.05)
            assert fake.actions("c6") == [] and fake.continued == []

    run(scenario())
    assert gate.calls == [], "a call that cannot go out must not be decided (as FastAGI's needs_live_call)"


def test_engine_error_blocks(run: Callable[..., Any]) -> None:
    gate = FakeGate(allow={ALLOWED})
    gate.fail = True

    async def scenario() -> None:
        async with running(gate) as (fake, ari):
            await connected(fake, ari)
            fake.enter(channel("c7", ALLOWED))
            await until(lambda: fake.hung_up != [], "c7 hung up")
            assert fake.variables["c7"][VAR_DECISION] == "BLOCK"
            assert fake.variables["c7"][VAR_REASON] == "engine_error"
            assert fake.continued == []

    run(scenario())


def test_final_verdict_differing_from_the_provisional_one_wins(run: Callable[..., Any]) -> None:
    gate = FakeGate(allow={ALLOWED})
    gate.final = Verdict(BLOCK, ("attempt_limit",), "+39" + ALLOWED, "id-final")

    async def scenario() -> None:
        async with running(gate) as (fake, ari):
            await connected(fake, ari)
            fake.enter(channel("c19", ALLOWED))
            await until(lambda: fake.hung_up != [], "c19 hung up")
            actions = fake.actions("c19")
            # The provisional ALLOW's details, then the final BLOCK's, then the decision: never ALLOW.
            assert f"set {VAR_ID}=id-1" in actions[:4] and actions[-2:] == [f"set {VAR_DECISION}=BLOCK", "hangup 21"]
            assert fake.variables["c19"][VAR_REASON] == "attempt_limit"
            assert fake.variables["c19"][VAR_ID] == "id-final"
            assert fake.continued == []

    run(scenario())


def test_decision_past_the_deadline_hangs_up(run: Callable[..., Any]) -> None:
    gate = FakeGate(allow={ALLOWED})
    gate.hold = asyncio.Event()  # never set: the store is stuck

    async def scenario() -> None:
        options = AriConfig(app=APP, decision_deadline=0.2, reconnect_min=0.01, reconnect_max=0.05)
        async with running(gate, options) as (fake, ari):
            await connected(fake, ari)
            fake.enter(channel("c8", ALLOWED))
            await until(lambda: fake.hung_up != [], "c8 hung up")
            assert fake.hung_up == [("c8", "21")]
            assert fake.continued == [] and "c8" not in fake.variables

    run(scenario())


def test_decision_whose_record_never_lands_is_never_given(run: Callable[..., Any]) -> None:
    gate = FakeGate(allow={ALLOWED})
    gate.record_stuck = True

    async def scenario() -> None:
        options = AriConfig(app=APP, decision_deadline=0.2, reconnect_min=0.01, reconnect_max=0.05)
        async with running(gate, options) as (fake, ari):
            await connected(fake, ari)
            fake.enter(channel("c20", ALLOWED))
            await until(lambda: fake.hung_up != [], "c20 hung up")
            # The provisional ALLOW's details went out during the commit; the decision never did.
            assert fake.variables["c20"][VAR_ID] == "id-1"
            assert VAR_DECISION not in fake.variables["c20"]
            assert fake.hung_up == [("c20", "21")] and fake.continued == []

    run(scenario())


def test_failed_variable_never_continues(run: Callable[..., Any]) -> None:
    gate = FakeGate(allow={ALLOWED})

    async def scenario() -> None:
        async with running(gate) as (fake, ari):
            await connected(fake, ari)
            fake.failing.add("/variable")  # Asterisk answers 500 to every SET
            fake.calls.clear()
            fake.enter(channel("c9", ALLOWED))
            await until(lambda: fake.hung_up != [], "c9 hung up")
            assert fake.continued == []
            assert fake.actions("c9")[-1] == "hangup 21"

    run(scenario())


def test_failed_continue_hangs_up(run: Callable[..., Any]) -> None:
    gate = FakeGate(allow={ALLOWED})

    async def scenario() -> None:
        async with running(gate) as (fake, ari):
            await connected(fake, ari)
            fake.failing.add("/continue")
            fake.enter(channel("c10", ALLOWED))
            await until(lambda: fake.hung_up != [], "c10 hung up")
            assert fake.actions("c10")[-2:] == ["continue", "hangup 21"]

    run(scenario())


def test_real_gate_records_the_decision_with_source_ari(run: Callable[..., Any], tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SqliteStore(tmp_path / "rpoguard.db")
        await store.open()
        try:
            # No campaign configured: the real engine blocks with unknown_campaign, and records it.
            async with running(Gate(store, Config())) as (fake, ari):
                await connected(fake, ari)
                fake.enter(channel("c11", ALLOWED, "nocampaign"))
                await until(lambda: fake.hung_up != [], "c11 hung up")
            rows = [row.entry async for row in store.audit_rows()]
        finally:
            await store.close()
        [row] = rows
        assert (row.decision, row.source, row.uniqueid) == ("block", "ari", "c11")
        assert row.reasons.split(",")[0] == "unknown_campaign"
        assert fake.variables["c11"][VAR_REASONS] == row.reasons
        assert fake.variables["c11"][VAR_ID] == row.decision_id
        assert fake.variables["c11"][VAR_REASON] == "unknown_campaign"

    run(scenario())


# --------------------------------------------------------------------------------------------- connection


def test_reconnects_and_decides_a_channel_whose_event_was_lost(run: Callable[..., Any]) -> None:
    gate = FakeGate(allow={ALLOWED})

    async def scenario() -> None:
        async with running(gate) as (fake, ari):
            await connected(fake, ari)
            await fake.drop_websockets()
            # Entered while the socket was breaking: no StasisStart ever reaches the gate.
            fake.enter(channel("c12", ALLOWED, "C1"), announce=False)
            fake.enter(channel("c13", BLOCKED, "C1"), announce=False)
            # Another application's channel and one outside Stasis are none of the gate's business.
            fake.enter(channel("other", ALLOWED, app="dialer"), announce=False)
            dialling = channel("dialling", ALLOWED)
            dialling["dialplan"]["app_name"] = "Dial"
            fake.enter(dialling, announce=False)
            await until(lambda: fake.ws_connections == 2, "reconnected")
            await until(lambda: "c12" in fake.continued and ("c13", "21") in fake.hung_up, "both answered")
            assert {c.uniqueid for c in gate.calls} == {"c12", "c13"}
            assert all(c.extra.get("ari_resync") == "1" for c in gate.calls)
            assert fake.actions("other") == [] and fake.actions("dialling") == []

    run(scenario())


def test_unreadable_arguments_after_reconnect_are_hung_up(run: Callable[..., Any]) -> None:
    gate = FakeGate(allow={ALLOWED})

    async def scenario() -> None:
        async with running(gate) as (fake, ari):
            await connected(fake, ari)
            await fake.drop_websockets()
            fake.enter(channel("c14", app_data='rpoguard,"0612345678",C1'), announce=False)
            await until(lambda: fake.hung_up == [("c14", "21")], "c14 hung up")

    run(scenario())
    assert gate.calls == []


def test_decision_in_flight_over_a_reconnect_is_answered_once(run: Callable[..., Any]) -> None:
    gate = FakeGate(allow={ALLOWED})
    gate.hold = asyncio.Event()

    async def scenario() -> None:
        options = AriConfig(app=APP, decision_deadline=5.0, reconnect_min=0.01, reconnect_max=0.05)
        async with running(gate, options) as (fake, ari):
            await connected(fake, ari)
            fake.enter(channel("c15", ALLOWED))
            await until(gate.entered.is_set, "decision under way")
            await fake.drop_websockets()
            await until(lambda: fake.ws_connections == 2 and ari.ready.is_set(), "reconnected and resynced")
            # The resync saw c15 still in the application, and left it to the decision in flight.
            assert any(path == "/ari/channels" for _, path, _ in fake.calls)
            gate.hold.set()
            await until(lambda: "c15" in fake.continued, "c15 continued")
            await asyncio.sleep(0.05)

        assert len(gate.calls) == 1, "decided twice"
        assert fake.actions("c15").count("continue") == 1

    run(scenario())


def test_silently_dead_connection_is_noticed_by_its_heartbeat(run: Callable[..., Any]) -> None:
    gate = FakeGate(allow={ALLOWED})

    async def scenario() -> None:
        fake = await FakeAri().start()
        fake.autoping = False  # the first connection goes silent: no pong, no close
        async with running(gate, fake=fake) as (fake, ari):
            await connected(fake, ari)
            fake.autoping = True
            await until(lambda: fake.ws_connections == 2, "a new connection after the missed pongs")
            await connected(fake, ari)
            fake.enter(channel("c17", ALLOWED))
            await until(lambda: "c17" in fake.continued, "c17 continued on the new connection")

    run(scenario())


def test_retries_with_backoff_and_logs_each_cause_once(run: Callable[..., Any],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    gate = FakeGate(allow={ALLOWED})

    async def scenario() -> None:
        fake = await FakeAri().start()
        fake.refuse_ws = 503
        async with running(gate, fake=fake) as (fake, ari):
            await until(lambda: fake.ws_attempts >= 5, "several attempts")
            assert not ari.ready.is_set()
            fake.refuse_ws = None
            await connected(fake, ari)
            fake.enter(channel("c16", ALLOWED))
            await until(lambda: "c16" in fake.continued, "c16 continued after the outage")

    with caplog.at_level(logging.WARNING, logger="rpoguard.agi.ari"):
        run(scenario())
    refusals = [r for r in caplog.records if "cannot connect" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]
    assert "HTTP 503" in refusals[0].getMessage()


class RecordingGate(AriGate):
    """Records every wait between connection attempts instead of guessing it from the clock."""

    waits: list[float]

    async def _sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        await super()._sleep(seconds)


def test_failing_resync_backs_off_instead_of_spinning(run: Callable[..., Any]) -> None:
    async def scenario() -> None:
        fake = await FakeAri().start()
        fake.failing.add("/channels")  # the WebSocket opens, but listing the channels fails every time
        config = AriConfig(url=fake.url, app=APP, user=USER, reconnect_min=0.01, reconnect_max=0.04)
        client = AriClient(config, PASSWORD)
        ari = RecordingGate(config, client, FakeGate())
        ari.waits = []
        task = asyncio.get_running_loop().create_task(ari.run())
        try:
            await until(lambda: len(ari.waits) >= 5, "five waits")
            assert not ari.ready.is_set()
        finally:
            ari.stop()
            await asyncio.wait_for(task, 5)
            await client.close()
            await fake.stop()
        assert ari.waits[:5] == [0.01, 0.02, 0.04, 0.04, 0.04]
        assert fake.ws_connections >= 5

    run(scenario())


def test_wrong_password_is_reported_without_the_password(run: Callable[..., Any],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    wrong = "not-the-Passw0rd-42"

    async def scenario() -> None:
        async with running(FakeGate(), password=wrong) as (fake, ari):
            await until(lambda: fake.bad_auth >= 2, "two refused attempts")
            assert not ari.ready.is_set()

    with caplog.at_level(logging.DEBUG):
        run(scenario())
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP 401" in text
    assert wrong not in text and PASSWORD not in text


def test_unreachable_rest_is_an_ari_error(run: Callable[..., Any]) -> None:
    async def scenario() -> None:
        fake = await FakeAri().start()
        url = fake.url
        await fake.stop()
        client = AriClient(AriConfig(url=url, user=USER, request_timeout=1.0), PASSWORD)
        try:
            with pytest.raises(AriError) as raised:
                await client.channels()
        finally:
            await client.close()
        assert raised.value.status is None and not raised.value.gone

    run(scenario())
