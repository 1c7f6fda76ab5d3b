"""The AMI side of `dialplan audit` (and of `watch`): where to connect and as whom, one connection with
panoramisk against the fake manager over a real socket (tests/support/ami_fake.py), the dialplan read by
ShowDialPlan as a real Asterisk 22 answered it, and the `rpoguard dialplan audit` command."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rpoguard.bypass.ami import (
    ENV_AMI_SECRET,
    AmiSettingsError,
    AmiTarget,
    AmiUnavailable,
    ami_target,
    connect,
    disconnect,
)
from rpoguard.bypass.dialplan_audit import (
    FREEPBX_HOOK,
    HOOK_ABSENT,
    HOOK_GATES,
    Dialplan,
    audit,
    from_ami_events,
    read_ami,
    read_conf,
)
from rpoguard.bypass.match import TrunkPatterns
from rpoguard.config import AmiConfig
from rpoguard.constants import DIALPLAN_TEXT, DIALPLAN_UNGATED
from support.aio import Runner
from support.ami_fake import CLOSE, FakeAmi, FakeAmiThread, list_reply, read_recording
from support.dialplan_examples import PRODUCT_DIALPLAN, shipped_hook

USER, SECRET = "rpoguard", "s3cret-never-shown"
CliRunner = Callable[..., Any]
RECORDING = Path(__file__).resolve().parents[1] / "support" / "showdialplan_asterisk22.txt"


def target(ami: FakeAmi | FakeAmiThread, secret: str = SECRET) -> AmiTarget:
    return AmiTarget("127.0.0.1", ami.port, USER, secret)


# -- where and as whom ----------------------------------------------------------------------------------

def test_the_options_override_the_ami_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_AMI_SECRET, raising=False)
    config = AmiConfig(host="10.0.0.5", port=5039, user="cfg", secret="from-config")
    assert ami_target(config) == AmiTarget("10.0.0.5", 5039, "cfg", "from-config")
    assert ami_target(config, address="pbx:6000", user="opt", secret="from-option") == AmiTarget(
        "pbx", 6000, "opt", "from-option")
    assert ami_target(config, address="pbx").port == 5039
    assert ami_target(config, address="[::1]:5038").host == "::1"
    assert ami_target(config, address="[::1]:5038").describe() == "cfg@[::1]:5038"
    for bad in ("pbx:0", "pbx:http", ":5038", "[::1", "pbx:70000"):
        with pytest.raises(AmiSettingsError, match="--ami"):
            ami_target(config, address=bad)


def test_where_the_secret_comes_from(monkeypatch: pytest.MonkeyPatch, write_file: Callable[..., Path]) -> None:
    monkeypatch.delenv(ENV_AMI_SECRET, raising=False)
    secret_file = write_file("ami.secret", "  from-file \n")
    with_file = AmiConfig(user="u", secret_file=str(secret_file))
    assert ami_target(with_file).secret == "from-file"
    assert ami_target(AmiConfig(user="u", secret="from-config")).secret == "from-config"
    monkeypatch.setenv(ENV_AMI_SECRET, "from-env")
    assert ami_target(with_file).secret == "from-env"
    assert ami_target(with_file, secret="from-option").secret == "from-option"


@pytest.mark.parametrize(("config", "message"), [
    (AmiConfig(secret="x"), "no AMI user: give --ami-user or set [ami] user"),
    (AmiConfig(user="u"), f"no AMI secret for user u: set {ENV_AMI_SECRET}, [ami] secret_file"),
    (AmiConfig(user="u", secret_file="/nonexistent/ami.secret"),
     "cannot read the AMI secret file /nonexistent/ami.secret: No such file or directory"),
])
def test_what_is_missing_is_named(monkeypatch: pytest.MonkeyPatch, config: AmiConfig, message: str) -> None:
    monkeypatch.delenv(ENV_AMI_SECRET, raising=False)
    with pytest.raises(AmiSettingsError) as caught:
        ami_target(config)
    assert message in str(caught.value)


def test_an_empty_secret_file_is_refused(monkeypatch: pytest.MonkeyPatch, write_file: Callable[..., Path]) -> None:
    monkeypatch.delenv(ENV_AMI_SECRET, raising=False)
    empty = write_file("empty.secret", "\n")
    with pytest.raises(AmiSettingsError, match="is empty"):
        ami_target(AmiConfig(user="u", secret_file=str(empty)))


def test_the_secret_never_shows() -> None:
    shown = AmiTarget("127.0.0.1", 5038, USER, SECRET)
    assert SECRET not in repr(shown) and SECRET not in str(shown) and SECRET not in f"{shown}"
    assert shown.describe() == "rpoguard@127.0.0.1:5038"


# -- one connection -------------------------------------------------------------------------------------

def test_connect_logs_in_with_events_as_asked_and_closes_cleanly(run: Runner) -> None:
    async def scenario() -> None:
        async with FakeAmi({USER: SECRET}) as ami:
            quiet = await connect(target(ami), events=False, timeout=5)
            lively = await connect(target(ami), events=True, timeout=5)
            pong = await lively.send_action({"Action": "Ping"})
            assert pong["Ping"] == "Pong"
            assert await ami.emit({"Event": "Newchannel", "Channel": "PJSIP/carrier-00000001"}) == 1
            await disconnect(quiet)
            await disconnect(lively)
            logins = [a for a in ami.actions if a["Action"] == "Login"]
            assert [(a["Username"], a["Events"], a["Secret"]) for a in logins] == [
                (USER, "off", "********"), (USER, "on", "********")]
            assert ami.logins == [(USER, True), (USER, True)]

    run(scenario(), timeout=30)


def test_a_lost_connection_is_not_reopened_and_fails_what_waits(run: Runner,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with FakeAmi({USER: SECRET}) as ami:
            ami.reply("Status", lambda action: [])  # never answers: the request is still waiting
            manager = await connect(target(ami), events=False, timeout=5)
            # panoramisk's own Manager would call connect() again reconnect_timeout after the loss: made
            # immediate here, and recorded instead of done.
            reconnects: list[object] = []
            manager.reconnect_timeout = 0
            manager.connect = lambda *args, **kwargs: reconnects.append(args)
            waiting = manager.send_action({"Action": "Status"})
            await ami.drop()
            with pytest.raises(AmiUnavailable, match="lost before Asterisk answered"):
                await waiting
            for _ in range(3):  # past the loop iteration a call_later(0) would run in
                await asyncio.sleep(0)
            await disconnect(manager)
            assert reconnects == [] and ami.connections == 1 and ami.sessions == 0

    with caplog.at_level(logging.DEBUG):
        run(scenario(), timeout=30)
    assert "AMI connection to 127.0.0.1" in caplog.text and SECRET not in caplog.text


def test_a_refused_login_says_so_without_the_secret(run: Runner, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> str:
        async with FakeAmi({USER: "other"}) as ami:
            with pytest.raises(AmiUnavailable) as caught:
                await connect(target(ami), events=False, timeout=5)
            return str(caught.value)

    with caplog.at_level(logging.DEBUG):
        message = run(scenario(), timeout=30)
    assert message.startswith("Asterisk's manager at 127.0.0.1:") and "refused the login of user rpoguard" in message
    assert "(Authentication failed)" in message and SECRET not in message and SECRET not in caplog.text


def test_nobody_listening_is_a_clear_error(run: Runner) -> None:
    async def scenario() -> str:
        ami = await FakeAmi({USER: SECRET}).start()
        await ami.stop()  # the port is now closed
        with pytest.raises(AmiUnavailable) as caught:
            await connect(target(ami), events=False, timeout=5)
        return str(caught.value)

    assert "cannot reach Asterisk's manager at 127.0.0.1:" in run(scenario(), timeout=30)
    assert "connection refused" in run(scenario(), timeout=30)


def test_a_manager_that_never_answers_the_login_times_out(run: Runner) -> None:
    async def scenario() -> str:
        async with FakeAmi({USER: SECRET}, login_delay=None) as ami:
            with pytest.raises(AmiUnavailable) as caught:
                await connect(target(ami), events=False, timeout=0.2)
            assert ami.sessions <= 1
            return str(caught.value)

    assert "did not answer the login within 0.2 s" in run(scenario(), timeout=30)


def test_a_caller_giving_up_during_the_login_leaves_no_connection_behind(run: Runner) -> None:
    async def scenario() -> None:
        async with FakeAmi({USER: SECRET}, login_delay=None) as ami:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(connect(target(ami), events=False, timeout=30), 0.2)
            await ami.idle()  # the fake sees the socket closed (the test's own time limit bounds the wait)
            assert ami.connections == 1 and ami.sessions == 0

    run(scenario(), timeout=30)


# -- the dialplan over AMI ------------------------------------------------------------------------------

def without_hook() -> list[dict[str, str]]:
    """The recording as if a FreePBX upgrade had dropped extensions_custom.conf's predial hook."""
    return [m for m in read_recording(RECORDING) if m.get("Context") != FREEPBX_HOOK]


def test_the_dialplan_asterisk_22_listed_is_audited(run: Runner) -> None:
    async def scenario() -> None:
        async with FakeAmi({USER: SECRET}) as ami:
            ami.reply("ShowDialPlan", read_recording(RECORDING))
            plan = await read_ami(target(ami), connect_timeout=5)
            assert plan.source == f"AMI rpoguard@127.0.0.1:{ami.port}"
            assert len(plan.contexts) == 13 and plan.priority_count() == 93  # ShowDialPlanComplete's counts
            assert plan.contexts["rpoguard-check"].extensions["s"].priorities[15].label == "allow"
            report = audit(plan, TrunkPatterns(["PJSIP/carrier-*"]))
            # The gate's own test routes (one reached by a GotoIf to the check) and FreePBX's trunk dial.
            assert report.freepbx_hook == HOOK_GATES and report.findings == []
            assert (report.trunk_dials, report.gated) == (3, 3)

            ami.reply("ShowDialPlan", without_hook())
            report = audit(await read_ami(target(ami), connect_timeout=5), TrunkPatterns(["PJSIP/carrier-*"]))
            assert report.freepbx_hook == HOOK_ABSENT
            assert [(f.context, f.extension, f.priority, f.line, f.why) for f in report.findings] == [
                ("macro-dialout-trunk", "s", 7, "Dial(PJSIP/${OUTNUM}@carrier,10)", DIALPLAN_UNGATED)]
            assert ami.sessions == 0  # logged off and closed

    run(scenario(), timeout=30)


def test_the_file_reader_sees_what_asterisk_loaded(write_file: Callable[..., Path]) -> None:
    """The same files read by read_conf and by Asterisk 22 (the recording) give the same dialplan."""
    e2e = Path(__file__).resolve().parents[1] / "e2e"
    for name, text in [("rpoguard.conf", PRODUCT_DIALPLAN.read_text(encoding="utf-8")),
                       ("freepbx17.conf", (e2e / "dialplan_freepbx17.conf").read_text(encoding="utf-8")),
                       ("hook.conf", shipped_hook("17")),
                       ("gate.conf", (e2e / "dialplan_gate.conf").read_text(encoding="utf-8"))]:
        write_file(name, text)
    # What the e2e harness puts around the included files.
    conf = write_file("extensions.conf", "[general]\nstatic = yes\n\n[e2e-from-carrier]\nexten => _X.,1,Hangup(21)\n\n"
                                         "#include rpoguard.conf\n#include freepbx17.conf\n#include hook.conf\n"
                                         "#include gate.conf\n\n[globals]\nRPOGUARD_AGI=agi://127.0.0.1:4573\n")
    from_file = read_conf(conf)
    from_asterisk = from_ami_events(read_recording(RECORDING), "AMI")

    def shape(plan: Dialplan) -> dict[tuple[str, str], list[tuple[int, str | None, str, str]]]:
        return {(c.name, e.name): [(p.number, p.label, p.app, p.data) for p in e.ordered()]
                for c in plan.contexts.values() for e in c.extensions.values()}

    assert shape(from_file) == shape(from_asterisk)


def test_a_user_without_the_reporting_class_is_told_what_to_grant(run: Runner) -> None:
    async def scenario() -> str:
        async with FakeAmi({USER: SECRET}, deny=["ShowDialPlan"]) as ami:
            with pytest.raises(AmiUnavailable) as caught:
                await read_ami(target(ami), connect_timeout=5)
            return str(caught.value)

    message = run(scenario(), timeout=30)
    assert "refused ShowDialPlan to user rpoguard (Permission denied)" in message
    assert "needs write = reporting" in message


def test_a_list_cut_short_is_an_error(run: Runner) -> None:
    async def scenario() -> str:
        async with FakeAmi({USER: SECRET}) as ami:
            listed = [*list_reply([], "ShowDialPlanComplete")[:1], {"Response": "Error", "Message": "Out of memory"}]
            ami.reply("ShowDialPlan", listed)
            with pytest.raises(AmiUnavailable) as caught:
                await read_ami(target(ami), connect_timeout=5)
            return str(caught.value)

    assert "ended before it was complete (Out of memory)" in run(scenario(), timeout=30)


def test_a_connection_lost_in_the_middle_of_the_list_is_an_error(run: Runner) -> None:
    async def scenario() -> str:
        async with FakeAmi({USER: SECRET}) as ami:
            ami.reply("ShowDialPlan", [*read_recording(RECORDING)[:10], CLOSE])
            with pytest.raises(AmiUnavailable) as caught:
                await read_ami(target(ami), connect_timeout=5, list_timeout=30)
            return str(caught.value)

    assert "closed the connection before its dialplan list was complete" in run(scenario(), timeout=20)


# -- the command ----------------------------------------------------------------------------------------

@pytest.fixture
def fake_ami() -> Iterator[FakeAmiThread]:
    with FakeAmiThread(users={USER: SECRET}) as server:
        server.fake.reply("ShowDialPlan", without_hook())
        yield server


@pytest.fixture
def config_file(write_file: Callable[..., Path]) -> Callable[..., Path]:
    def make(port: int, trunks: str = '["PJSIP/carrier-*"]', name: str = "rpoguard.toml") -> Path:
        return write_file(name, f'[ami]\nport = {port}\nuser = "{USER}"\n\n[watch]\ntrunks = {trunks}\n')

    return make


def test_cli_over_ami_reports_the_finding_and_exits_1(run_cli: CliRunner, fake_ami: FakeAmiThread,
                                                      config_file: Callable[..., Path]) -> None:
    env = {"RPOGUARD_CONFIG": str(config_file(fake_ami.port)), ENV_AMI_SECRET: SECRET}
    code, out, err = run_cli("dialplan", "audit", env=env)
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0] == "[macro-dialout-trunk] s,7: Dial(PJSIP/${OUTNUM}@carrier,10)"
    assert lines[1] == f"  {DIALPLAN_UNGATED}: {DIALPLAN_TEXT[DIALPLAN_UNGATED]}"
    assert lines[-1] == (f"dialplan audit of AMI rpoguard@127.0.0.1:{fake_ami.port}: 12 context(s), 90 priorities "
                         "read, 3 trunk dial(s), 2 gated, 1 finding(s); FreePBX macro-dialout-trunk-predial-hook: "
                         "absent")
    code, out, _ = run_cli("dialplan", "audit", "--json", env=env)
    report = json.loads(out)
    assert code == 1 and report["findings_count"] == 1 and report["freepbx_hook"] == HOOK_ABSENT
    assert report["findings"][0] | {"where": None} == {
        "context": "macro-dialout-trunk", "extension": "s", "priority": 7, "label": None,
        "application": "Dial(PJSIP/${OUTNUM}@carrier,10)", "where": None, "why": DIALPLAN_UNGATED,
        "text": DIALPLAN_TEXT[DIALPLAN_UNGATED], "via": None}


def test_cli_with_a_file_exits_0_when_every_trunk_dial_is_gated(run_cli: CliRunner, write_file: Callable[..., Path],
                                                                 config_file: Callable[..., Path]) -> None:
    conf = write_file("extensions.conf", "[route]\nexten => _X.,1,GoSub(rpoguard-check,s,1(${EXTEN},c))\n"
                                         " same => n,Dial(PJSIP/${EXTEN}@carrier)\n")
    code, out, err = run_cli("dialplan", "audit", "--file", conf, "--db", "/nonexistent/dir/rpoguard.db",
                             env={"RPOGUARD_CONFIG": str(config_file(1))})
    assert (code, err) == (0, "")
    assert out == f"dialplan audit of {conf}: 1 context(s), 2 priorities read, 1 trunk dial(s), 1 gated, 0 finding(s)\n"


def test_cli_cannot_run_exits_2_with_the_reason(run_cli: CliRunner, write_file: Callable[..., Path],
                                                config_file: Callable[..., Path], fake_ami: FakeAmiThread) -> None:
    conf = write_file("extensions.conf", "[route]\nexten => _X.,1,Dial(PJSIP/${EXTEN}@carrier)\n")
    env = {"RPOGUARD_CONFIG": str(config_file(fake_ami.port))}
    code, _, err = run_cli("dialplan", "audit", "--file", conf,
                           env={"RPOGUARD_CONFIG": str(config_file(1, trunks="[]", name="no-trunks.toml"))})
    assert code == 2 and "no trunks to look for: set [watch] trunks" in err
    bad = write_file("bad.conf", "#include gone.conf\n")
    code, _, err = run_cli("dialplan", "audit", "--file", bad, env=env)
    assert code == 2 and f"{bad}:1: #include gone.conf: no such file" in err
    code, _, err = run_cli("dialplan", "audit", env=env)
    assert code == 2 and f"no AMI secret for user {USER}" in err
    code, _, err = run_cli("dialplan", "audit", "--ami-secret", "wrong", env=env)
    assert code == 2 and "refused the login of user rpoguard" in err and "wrong" not in err
    fake_ami.call(lambda ami: ami.stop())
    code, _, err = run_cli("dialplan", "audit", env={**env, ENV_AMI_SECRET: SECRET})
    assert code == 2 and f"cannot reach Asterisk's manager at 127.0.0.1:{fake_ami.port}: connection refused" in err
    assert "Traceback" not in err


def test_parallel_sessions_each_get_their_own_answers(run: Runner) -> None:
    async def scenario() -> None:
        async with FakeAmi({USER: SECRET}) as ami:
            ami.reply("ShowDialPlan", read_recording(RECORDING))
            plans = await asyncio.gather(*(read_ami(target(ami), connect_timeout=5) for _ in range(3)))
            assert {p.priority_count() for p in plans} == {93}

    run(scenario(), timeout=30)


def test_help_names_the_command_and_opens_no_database(run_cli: CliRunner, db_path: Path) -> None:
    code, out, err = run_cli("--help")
    assert (code, err) == (0, "") and "dialplan" in out
    code, out, err = run_cli("dialplan", "--help")
    assert (code, err) == (0, "") and out.startswith("usage: rpoguard dialplan") and "audit" in out
    code, out, err = run_cli("dialplan", "audit", "--help")
    assert (code, err) == (0, "") and out.startswith("usage: rpoguard dialplan audit")
    for option in ("--file", "--ami HOST:PORT", "--ami-user", "--ami-secret", ENV_AMI_SECRET, "--json"):
        assert option in out
    assert not db_path.exists()
