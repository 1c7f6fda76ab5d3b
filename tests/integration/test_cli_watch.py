"""`rpoguard watch` as an operator runs it: the real console script against a fake Asterisk manager over a real
socket, then `findings list` showing what it stored; and the mistakes it refuses before connecting."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support.ami_fake import FakeAmiThread

Cli = Callable[..., Any]

SECRET = "cli-secret-never-shown"
DIAL_BEGIN = {"Event": "DialBegin", "Privilege": "call,all", "DestChannel": "PJSIP/carrier-0000000c",
              "DestUniqueid": "1700000000.12", "DestLinkedid": "1700000000.12",
              "DialString": "0645678901@carrier"}
WAIT = 15.0  # a bound on waiting for what must happen, never a speed requirement


def _until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


def test_watch_without_trunks_or_secret_says_what_to_set(run_cli: Cli) -> None:
    code, _, err = run_cli("watch", "--ami-user", "rpoguard", env={"RPOGUARD_AMI_SECRET": SECRET})
    assert code == 2
    assert "[watch] trunks" in err and "--trunk" in err
    code, _, err = run_cli("watch", "--trunk", "PJSIP/carrier-*", "--ami-user", "rpoguard")
    assert code == 2
    assert "RPOGUARD_AMI_SECRET" in err and "secret_file" in err
    code, _, err = run_cli("watch", "--trunk", "PJSIP/carrier-*", env={"RPOGUARD_AMI_SECRET": SECRET})
    assert code == 2 and "--ami-user" in err


def test_watch_reports_and_hangs_up_a_bypass_then_findings_list_shows_it(
        run_cli: Cli, cli_script: str, cli_env: dict[str, str], tmp_path: Path) -> None:
    code, _, err = run_cli("db", "migrate")
    assert code == 0, err
    env = {**cli_env, "RPOGUARD_AMI_SECRET": SECRET}
    log_path = tmp_path / "watch.log"
    with FakeAmiThread(users={"rpoguard": SECRET}) as ami:
        ami.fake.reply("Hangup", [{"Response": "Success", "Message": "Channel Hungup"}])
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [cli_script, "--verbose", "watch", "--ami", f"127.0.0.1:{ami.port}", "--ami-user", "rpoguard",
                 "--trunk", "PJSIP/carrier-*", "--enforce"], env=env, cwd=tmp_path, stdout=log, stderr=log)
        try:
            _until(lambda: any(ok for _, ok in ami.fake.logins) and "AMI connected" in log_path.read_text(),
                   "watch logged in")
            assert ami.call(lambda fake: fake.emit(DIAL_BEGIN)) == 1
            _until(lambda: any(a.get("Action") == "Hangup" for a in ami.fake.actions), "the trunk leg hung up")
        finally:
            proc.send_signal(signal.SIGTERM)
            returncode = proc.wait(timeout=WAIT)
    output = log_path.read_text()
    assert returncode == 0, output
    assert "BYPASS: PJSIP/carrier-0000000c dialled +390645678901" in output
    assert SECRET not in output

    code, out, err = run_cli("findings", "list", "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in str(out).splitlines()]
    bypass = [r for r in rows if r["kind"] == "bypass"]
    assert [(r["channel"], r["number"], r["why"], r["hung_up"]) for r in bypass] == [
        ("PJSIP/carrier-0000000c", "+390645678901", "no_decision", True)]
    stopped = [r for r in rows if r["kind"] == "not_watched"]
    assert len(stopped) == 1 and "rpoguard watch stopped" in stopped[0]["detail"] and stopped[0]["until"] is None
