"""Cost of number normalisation on an import-like list: normalize, normalize_fast and normalize_for_import.

    python bench/bench_numbers.py [--count N] [--repeat R] [--seed S]

The inputs look like an operator's call list: mostly valid Italian mobile and fixed numbers in E.164 or
national form, some with 0039, 39 or separators, and a few percent of rows that are dirty or not
numbers rpoguard can call (30x, toll-free, foreign, Vatican, AGCOM, text). Each function runs over the
whole list R times and the best run is reported, so a busy machine inflates no figure. The script also
checks that normalize_for_import gave normalize's answer on every row, and says so.

A second list, a fifth as long, holds only strings that start with 39 and no '+' or 00, the ones read
national first: 39 + a national number (read with country code 39), national 39x mobiles, and 390
mobiles whose digits after 39 also spell a fixed number. Its figures are printed apart, so that the cost
of that path shows rather than drowning in the rest.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from common import AREA_CODES, MOBILE_PREFIXES

from rpoguard.numbers import Number, NumberError, normalize, normalize_fast, normalize_for_import

DIGITS = "0123456789"
# Rows no operator means to call, and rows that are not numbers at all; each is one error path or another.
DIRTY = (
    "3012345678", "300 123 4567", "+39 305 1234567",  # 30x: no such mobile range
    "800 123456", "+39 899 123456", "5512345678",  # toll-free, premium, VoIP
    "+44 20 7946 0958", "0041 44 668 1800",  # foreign
    "+39 06 698 12345",  # Vatican City
    "39 0844 123456",  # AGCOM: a caller ID, never a number to dial
    "12345", "", "n/a", "tel. 06 1234 5678", "\uff10\uff16\uff11\uff12\uff13\uff14\uff15\uff16",
)  # fmt: skip


def realistic_nsn(rng: random.Random) -> str:
    """A valid-looking Italian mobile or fixed number, national significant digits only."""
    if rng.random() < 0.6:
        return rng.choice(MOBILE_PREFIXES) + "".join(rng.choices(DIGITS, k=rng.choice((6, 7, 7, 7, 7))))
    code = rng.choice(AREA_CODES)
    return code + "".join(rng.choices(DIGITS, k=rng.choice((9, 10, 10, 10)) - len(code)))


def realistic_inputs(count: int, seed: int, dirty_share: float = 0.04) -> list[str]:
    rng = random.Random(seed)
    rows: list[str] = []
    for _ in range(count):
        if rng.random() < dirty_share:
            rows.append(rng.choice(DIRTY))
            continue
        nsn = realistic_nsn(rng)
        form = rng.random()
        if form < 0.45:
            rows.append("+39" + nsn)
        elif form < 0.80:
            rows.append(nsn)
        elif form < 0.85:
            rows.append("0039" + nsn)
        elif form < 0.90:
            rows.append("39" + nsn)
        elif form < 0.95:
            rows.append("+39 " + nsn[:3] + " " + nsn[3:6] + " " + nsn[6:])
        else:
            rows.append(nsn[:3] + "-" + nsn[3:])
    return rows


def thirty_nine_inputs(count: int, seed: int) -> list[str]:
    """Strings starting with 39 (no '+' or 00), read national first; see the module docstring."""
    rng = random.Random(seed)
    rows: list[str] = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.4:
            # 39 + a national number: read with country code 39 unless it spells a 39x mobile itself.
            rows.append("39" + realistic_nsn(rng))
        elif kind < 0.7:
            rows.append(f"39{rng.randrange(10)}" + "".join(rng.choices(DIGITS, k=7)))  # national 39x, 10 digits
        elif kind < 0.8:
            rows.append(f"39{rng.randrange(10)}" + "".join(rng.choices(DIGITS, k=6)))  # national 39x, 9 digits
        else:
            # A 390 mobile whose digits after 39 are also a fixed number (0 + area code + subscriber).
            code = rng.choice(AREA_CODES)
            rows.append("39" + code + "".join(rng.choices(DIGITS, k=8 - len(code))))
    return rows


def _answer(function: Callable[[str], Number | None], raw: str) -> object:
    try:
        return function(raw)
    except NumberError as exc:
        return (exc.reason, exc.e164, str(exc))


def best_seconds(function: Callable[[str], Number | None], rows: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for raw in rows:
            # Not contextlib.suppress: entering a context manager on every row would be timed with it.
            try:  # noqa: SIM105
                function(raw)
            except NumberError:
                pass
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000, help="rows to normalise (default 200000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per function; the best counts (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated rows (default 1)")
    args = parser.parse_args()

    measure("mixed rows", realistic_inputs(args.count, args.seed), args)
    print()
    measure("39… rows (no '+' or 00)", thirty_nine_inputs(max(args.count // 5, 1), args.seed), args)


def measure(title: str, rows: list[str], args: argparse.Namespace) -> None:
    taken = sum(normalize_fast(raw) is not None for raw in rows)
    valid = 0
    disagreements = 0
    for raw in rows:
        expected = _answer(normalize, raw)
        valid += isinstance(expected, Number)
        disagreements += _answer(normalize_for_import, raw) != expected
        fast = normalize_fast(raw)
        disagreements += fast is not None and fast != expected

    functions: dict[str, Callable[[str], Number | None]] = {
        "normalize": normalize,
        "normalize_fast": normalize_fast,
        "normalize_for_import": normalize_for_import,
    }
    seconds = {name: best_seconds(function, rows, args.repeat) for name, function in functions.items()}

    print(f"{title}: {len(rows):,} rows (seed {args.seed}), {valid / len(rows):.1%} valid Italian fixed/mobile")
    print(f"fast path answered {taken / len(rows):.2%} of rows; disagreements with normalize: {disagreements}")
    print()
    print(f"{'function':<22}{'µs/number':>11}{'numbers/s':>13}{'vs normalize':>14}")
    for name, elapsed in seconds.items():
        per_number = elapsed / len(rows)
        print(f"{name:<22}{per_number * 1e6:>11.2f}{1 / per_number:>13,.0f}{seconds['normalize'] / elapsed:>13.1f}x")
    print("(normalize_fast answers only part of the rows: it returns None for the others)")


if __name__ == "__main__":
    main()
