"""The console's sessions, login throttle, redirect targets and words, without a server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rpoguard.cli.common import UsageError
from rpoguard.cli.web import check_listen
from rpoguard.config import ConfigError, WebConfig, load_config
from rpoguard.constants import REASON_CODES, ROLE_ADMIN, ROLE_OPERATOR, ROLE_VIEWER
from rpoguard.web.i18n import CATALOGUE, REASON_TEXT_IT, pick_language, translate
from rpoguard.web.security import LoginThrottle, Sessions, role_rank, safe_next, tokens_match

TEMPLATES = Path(__file__).parents[2] / "src" / "rpoguard" / "web" / "templates"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_ends_when_idle_too_long() -> None:
    clock = Clock()
    sessions = Sessions(idle=60, max_age=3600, clock=clock)
    session = sessions.new("alice")
    clock.now += 59
    assert sessions.get(session.sid) is session
    clock.now += 59  # touched a moment ago: still alive
    assert sessions.get(session.sid) is session
    clock.now += 60
    assert sessions.get(session.sid) is None


def test_a_session_ends_at_its_maximum_age_however_busy() -> None:
    clock = Clock()
    sessions = Sessions(idle=60, max_age=100, clock=clock)
    session = sessions.new("alice")
    for _ in range(3):
        clock.now += 30
        assert sessions.get(session.sid) is session
    clock.now += 30
    assert sessions.get(session.sid) is None


def test_ending_a_users_sessions_leaves_the_others() -> None:
    sessions = Sessions(idle=60, max_age=100)
    a1, a2, b = sessions.new("alice"), sessions.new("alice"), sessions.new("bob")
    assert sessions.drop_user("alice") == 2
    assert sessions.get(a1.sid) is None and sessions.get(a2.sid) is None
    assert sessions.get(b.sid) is b


def test_session_ids_and_tokens_never_show_in_a_repr() -> None:
    session = Sessions(idle=60, max_age=100).new("alice")
    assert session.sid not in repr(session) and session.csrf not in repr(session)


def test_sessions_are_bounded_dropping_anonymous_ones_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rpoguard.web.security.MAX_SESSIONS", 4)
    sessions = Sessions(idle=60, max_age=100)
    user = sessions.new("alice")
    for _ in range(10):
        sessions.new(None)
    assert len(sessions) <= 4
    assert sessions.get(user.sid) is user


def test_the_throttle_refuses_after_the_attempts_until_the_window_passes() -> None:
    clock = Clock()
    throttle = LoginThrottle(attempts=3, window=60, clock=clock)
    keys = ("user:alice", "addr:10.0.0.1")
    for _ in range(3):
        assert throttle.wait(keys) == 0
        throttle.failed(keys)
    assert throttle.wait(keys) == pytest.approx(60)
    assert throttle.wait(("user:bob", "addr:10.0.0.1")) > 0  # the same address, another name
    clock.now += 61
    assert throttle.wait(keys) == 0


def test_a_success_clears_the_failures() -> None:
    throttle = LoginThrottle(attempts=2, window=60, clock=Clock())
    throttle.failed(("user:alice",))
    throttle.succeeded(("user:alice",))
    throttle.failed(("user:alice",))
    assert throttle.wait(("user:alice",)) == 0


@pytest.mark.parametrize(("target", "expected"), [
    ("/numbers/+39", "/numbers/+39"), (None, "/"), ("", "/"), ("//evil.example", "/"),
    ("https://evil.example/", "/"), ("/\\evil", "/"), ("decisions", "/"),
])
def test_redirects_stay_on_this_site(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_roles_rise_and_an_unknown_role_can_do_nothing() -> None:
    assert role_rank(ROLE_VIEWER) < role_rank(ROLE_OPERATOR) < role_rank(ROLE_ADMIN)
    assert role_rank("root") < role_rank(ROLE_VIEWER)


def test_tokens_compare_exactly() -> None:
    assert tokens_match("abc", "abc")
    assert not tokens_match("abd", "abc") and not tokens_match(None, "abc") and not tokens_match("", "abc")


def test_every_word_a_template_uses_exists_in_both_languages() -> None:
    used: set[str] = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"""\bt\(\s*["']([a-z0-9_.]+)["']\s*[,)]""", template.read_text()))
    assert used, "no t() call found: the pattern is wrong"
    missing = sorted(key for key in used if key not in CATALOGUE)
    assert not missing
    for key, (italian, english) in CATALOGUE.items():
        assert italian.strip() and english.strip(), key


def test_every_reason_has_its_italian_sentence() -> None:
    assert set(REASON_TEXT_IT) == set(REASON_CODES)


def test_italian_unless_the_person_chose_english() -> None:
    assert pick_language(None) == "it" and pick_language("en") == "en" and pick_language("fr") == "it"
    assert translate("login.submit", "it") == "Accedi" and translate("login.submit", "en") == "Log in"


@pytest.mark.parametrize(("listen", "allowed"), [
    (WebConfig(), True),
    (WebConfig(host="::1"), True),
    (WebConfig(host="localhost"), True),
    (WebConfig(host="0.0.0.0"), False),
    (WebConfig(host="192.0.2.10"), False),
    (WebConfig(host="192.0.2.10", allow_plain_http=True), True),
    (WebConfig(host="192.0.2.10", tls_cert="c.pem", tls_key="k.pem"), True),
])
def test_the_console_listens_beyond_loopback_only_with_tls_or_a_choice(listen: WebConfig, allowed: bool) -> None:
    if allowed:
        check_listen(listen)
    else:
        with pytest.raises(UsageError, match="plain HTTP"):
            check_listen(listen)


def test_the_web_section_of_the_config_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[web]\nport = 9000\nsession_idle = 600\n')
    config = load_config(str(path))
    assert (config.web.port, config.web.session_idle) == (9000, 600.0)
    path.write_text('[web]\ntls_cert = "c.pem"\n')
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        load_config(str(path))
    path.write_text('[web]\nsesion_idle = 600\n')
    with pytest.raises(ConfigError, match="sesion_idle"):
        load_config(str(path))
