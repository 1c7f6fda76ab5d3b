"""The FreePBX examples in dialplan/rpoguard.conf as a test loads them (``from support.dialplan_examples import ...``).

The examples are comments in the shipped file, so that including it changes nothing on a PBX that does not
use them. A test takes the example exactly as shipped and only removes the comment marks, so what runs is
what an administrator copies into extensions_custom.conf.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

PRODUCT_DIALPLAN: Final = Path(__file__).resolve().parents[2] / "dialplan" / "rpoguard.conf"
HOOK_CONTEXT: Final = "[macro-dialout-trunk-predial-hook]"


def shipped_hook(freepbx_version: str, text: str | None = None) -> str:
    """The ``[macro-dialout-trunk-predial-hook]`` under "; Example: FreePBX <version> ...", uncommented.

    It runs from the context line to the first empty comment line. AssertionError when there is no such
    example: a test that cannot find the example must fail, not skip.
    """
    lines = (PRODUCT_DIALPLAN.read_text(encoding="utf-8") if text is None else text).splitlines()
    heading = f"; Example: FreePBX {freepbx_version} "
    starts = [i for i, line in enumerate(lines) if line.startswith(heading)]
    assert len(starts) == 1, f"{PRODUCT_DIALPLAN} has {len(starts)} sections starting {heading!r}"
    first = next((i for i in range(starts[0], len(lines)) if lines[i] == f"; {HOOK_CONTEXT}"), None)
    assert first is not None, f"no '; {HOOK_CONTEXT}' after {heading!r} in {PRODUCT_DIALPLAN}"
    block: list[str] = []
    for line in lines[first:]:
        if line.strip() == ";" or not line.startswith(";"):
            break
        # "; [ctx]" and "; exten => ..." lose "; "; ";  same => ..." keeps its one leading space.
        block.append(line[2:] if line.startswith("; ") else line[1:])
    return "\n".join(block) + "\n"
