"""What Asterisk 22's res_agi sends before the first command (``setup_env``), for the tests and the benchmarks.

One recording, byte for byte; the AGI fakes (``agi_fakes.make_env``) and the load generators
(bench/loadgen.py) build every other environment from its lines, so the two cannot drift apart.
Standard library only: the benchmarks import this file as ``tests.support.agi_env``.
"""

from __future__ import annotations

from collections.abc import Iterable

# What Asterisk 22 sends for AGI(agi://127.0.0.1:4573/check?campaign=C1,0612345678), byte for byte
# (setup_env order; agi_accountcode is empty; a blank line ends it).
RECORDED_CHECK_ENV = (
    b"agi_network: yes\n"
    b"agi_network_script: check?campaign=C1\n"
    b"agi_request: agi://127.0.0.1:4573/check?campaign=C1\n"
    b"agi_channel: Local/0612345678@outbound-acme-00000001;2\n"
    b"agi_language: it\n"
    b"agi_type: Local\n"
    b"agi_uniqueid: 1732761234.17\n"
    b"agi_version: 22.1.0\n"
    b"agi_callerid: 0694801234\n"
    b"agi_calleridname: ACME Srl\n"
    b"agi_callingpres: 0\n"
    b"agi_callingani2: 0\n"
    b"agi_callington: 0\n"
    b"agi_callingtns: 0\n"
    b"agi_dnid: unknown\n"
    b"agi_rdnis: unknown\n"
    b"agi_context: rpoguard-check\n"
    b"agi_extension: s\n"
    b"agi_priority: 4\n"
    b"agi_enhanced: 0.0\n"
    b"agi_accountcode: \n"
    b"agi_threadid: 140170378913344\n"
    b"agi_arg_1: 0612345678\n"
    b"\n"
)

_NETWORK_KEYS = frozenset({"agi_network", "agi_network_script", "agi_request"})


def parse_env(block: bytes) -> list[tuple[str, str]]:
    """The ``key: value`` lines of an environment block, in order, up to the blank line."""
    lines: list[tuple[str, str]] = []
    for raw in block.decode().split("\n"):
        if not raw:
            break
        key, _, value = raw.partition(": ")
        lines.append((key, value))
    return lines


# The channel part of setup_env (every line but the request and the arguments), in its order.
CHANNEL_ENV: tuple[tuple[str, str], ...] = tuple(
    (key, value)
    for key, value in parse_env(RECORDED_CHECK_ENV)
    if key not in _NETWORK_KEYS and not key.startswith("agi_arg_")
)


def channel_env(**values: str) -> list[tuple[str, str]]:
    """The channel lines with some values replaced (``channel_env(agi_priority="7")``)."""
    unknown = values.keys() - {key for key, _ in CHANNEL_ENV}
    if unknown:
        raise KeyError(f"not a channel line of setup_env: {sorted(unknown)}")
    return [(key, values.get(key, value)) for key, value in CHANNEL_ENV]


def network_env(script: str, host: str = "127.0.0.1", port: int = 4573) -> list[tuple[str, str]]:
    """The first lines of a FastAGI environment: ``agi://host:port/script``."""
    return [("agi_network", "yes"), ("agi_network_script", script), ("agi_request", f"agi://{host}:{port}/{script}")]


def render_env(lines: Iterable[tuple[str, str | bytes]]) -> bytes:
    """An environment block as setup_env writes it: one ``key: value`` line each, then a blank line."""
    out = b"".join(key.encode() + b": " + (value if isinstance(value, bytes) else value.encode()) + b"\n"
                   for key, value in lines)
    return out + b"\n"
