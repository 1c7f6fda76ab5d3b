"""The number normaliser against arbitrary text: one kind of exception, bounded time, one answer.

rpoguard.numbers documents that, for a str, NumberError (with a reason code) is the only exception
``normalize``, ``normalize_for_import`` and ``normalize_caller_id`` raise, that ``normalize_fast`` never
raises and agrees with ``normalize`` whenever it answers, and that ``normalize_for_import`` is
``normalize`` with a fast path. Everything here holds them to it for text Hypothesis makes up: random
Unicode (lone surrogates included), bytes decoded the ways a file or a socket can be decoded, NUL, huge
lengths, and number-like strings built to reach libphonenumber and the fast-path regexes.

Time: each call on a long adversarial string must return within 50 ms of CPU time. That is a guard
against catastrophic regex backtracking (seconds, or never), not a benchmark; thread CPU time is used so
that a loaded CI machine does not make it flaky.
"""

from __future__ import annotations

import contextlib
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from rpoguard import numbers
from rpoguard.constants import (
    FOREIGN_NUMBER,
    INVALID_NUMBER,
    LINE_FIXED,
    LINE_MOBILE,
    REASON_CODES,
    UNSUPPORTED_NUMBER_TYPE,
)
from rpoguard.numbers import NumberError
from support.fuzz import fuzz_settings

HARNESS = Path(__file__).with_name("atheris_numbers.py")
NUMBER_REASONS = {INVALID_NUMBER, FOREIGN_NUMBER, UNSUPPORTED_NUMBER_TYPE}
CPU_BUDGET = 0.050  # seconds of thread CPU time per call

# -- strategies ------------------------------------------------------------------------------------------

# Every code point, lone surrogates included (Hypothesis leaves them out of st.text() by default).
any_char = st.one_of(st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF))
any_text = st.text(any_char, max_size=200)
decoded_bytes = st.binary(max_size=200).flatmap(
    lambda data: st.sampled_from(
        [
            data.decode("utf-8", "replace"),
            data.decode("latin-1"),
            data.decode("utf-8", "surrogateescape"),
            data.decode("utf-16-le", "replace"),
        ]
    )
)
# Pieces of real and almost-real numbers, so that examples get past the separator and junk checks into
# libphonenumber, the AGCOM ranges and the fast-path regexes rather than dying at the first letter.
number_piece = st.sampled_from(
    [
        "+39",
        "0039",
        "39",
        "+",
        "00",
        "0",
        "3",
        "06",
        "02",
        "0844",
        "0843",
        "800",
        "899",
        "06698",
        "+33",
        "+1",
        "+378",
        "+379",
        "1",
        "2",
        "5",
        "7",
        "8",
        "9",
        " ",
        "-",
        ".",
        "(",
        ")",
        "/",
        "\u00a0",
        "\u2013",
        "\u2212",
        "\u3000",
        "\t",
        "\n",
        "\x00",
        "\u0663",
        "\uff13",
        "\ud800",
        "\udc80",
        "#",
        "*",
        "sip:",
        "tel:",
        "@",
        ";",
        "<",
        ">",
        '"',
        "'",
        "unknown",
        "anonymous",
        "Anonimo",
        "${EXTEN}",
        "=",
    ]
)
numberish = st.lists(st.one_of(number_piece, st.text("0123456789", min_size=1, max_size=12)), max_size=12).map("".join)
hostile_text = st.one_of(any_text, decoded_bytes, numberish)
huge_text = st.builds(
    lambda piece, count: piece * count,
    st.sampled_from(["3", "+3", " -", "\x00", "\u00a0", "0", "(", "٣", "a", "+39 "]),
    st.integers(min_value=100, max_value=20_000),
)


# -- the contract ------------------------------------------------------------------------------------------


def outcome(call: Callable[[str], Any], raw: Any) -> tuple[Any, ...]:
    """("ok", result...) or ("error", reason, message, e164); any other exception propagates."""
    try:
        result = call(raw)
    except NumberError as exc:
        assert exc.reason in REASON_CODES, (raw, exc.reason)
        assert exc.reason in NUMBER_REASONS, (raw, exc.reason)
        assert exc.e164 is None or (isinstance(exc.e164, str) and exc.e164.startswith("+")), (raw, exc.e164)
        assert str(exc), raw
        return ("error", exc.reason, str(exc), exc.e164)
    if isinstance(result, str):
        return ("ok", result)
    return ("ok", result.e164, result.line_type)


def check_contract(raw: str) -> None:
    normalized = outcome(numbers.normalize, raw)
    if normalized[0] == "ok":
        _, e164, line_type = normalized
        assert e164.startswith("+39") and e164[1:].isascii() and e164[1:].isdigit(), (raw, e164)
        assert line_type in (LINE_FIXED, LINE_MOBILE), (raw, line_type)
        # Idempotent: the E.164 form normalises to itself.
        assert outcome(numbers.normalize, e164) == normalized, raw

    # normalize_for_import is normalize, fast or not: same number, or the very same refusal.
    assert outcome(numbers.normalize_for_import, raw) == normalized, raw
    fast = numbers.normalize_fast(raw)
    assert fast is None or ("ok", fast.e164, fast.line_type) == normalized, raw

    caller = outcome(numbers.normalize_caller_id, raw)
    if caller[0] == "ok":
        assert caller[1].startswith("+") and caller[1][1:].isascii() and caller[1][1:].isdigit(), (raw, caller)
    else:
        assert caller[1] == INVALID_NUMBER, (raw, caller)
    assert isinstance(numbers.is_withheld(raw), bool)


@fuzz_settings(max_examples=600)
@given(hostile_text)
@example("")
@example("\x00")
@example("+39 06 1234 5678\x00")
@example("\ud800")
@example("0612345678\udc80")
@example("٠٦١٢٣٤٥٦٧٨")
@example("０６１２３４５６７８")
@example("+39 \u2212 06\u00a012345678")
@example("=1+1")
@example("${EXTEN}")
# 39… read both ways (national 390 mobile, and +39 with Genoa 010 or Milan 02): national first.
@example("3901000070")
@example("39 02 123456")
@example("39 843 12345")
@example('"; EXEC System(reboot)')
def test_every_function_answers_a_number_or_a_number_error(raw: str) -> None:
    check_contract(raw)


@fuzz_settings(max_examples=40)
@given(huge_text)
def test_huge_inputs_are_refused_as_invalid(raw: str) -> None:
    check_contract(raw)
    if len(raw) > 128:
        # Far too long to be a telephone number: refused by the length check before any regex runs.
        for call in (numbers.normalize, numbers.normalize_for_import, numbers.normalize_caller_id):
            assert outcome(call, raw)[:2] == ("error", INVALID_NUMBER)
        assert numbers.normalize_fast(raw) is None


@fuzz_settings(max_examples=200)
@given(raw=hostile_text, prefix=st.one_of(st.text("0123456789", max_size=4), any_text))
def test_trunk_prefix_never_changes_the_kind_of_answer(raw: str, prefix: str) -> None:
    result = outcome(lambda text: numbers.normalize(text, trunk_prefix=prefix), raw)
    if result[0] == "ok":
        assert result[1].startswith("+39") and result[2] in (LINE_FIXED, LINE_MOBILE)


@pytest.mark.parametrize("raw", [b"0612345678", 612345678, None, ["0612345678"], 6.1e9, object()])
def test_what_is_not_text_is_refused_with_a_reason(raw: object) -> None:
    for call in (numbers.normalize, numbers.normalize_for_import, numbers.normalize_caller_id):
        assert outcome(call, raw)[:2] == ("error", INVALID_NUMBER)
    assert numbers.normalize_fast(raw) is None  # type: ignore[arg-type]


def test_is_withheld_answers_for_none_and_markers() -> None:
    assert numbers.is_withheld(None) is True
    for raw in ("", "  ", "<sip:anonymous@anonymous.invalid>", "<unknown>", "SCONOSCIUTO", '"Privato"'):
        assert numbers.is_withheld(raw) is True, raw
    for raw in ("0612345678", "=1+1", "\x00", "unknown\x00", "sip:" + "a" * 100_000):
        assert numbers.is_withheld(raw) is False, raw


@fuzz_settings(max_examples=100)
@given(hostile_text)
def test_number_error_survives_pickling(raw: str) -> None:
    # Scrub workers send errors across processes: reason, message and e164 must all come back.
    try:
        numbers.normalize(raw)
    except NumberError as exc:
        copy = pickle.loads(pickle.dumps(exc))
        assert (type(copy), copy.reason, str(copy), copy.e164) == (NumberError, exc.reason, str(exc), exc.e164)


# -- bounded time ---------------------------------------------------------------------------------------------

ADVERSARIAL = [
    "+" + "3" * 10_000,
    "3" * 10_000,
    " -" * 5_000,
    "+39" + " " * 10_000 + "3",
    "0" * 127,
    "3" * 128,
    "+" * 128,
    "(" * 64 + ")" * 64,
    " 3" * 64,
    "3" * 32 + " " * 96,
    "+39" + "3" * 29,
    "0039" + "-3" * 62,
    "39" + "3" * 30,
    "0844" + "4" * 28,
    "+390844" + "4" * 25,
    "\u00a0" * 10_000,
    "\u0663" * 128,
    "\uff13" * 128,
    "\x00" * 10_000,
    "a" * 1_000_000,
    "3" * 1_000_000,
    "+39 06 " * 100_000,
    "sip:" + "a" * 100_000,
    '"' * 10_000 + "unknown",
    "<" * 5_000 + "unknown" + ">" * 5_000,
    "sip:" + "@" * 100_000,
    ";" * 100_000,
    "\ud800" * 10_000,
]
FUNCTIONS: dict[str, Callable[[str], Any]] = {
    "normalize": numbers.normalize,
    "normalize_trunk": lambda raw: numbers.normalize(raw, trunk_prefix="0"),
    "normalize_for_import": numbers.normalize_for_import,
    "normalize_fast": numbers.normalize_fast,
    "normalize_caller_id": numbers.normalize_caller_id,
    "is_withheld": numbers.is_withheld,
}


def _warm_up() -> None:
    # Lazy loading of phonenumbers' region metadata is not what this measures.
    for raw in ("+39 06 1234 5678", "3331234567", "+33 1 23 45 67 89", "+1 212 555 0100", "0844 123456", "800123456"):
        for call in FUNCTIONS.values():
            with contextlib.suppress(NumberError):
                call(raw)


@pytest.mark.parametrize("raw", ADVERSARIAL, ids=[f"{a[:12]!r}x{len(a)}" for a in ADVERSARIAL])
def test_adversarial_strings_return_quickly(raw: str) -> None:
    _warm_up()
    for name, call in FUNCTIONS.items():
        started = time.thread_time()
        try:
            call(raw)
        except NumberError as exc:
            assert exc.reason == INVALID_NUMBER, (name, exc)
        spent = time.thread_time() - started
        assert spent < CPU_BUDGET, f"{name} took {spent * 1000:.1f} ms of CPU on {raw[:20]!r}... ({len(raw)} chars)"
    check_contract(raw)


@fuzz_settings(max_examples=150)
@given(st.lists(st.one_of(number_piece, st.text("0123456789 ", max_size=40)), max_size=40).map("".join))
def test_number_like_strings_of_any_length_return_quickly(raw: str) -> None:
    for name, call in FUNCTIONS.items():
        started = time.thread_time()
        with contextlib.suppress(NumberError):
            call(raw)
        spent = time.thread_time() - started
        assert spent < CPU_BUDGET, f"{name} took {spent * 1000:.1f} ms of CPU on {raw!r}"


# -- atheris, when it is installed ------------------------------------------------------------------------

ATHERIS_RUNS = 5_000
SEEDS = [
    "+39 06 1234 5678",
    "0612345678",
    "393331234567",
    "3901000070",
    "0039 347 765 4321",
    "0844 123456",
    "+33 1 23 45 67 89",
    "sip:anonymous@anonymous.invalid",
    "800 123 456",
]


def test_atheris_harness_runs_clean(tmp_path: Path) -> None:
    pytest.importorskip(
        "atheris",
        reason="atheris is not installed (optional: pip install atheris); the Hypothesis tests above still run",
        exc_type=ImportError,
    )
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(SEEDS):
        (corpus / f"seed{i}").write_text(seed, encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            str(HARNESS),
            f"-runs={ATHERIS_RUNS}",
            "-seed=1",
            "-timeout=10",
            "-max_len=256",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        errors="replace",
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-")))
    assert done.returncode == 0 and not crashes, (crashes, done.stderr[-4000:])
    assert f"Done {ATHERIS_RUNS} runs" in done.stderr
