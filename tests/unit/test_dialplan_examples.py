"""The FreePBX hooks dialplan/rpoguard.conf ships: one per FreePBX generation, each ending the way its
caller needs. FreePBX 17 (Asterisk 21+, no app_macro) runs the hook with Gosub, so it must end with
Return(); FreePBX 16 runs it with Macro(), so it must end with MacroExit(). FreePBX runs the hook for every
trunk call (112 included), so both gate only a call the route marked with a campaign or one on a trunk listed
in RPOGUARD_GATED_TRUNKS, and let every other call by. The FreePBX 17 form also runs on a real Asterisk 22 in
tests/e2e/test_gate.py (test_freepbx17_hook_*)."""

from __future__ import annotations

import re

import pytest

from support.dialplan_examples import HOOK_CONTEXT, PRODUCT_DIALPLAN, shipped_hook

GATE_CALL = "GoSub(rpoguard-check,s,1(${OUTNUM},"
# Skip the gate only when the route set no campaign AND the trunk is not listed. `&` binds looser than `=` in
# Asterisk expressions; FIELDNUM() answers 0 for a trunk not in the list or an unset list, and `\,` is its comma
# delimiter (checked on Asterisk 22 by test_freepbx17_hook_gates_unmarked_calls_on_a_listed_trunk).
SKIP_UNGATED = (
    'exten => s,1,GotoIf($["${RPOGUARD_CAMPAIGN_ID}" = "" & ${FIELDNUM(RPOGUARD_GATED_TRUNKS,\\,,${DIAL_TRUNK})} = 0]'
    "?done)"
)
VERSIONS = [("17", "Return()"), ("16", "MacroExit()")]


def statements(hook: str) -> list[str]:
    return [line.strip() for line in hook.splitlines()[1:]]


def test_freepbx17_hook_is_a_gosub_subroutine_ending_with_return() -> None:
    hook = shipped_hook("17")
    assert hook.splitlines()[0] == HOOK_CONTEXT
    body = statements(hook)
    assert body[-1] == "same => n(done),Return()", body
    # app_macro is gone from Asterisk 21: an application it provided ends every call that reaches it.
    assert "Macro" not in "".join(body), body


def test_freepbx16_hook_is_a_macro_ending_with_macroexit() -> None:
    body = statements(shipped_hook("16"))
    assert body[-1] == "same => n(done),MacroExit()", body
    assert "Return()" not in "".join(body), body


@pytest.mark.parametrize(("version", "ending"), VERSIONS, ids=[f"freepbx{v}" for v, _ in VERSIONS])
def test_hook_gates_only_marked_calls_and_listed_trunks(version: str, ending: str) -> None:
    # Gating every call would block 112 and every ordinary call as unknown_campaign; a marked call, or any
    # call on a listed (marketing) trunk, goes through the gate, and the gate is the only thing between the
    # skip and the end.
    body = statements(shipped_hook(version))
    assert len(body) == 3, body
    assert body[0] == SKIP_UNGATED, body
    assert body[1].startswith("same => n," + GATE_CALL), body
    assert body[2] == f"same => n(done),{ending}", body
    # An unmarked call on a listed trunk is checked as campaign "none": blocked as unknown_campaign.
    assert body[1].endswith(',${IF($["${RPOGUARD_CAMPAIGN_ID}" = ""]?none:${RPOGUARD_CAMPAIGN_ID})}))'), body


def test_both_hooks_gate_the_same_calls() -> None:
    # They differ only in how they end, so that moving from FreePBX 16 to 17 changes one line.
    assert statements(shipped_hook("17"))[:-1] == statements(shipped_hook("16"))[:-1]


def test_rpoguard_conf_does_not_set_the_gated_trunks() -> None:
    # The administrator sets RPOGUARD_GATED_TRUNKS in globals_custom.conf; a value in rpoguard.conf's own
    # [globals] could come last and ungate the marketing trunks.
    live = [line for line in PRODUCT_DIALPLAN.read_text(encoding="utf-8").splitlines() if not line.startswith(";")]
    assert not [line for line in live if re.match(r"\s*RPOGUARD_GATED_TRUNKS\s*=", line)], live


def test_the_extraction_takes_the_example_exactly_and_stops_at_the_blank_comment() -> None:
    text = (
        "; Example: FreePBX 17 (Asterisk 21 and later).\n"
        ";\n"
        "; [macro-dialout-trunk-predial-hook]\n"
        "; exten => s,1,NoOp(x)\n"
        ";  same => n,Return()\n"
        ";\n"
        "; [not-this]\n"
    )
    assert shipped_hook("17", text) == "[macro-dialout-trunk-predial-hook]\nexten => s,1,NoOp(x)\n same => n,Return()\n"
