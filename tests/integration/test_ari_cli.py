"""`rpoguard ari` as an operator runs it: the [ari] configuration, where the password comes from, clear
errors, and the real console script against the fake ARI (tests/support/ari_fakes.py) in a thread of this process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rpoguard.config import AriConfig, ConfigError, load_config
from support.ari_fakes import APP, PASSWORD, USER, FakeAri, channel


def test_ari_section_of_the_configuration(write_file: Callable[..., Path]) -> None:
    config = load_config(str(write_file("a.toml", '[ari]\nurl = "http://127.0.0.1:8088"\napp = "gate"\n'
                                                  'user = "rpoguard"\npassword_file = "/etc/rpoguard/ari.password"\n'
                                                  "decision_deadline = 1.5\nreconnect_max = 5\n")))
    assert config.ari == AriConfig("http://127.0.0.1:8088", "gate", "rpoguard", None, "/etc/rpoguard/ari.password",
                                   1.5, 5.0)
    assert load_config(str(write_file("b.toml", ""))).ari == AriConfig()
    for text, message in [
        ('[ari]\npasswd = "x"\n', "unknown key"),
        ('[ari]\npassword = "x"\npassword_file = "y"\n', "not both"),
        ("[ari]\ndecision_deadline = 0\n", "more than 0"),
        ('[ari]\napp = "a,b"\n', "without commas"),
        ("[ari]\nuser = 3\n", "must be str"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(str(write_file("c.toml", text)))


def test_shipped_configuration_has_a_usable_ari_section() -> None:
    shipped = Path(__file__).resolve().parents[2] / "deploy" / "rpoguard.toml"
    ari = load_config(str(shipped)).ari
    assert (ari.url, ari.app, ari.user) == ("http://127.0.0.1:8088", "rpoguard", "rpoguard")
    # The password stays out of the shared file.
    assert ari.password is None and ari.password_file == "/etc/rpoguard/ari.password"


def test_usage_errors_name_what_is_missing(run_cli: Callable[..., tuple[int, str, str]],
                                           write_file: Callable[..., Path]) -> None:
    code, _, err = run_cli("ari", env={"RPOGUARD_CONFIG": str(write_file("e.toml", ""))})
    assert code == 2 and "no ARI user" in err
    code, _, err = run_cli("ari", "--user", "u", env={"RPOGUARD_CONFIG": str(write_file("e.toml", ""))})
    assert code == 2 and "no ARI password" in err and "RPOGUARD_ARI_PASSWORD" in err
    empty = write_file("empty.password", "\n")
    config = write_file("f.toml", f'[ari]\nuser = "u"\npassword_file = "{empty}"\n')
    code, _, err = run_cli("ari", env={"RPOGUARD_CONFIG": str(config)})
    assert code == 2 and f"{empty} is empty" in err
    code, _, err = run_cli("ari", "--user", "u", "--url", "ws://pbx:8088",
                           env={"RPOGUARD_CONFIG": str(write_file("e.toml", "")), "RPOGUARD_ARI_PASSWORD": "x"})
    assert code == 2 and "expected http://HOST:PORT" in err


class FakeAriThread:
    """The fake ARI on its own event loop in a thread, for a subprocess to talk to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.fake = FakeAri()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.start(), self.loop).result(10)

    def call(self, fn: Callable[[], object]) -> None:
        async def run() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def fake_ari() -> Iterator[FakeAriThread]:
    server = FakeAriThread()
    yield server
    server.close()


def wait_for(predicate: Callable[[], bool], what: str, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


def test_console_script_decides_records_and_stops_on_sigterm(
    run_cli: Callable[..., tuple[int, str, str]], cli_script: str, cli_env: dict[str, str],
    fake_ari: FakeAriThread, write_file: Callable[..., Path], tmp_path: Path,
) -> None:
    assert run_cli("principal", "add", "acme", "--name", "ACME")[0] == 0
    password_file = write_file("ari.password", PASSWORD + "\n")
    config = write_file("ari.toml", f'[ari]\nurl = "{fake_ari.fake.url}"\nuser = "{USER}"\n'
                                    f'password_file = "{password_file}"\napp = "{APP}"\n')
    env = {**cli_env, "RPOGUARD_CONFIG": str(config)}
    with (tmp_path / "ari.log").open("w+") as log:
        proc = subprocess.Popen([cli_script, "--verbose", "ari"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                cwd=tmp_path)
        try:
            wait_for(lambda: fake_ari.fake.ws_connections == 1 or proc.poll() is not None, "connected")
            assert proc.poll() is None, (tmp_path / "ari.log").read_text()
            wait_for(lambda: any(p == "/ari/channels" for _, p, _ in fake_ari.fake.calls), "resync")
            fake_ari.call(lambda: fake_ari.fake.enter(channel("1732761234.17", "0612345678", "nocampaign")))
            wait_for(lambda: fake_ari.fake.hung_up != [], "the channel hung up")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        output = (tmp_path / "ari.log").read_text()
    assert fake_ari.fake.hung_up == [("1732761234.17", "21")]
    assert PASSWORD not in output, "the ARI password reached the log"
    assert "rpoguard ari stopped" in output
    code, out, _ = run_cli("audit", "export", "--format", "jsonl")
    assert code == 0
    [row] = [json.loads(line) for line in out.splitlines()]
    assert (row["source"], row["decision"], row["uniqueid"]) == ("ari", "block", "1732761234.17")
    assert row["reasons"].split(",")[0] == "unknown_campaign"
    assert fake_ari.fake.variables["1732761234.17"]["RPOGUARD_ID"] == row["decision_id"]
