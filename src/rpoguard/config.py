"""TOML configuration, read once at start-up; the per-call path never parses config."""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from rpoguard.constants import DEFAULT_FASTAGI_HOST, DEFAULT_FASTAGI_PORT, DEFAULT_RPO_VALIDITY_DAYS

log = logging.getLogger(__name__)

ENV_DB = "RPOGUARD_DB"
ENV_CONFIG = "RPOGUARD_CONFIG"
DEFAULT_DB = "rpoguard.db"
# Read when neither --config nor RPOGUARD_CONFIG is given, so that Asterisk's agi-bin program and the
# systemd service find the same settings as the operator's commands.
SYSTEM_CONFIG = "/etc/rpoguard/rpoguard.toml"


class ConfigError(Exception):
    """The configuration file is missing, unreadable or wrong; the message names the file and key."""


EVENT_LOOPS = ("asyncio", "uvloop")
MAX_PORT = 65535

# -- defaults: each lives here once; the servers and the classic AGI entry read them from these dataclasses

# [serve]: from accept to close. The gate answers in well under a millisecond; 2 s leaves room for a slow
# disk while a dialler's call still fails fast if the server is stuck (Asterisk itself waits forever,
# docs/asterisk-agi.md "No timeout on Asterisk's side").
DEFAULT_SESSION_DEADLINE: Final = 2.0
# Above what a PBX ever has in flight (a session lasts about a millisecond) so that a few thousand idle or
# slow-dripping connections, each cut at its own deadline, cannot take every slot from real calls.
DEFAULT_MAX_CONNECTIONS: Final = 4096
# Call bursts from a dialler arrive together; the kernel caps this at net.core.somaxconn anyway.
DEFAULT_BACKLOG: Final = 512
# How long a connection closing after "failure" waits for Asterisk to read it and hang up first.
DEFAULT_LINGER: Final = 0.5
# [ari]
DEFAULT_ARI_URL: Final = "http://127.0.0.1:8088"
DEFAULT_ARI_APP: Final = "rpoguard"
# From StasisStart to the channel's answer, as the FastAGI session deadline.
DEFAULT_DECISION_DEADLINE: Final = 2.0
# Reconnection waits start here and double up to reconnect_max.
DEFAULT_RECONNECT_MIN: Final = 0.5
DEFAULT_RECONNECT_MAX: Final = 10.0
# A channel answered this long ago that a resync still finds in the application is hung up.
DEFAULT_ANSWER_GRACE: Final = 5.0
DEFAULT_ARI_REQUEST_TIMEOUT: Final = 2.0
# WebSocket pings: a connection a proxy or firewall silently dropped is noticed within two periods.
DEFAULT_ARI_HEARTBEAT: Final = 5.0
# [ami] (watch, dialplan audit): Asterisk's manager port, loopback only (README "Proving no call bypassed").
DEFAULT_AMI_HOST: Final = "127.0.0.1"
DEFAULT_AMI_PORT: Final = 5038
# A ping this often; a connection that answers none within ping_timeout is dropped and reopened, since
# panoramisk alone notices a silently dead connection only when TCP gives up (minutes).
DEFAULT_AMI_PING_INTERVAL: Final = 5.0
DEFAULT_AMI_PING_TIMEOUT: Final = 3.0
DEFAULT_AMI_CONNECT_TIMEOUT: Final = 5.0
# [watch]: a decision counts for a trunk leg begun at most this long after it (the dialplan dials at once;
# a FreePBX route may try a few trunks, each with its own check) ...
DEFAULT_WATCH_MAX_AGE: Final = 60.0
# ... or this long before it: Asterisk's and rpoguard's clocks, or the moments each takes, may differ.
DEFAULT_WATCH_CLOCK_SKEW: Final = 2.0
# [web] (the console): loopback by default, as every other listener; 8470 is the public contract's port.
DEFAULT_WEB_HOST: Final = "127.0.0.1"
DEFAULT_WEB_PORT: Final = 8470
# A console left open at a desk stops working after half an hour untouched, and after a working day at most.
DEFAULT_WEB_SESSION_IDLE: Final = 1800.0
DEFAULT_WEB_SESSION_MAX: Final = 12 * 3600.0
# Failed logins per user name and per client address before the next are refused for the window.
DEFAULT_WEB_LOGIN_ATTEMPTS: Final = 5
DEFAULT_WEB_LOGIN_WINDOW: Final = 900.0
# A 5-million-row answer file in its widest form is about 150 MB; 1 GiB leaves room without inviting a
# disk-filling upload.
DEFAULT_WEB_MAX_UPLOAD: Final = 1 << 30


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """`rpoguard serve` (the FastAGI server) and, for the deadline and command timeout, classic AGI."""

    host: str = DEFAULT_FASTAGI_HOST
    # 0 picks a free port (tests); the file accepts 1..65535.
    port: int = DEFAULT_FASTAGI_PORT
    # Asterisk waits for a FastAGI server forever; the server must give up first (docs/asterisk-agi.md).
    session_deadline: float = DEFAULT_SESSION_DEADLINE
    # Sessions at once; more are answered "failure" at once.
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    # FastAGI has no authentication: binding beyond loopback needs an explicit list of PBX addresses.
    allowed_clients: tuple[str, ...] = ()
    # "uvloop" (pip install 'rpoguard[uvloop]') for `serve` and `ari`: less CPU per call, and under
    # overload it keeps serving where the default loop lets sessions reach their deadline (README).
    event_loop: str = "asyncio"
    # Seconds a closing connection waits for Asterisk to read "failure" and hang up; 0 closes at once.
    linger: float = DEFAULT_LINGER
    # Optional bound on each reply from Asterisk, within the session deadline; None: the deadline only.
    command_timeout: float | None = None
    # The listening socket's queue of connections not yet accepted.
    backlog: int = DEFAULT_BACKLOG


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """Anchors for the decision log (rpoguard.anchor): where chain heads are kept outside the database."""

    # An append-only file outside the database folder; None: only the hash chain protects the log.
    anchor_file: str | None = None
    # A key kept away from the database (owner-only): anchor lines carry an HMAC made with it.
    anchor_key_file: str | None = None
    # Seconds between chain heads logged on rpoguard.audit.anchor (journald); None: 60 with an anchor
    # file, off without; 0: off.
    anchor_log_interval: float | None = None


@dataclass(frozen=True, slots=True)
class AriConfig:
    """`rpoguard ari`: where Asterisk's ARI is and who we are there. The password is best kept out of this
    file (RPOGUARD_ARI_PASSWORD or password_file); see README "FastAGI or ARI?"."""

    url: str = DEFAULT_ARI_URL
    app: str = DEFAULT_ARI_APP
    user: str = ""
    password: str | None = None
    # A file holding only the password (owner-only), e.g. one systemd's LoadCredential provides.
    password_file: str | None = None
    # From StasisStart to the answer; past it the channel is hung up (as [serve] session_deadline).
    decision_deadline: float = DEFAULT_DECISION_DEADLINE
    # Longest wait between reconnection attempts (the first waits reconnect_min, then doubling).
    reconnect_max: float = DEFAULT_RECONNECT_MAX
    # Not keys of the file (_ARI_KEYS): fixed for operators, shortened by tests.
    reconnect_min: float = DEFAULT_RECONNECT_MIN
    answer_grace: float = DEFAULT_ANSWER_GRACE
    request_timeout: float = DEFAULT_ARI_REQUEST_TIMEOUT
    heartbeat: float = DEFAULT_ARI_HEARTBEAT


@dataclass(frozen=True, slots=True)
class AmiConfig:
    """Asterisk's manager interface for `watch` and `dialplan audit`. The secret is best kept out of this
    file (RPOGUARD_AMI_SECRET or secret_file) and never reaches a log."""

    host: str = DEFAULT_AMI_HOST
    port: int = DEFAULT_AMI_PORT
    user: str = ""
    # Kept out of repr: a configuration printed or logged never shows it.
    secret: str | None = field(default=None, repr=False)
    secret_file: str | None = None
    connect_timeout: float = DEFAULT_AMI_CONNECT_TIMEOUT
    ping_interval: float = DEFAULT_AMI_PING_INTERVAL
    ping_timeout: float = DEFAULT_AMI_PING_TIMEOUT
    # Not keys of the file: fixed for operators, shortened by tests (as AriConfig's).
    reconnect_min: float = DEFAULT_RECONNECT_MIN
    reconnect_max: float = DEFAULT_RECONNECT_MAX


@dataclass(frozen=True, slots=True)
class WatchConfig:
    """Which channels are trunk legs (a call that reached the carrier), and how a decision is matched to one
    (docs/bypass.md)."""

    # fnmatch patterns on the channel name, e.g. "PJSIP/carrier-*"; empty: watch and reconcile refuse to run.
    trunks: tuple[str, ...] = ()
    max_age: float = DEFAULT_WATCH_MAX_AGE
    clock_skew: float = DEFAULT_WATCH_CLOCK_SKEW


@dataclass(frozen=True, slots=True)
class WebConfig:
    """`rpoguard web`, the compliance console (docs/console.md)."""

    host: str = DEFAULT_WEB_HOST
    port: int = DEFAULT_WEB_PORT
    # HTTPS served by the console itself; without them it speaks plain HTTP, on loopback only unless
    # behind_proxy or allow_plain_http says why that is safe.
    tls_cert: str | None = None
    tls_key: str | None = None
    # A TLS reverse proxy in front (deploy/nginx-rpoguard.conf): cookies are marked Secure and the client's
    # address is read from X-Forwarded-For, which only a proxy on loopback may set.
    behind_proxy: bool = False
    # Listening beyond loopback over plain HTTP: passwords and session cookies would cross the network in
    # clear, so only an explicit choice allows it.
    allow_plain_http: bool = False
    session_idle: float = DEFAULT_WEB_SESSION_IDLE
    session_max: float = DEFAULT_WEB_SESSION_MAX
    login_attempts: int = DEFAULT_WEB_LOGIN_ATTEMPTS
    login_window: float = DEFAULT_WEB_LOGIN_WINDOW
    max_upload_bytes: int = DEFAULT_WEB_MAX_UPLOAD
    # Where uploads are spooled while they import; None: a private directory under the system's temporary one.
    upload_dir: str | None = None

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert and self.tls_key)


@dataclass(frozen=True, slots=True)
class Config:
    db: str = DEFAULT_DB
    # A trunk-access prefix the PBX puts before every dialled number (e.g. "0"); stripped once.
    trunk_prefix: str = ""
    rpo_validity_days: int = DEFAULT_RPO_VALIDITY_DAYS
    serve: ServeConfig = field(default_factory=ServeConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    ari: AriConfig = field(default_factory=AriConfig)
    ami: AmiConfig = field(default_factory=AmiConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    web: WebConfig = field(default_factory=WebConfig)
    source: str | None = None


def _expect(table: dict[str, object], key: str, kind: type, where: str) -> object:
    value = table[key]
    if kind is int and isinstance(value, bool):
        raise ConfigError(f"{where}: '{key}' must be an integer, not {value!r}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: '{key}' must be {kind.__name__}, not {value!r}")
    return value


def load_config(path: str | None = None, db: str | None = None) -> Config:
    """Build the configuration from (in rising priority) defaults, the TOML file, env and --db."""
    path = path or os.environ.get(ENV_CONFIG)
    if not path and os.path.exists(SYSTEM_CONFIG):
        path = SYSTEM_CONFIG
    data: dict[str, object] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    where = path or "config"
    known = {"database", "numbers", "policy", "serve", "audit", "ari", "ami", "watch", "web"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {sorted(unknown)}; known: {sorted(known)}")
    values: dict[str, object] = {}
    database = _table(data, "database", where, ("path", "url"))
    if "path" in database and "url" in database:
        raise ConfigError(f"{where} [database]: give either path (SQLite) or url (PostgreSQL), not both")
    for key in ("path", "url"):
        if key in database:
            # url = "postgresql://user:pass@host/db" for several PBXs; path = a SQLite file for one.
            values["db"] = _expect(database, key, str, f"{where} [database]")
    numbers = _table(data, "numbers", where, ("trunk_prefix",))
    if "trunk_prefix" in numbers:
        prefix = _expect(numbers, "trunk_prefix", str, f"{where} [numbers]")
        if not str(prefix).isdigit() and prefix != "":
            raise ConfigError(f"{where} [numbers]: trunk_prefix must be digits, not {prefix!r}")
        values["trunk_prefix"] = prefix
    policy = _table(data, "policy", where, ("rpo_validity_days",))
    if "rpo_validity_days" in policy:
        days = int(_expect(policy, "rpo_validity_days", int, f"{where} [policy]"))  # type: ignore[call-overload]
        if not 1 <= days <= 15:
            # DPR 26/2022 art. 8 c.2: 15 days is the legal maximum; a shorter internal policy is allowed.
            raise ConfigError(f"{where} [policy]: rpo_validity_days must be 1..15, not {days}")
        values["rpo_validity_days"] = days
    values["serve"] = _serve(_table(data, "serve", where, _SERVE_KEYS), f"{where} [serve]")
    values["audit"] = _audit(_table(data, "audit", where, _AUDIT_KEYS), f"{where} [audit]")
    values["ari"] = _ari(_table(data, "ari", where, _ARI_KEYS), f"{where} [ari]")
    values["ami"] = _ami(_table(data, "ami", where, _AMI_KEYS), f"{where} [ami]")
    values["watch"] = _watch(_table(data, "watch", where, _WATCH_KEYS), f"{where} [watch]")
    values["web"] = _web(_table(data, "web", where, _WEB_KEYS), f"{where} [web]")
    env_db = os.environ.get(ENV_DB)
    if env_db:
        values["db"] = env_db
    if db:
        values["db"] = db
    return Config(source=path, **values)  # type: ignore[arg-type]


def _table(data: dict[str, object], name: str, where: str, known: Iterable[str]) -> dict[str, object]:
    """A section of the file; a key it does not know is an error naming it (a misspelt key silently
    ignored would leave the default in force, e.g. a longer RPO validity than the operator chose)."""
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [{name}] must be a table")
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"{where} [{name}]: unknown key{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(repr(k) for k in unknown)}; known: {', '.join(sorted(known))}")
    return table


_SERVE_KEYS: dict[str, type] = {
    "host": str,
    "port": int,
    "session_deadline": float,
    "max_connections": int,
    "allowed_clients": list,
    "event_loop": str,
    "linger": float,
    "command_timeout": float,
    "backlog": int,
}
_AUDIT_KEYS: dict[str, type] = {"anchor_file": str, "anchor_key_file": str, "anchor_log_interval": float}
_ARI_KEYS: dict[str, type] = {"url": str, "app": str, "user": str, "password": str, "password_file": str,
                              "decision_deadline": float, "reconnect_max": float}


def _serve(table: dict[str, object], where: str) -> ServeConfig:
    values = {key: _expect(table, key, kind, where) for key, kind in _SERVE_KEYS.items() if key in table}
    if "port" in values and not 1 <= values["port"] <= MAX_PORT:  # type: ignore[operator]
        raise ConfigError(f"{where}: port must be 1..{MAX_PORT}, not {values['port']}")
    if "session_deadline" in values and not values["session_deadline"] > 0:  # type: ignore[operator]
        raise ConfigError(f"{where}: session_deadline must be more than 0 seconds")
    for key in ("max_connections", "backlog"):
        if key in values and values[key] < 1:  # type: ignore[operator]
            raise ConfigError(f"{where}: {key} must be 1 or more")
    if "command_timeout" in values and not values["command_timeout"] > 0:  # type: ignore[operator]
        raise ConfigError(f"{where}: command_timeout must be more than 0 seconds (leave it out for none)")
    if "linger" in values and not values["linger"] >= 0:  # type: ignore[operator]
        raise ConfigError(f"{where}: linger must be 0 (close at once) or more seconds")
    if "allowed_clients" in values:
        values["allowed_clients"] = tuple(str(v) for v in values["allowed_clients"])  # type: ignore[attr-defined]
    if values.get("event_loop", EVENT_LOOPS[0]) not in EVENT_LOOPS:
        raise ConfigError(f"{where}: event_loop must be one of {', '.join(EVENT_LOOPS)}, not {values['event_loop']!r}")
    return ServeConfig(**values)  # type: ignore[arg-type]


def _audit(table: dict[str, object], where: str) -> AuditConfig:
    values = {key: _expect(table, key, kind, where) for key, kind in _AUDIT_KEYS.items() if key in table}
    if "anchor_key_file" in values and "anchor_file" not in values:
        raise ConfigError(f"{where}: anchor_key_file signs the lines of anchor_file; set anchor_file too")
    if values.get("anchor_log_interval", 0.0) < 0:  # type: ignore[operator]
        raise ConfigError(f"{where}: anchor_log_interval must be 0 (off) or more seconds")
    return AuditConfig(**values)  # type: ignore[arg-type]


def _ari(table: dict[str, object], where: str) -> AriConfig:
    values = {key: _expect(table, key, kind, where) for key, kind in _ARI_KEYS.items() if key in table}
    if "password" in values and "password_file" in values:
        raise ConfigError(f"{where}: set password or password_file, not both")
    for key in ("decision_deadline", "reconnect_max"):
        if key in values and not values[key] > 0:  # type: ignore[operator]
            raise ConfigError(f"{where}: {key} must be more than 0 seconds")
    if "app" in values and (not values["app"] or "," in str(values["app"])):
        raise ConfigError(f"{where}: app must be a non-empty name without commas")
    return AriConfig(**values)  # type: ignore[arg-type]


_AMI_KEYS: dict[str, type] = {"host": str, "port": int, "user": str, "secret": str, "secret_file": str,
                              "connect_timeout": float, "ping_interval": float, "ping_timeout": float}
_WATCH_KEYS: dict[str, type] = {"trunks": list, "max_age": float, "clock_skew": float}


def _ami(table: dict[str, object], where: str) -> AmiConfig:
    values = {key: _expect(table, key, kind, where) for key, kind in _AMI_KEYS.items() if key in table}
    if "secret" in values and "secret_file" in values:
        raise ConfigError(f"{where}: set secret or secret_file, not both")
    if "port" in values and not 1 <= values["port"] <= MAX_PORT:  # type: ignore[operator]
        raise ConfigError(f"{where}: port must be 1..{MAX_PORT}, not {values['port']}")
    for key in ("connect_timeout", "ping_interval", "ping_timeout"):
        if key in values and not values[key] > 0:  # type: ignore[operator]
            raise ConfigError(f"{where}: {key} must be more than 0 seconds")
    return AmiConfig(**values)  # type: ignore[arg-type]


def _watch(table: dict[str, object], where: str) -> WatchConfig:
    values = {key: _expect(table, key, kind, where) for key, kind in _WATCH_KEYS.items() if key in table}
    if "trunks" in values:
        trunks = values["trunks"]
        if not all(isinstance(t, str) and t.strip() for t in trunks):  # type: ignore[attr-defined]
            raise ConfigError(f"{where}: trunks must be channel-name patterns such as \"PJSIP/carrier-*\"")
        values["trunks"] = tuple(str(t).strip() for t in trunks)  # type: ignore[attr-defined]
    for key in ("max_age", "clock_skew"):
        if key in values and not values[key] >= 0:  # type: ignore[operator]
            raise ConfigError(f"{where}: {key} must be 0 or more seconds")
    return WatchConfig(**values)  # type: ignore[arg-type]


_WEB_KEYS: dict[str, type] = {"host": str, "port": int, "tls_cert": str, "tls_key": str, "behind_proxy": bool,
                              "allow_plain_http": bool, "session_idle": float, "session_max": float,
                              "login_attempts": int, "login_window": float, "max_upload_bytes": int,
                              "upload_dir": str}


def _web(table: dict[str, object], where: str) -> WebConfig:
    values = {key: _expect(table, key, kind, where) for key, kind in _WEB_KEYS.items() if key in table}
    if "port" in values and not 1 <= values["port"] <= MAX_PORT:  # type: ignore[operator]
        raise ConfigError(f"{where}: port must be 1..{MAX_PORT}, not {values['port']}")
    if ("tls_cert" in values) != ("tls_key" in values):
        raise ConfigError(f"{where}: tls_cert and tls_key go together (the certificate and its private key)")
    for key in ("session_idle", "session_max", "login_window"):
        if key in values and not values[key] > 0:  # type: ignore[operator]
            raise ConfigError(f"{where}: {key} must be more than 0 seconds")
    for key in ("login_attempts", "max_upload_bytes"):
        if key in values and values[key] < 1:  # type: ignore[operator]
            raise ConfigError(f"{where}: {key} must be 1 or more")
    return WebConfig(**values)  # type: ignore[arg-type]


def secure_path(path: Path) -> None:
    """Make a data file readable by its owner only: it holds phone numbers and evidence."""
    try:
        path.chmod(0o600)
    except OSError as exc:
        log.warning("cannot restrict permissions of %s: %s", path, exc.strerror)
