"""Coverage-guided fuzzing of the number normaliser with atheris (libFuzzer for Python).

Standalone:   .venv/bin/python tests/fuzz/atheris_numbers.py -runs=200000 [CORPUS_DIR]
From pytest:  tests/fuzz/test_fuzz_numbers.py runs it for a bounded number of iterations with a fixed seed,
              and skips when atheris is not installed (it is not a declared test dependency).

Each input is decoded three ways (UTF-8 with replacement, Latin-1, UTF-8 with surrogate escapes, the last
one giving lone surrogates) and handed to every public entry point. The contract checked is the one the
module documents: for a str, NumberError with a reason code is the only exception; normalize_for_import
and normalize_fast agree with normalize; is_withheld answers a bool. Anything else propagates, which makes
libFuzzer report a crash with the input that caused it.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["rpoguard"]):
    from rpoguard import numbers
    from rpoguard.constants import FOREIGN_NUMBER, INVALID_NUMBER, LINE_FIXED, LINE_MOBILE, UNSUPPORTED_NUMBER_TYPE

NUMBER_REASONS = frozenset({INVALID_NUMBER, FOREIGN_NUMBER, UNSUPPORTED_NUMBER_TYPE})


def _outcome(call: object, raw: str) -> tuple[str, ...]:
    try:
        number = call(raw)  # type: ignore[operator]
    except numbers.NumberError as exc:
        if exc.reason not in NUMBER_REASONS:
            raise AssertionError(f"reason {exc.reason!r} for {raw!r}") from exc
        return ("error", exc.reason, str(exc), str(exc.e164))
    if isinstance(number, str):
        return ("ok", number)
    if not number.e164.startswith("+39") or number.line_type not in (LINE_FIXED, LINE_MOBILE):
        raise AssertionError(f"{raw!r} gave {number!r}")
    return ("ok", number.e164, number.line_type)


def check_one(raw: str) -> None:
    expected = _outcome(numbers.normalize, raw)
    imported = _outcome(numbers.normalize_for_import, raw)
    if imported != expected:
        raise AssertionError(f"normalize_for_import({raw!r}) = {imported!r} but normalize gives {expected!r}")
    fast = numbers.normalize_fast(raw)
    if fast is not None and ("ok", fast.e164, fast.line_type) != expected:
        raise AssertionError(f"normalize_fast({raw!r}) = {fast!r} but normalize gives {expected!r}")
    caller = _outcome(numbers.normalize_caller_id, raw)
    if caller[0] == "error" and caller[1] != INVALID_NUMBER:
        raise AssertionError(f"normalize_caller_id({raw!r}) refused with {caller[1]!r}")
    if not isinstance(numbers.is_withheld(raw), bool):
        raise AssertionError(f"is_withheld({raw!r}) is not a bool")


def TestOneInput(data: bytes) -> None:
    for text in (
        data.decode("utf-8", "replace"),
        data.decode("latin-1"),
        data.decode("utf-8", "surrogateescape"),
    ):
        check_one(text)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
