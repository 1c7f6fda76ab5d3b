"""The FreePBX hooks dialplan/rpoguard.conf ships: one per FreePBX generation, each ending the way its
caller needs. FreePBX 17 (Asterisk 21+, no app_macro) runs the hook with Gosub, so it must end with
Return(); FreePBX 16 runs it with Macro(), so it must end with MacroExit(). The FreePBX 17 form also runs
on a real Asterisk 22 in tests/e2e/test_gate.py (test_freepbx17_hook_*)."""

from __future__ import annotations

from dialplan_examples import HOOK_CONTEXT, shipped_hook

GATE_CALL = "GoSub(rpoguard-check,s,1(${OUTNUM},"


def statements(hook: str) -> list[str]:
    return [line.strip() for line in hook.splitlines()[1:]]


def test_freepbx17_hook_is_a_gosub_subroutine_ending_with_return() -> None:
    hook = shipped_hook("17")
    assert hook.splitlines()[0] == HOOK_CONTEXT
    body = statements(hook)
    assert body[0].startswith("exten => s,1," + GATE_CALL), body
    assert body[-1] == "same => n,Return()", body
    # app_macro is gone from Asterisk 21: an application it provided ends every call that reaches it.
    assert "Macro" not in "".join(body[1:]), body


def test_freepbx16_hook_is_a_macro_ending_with_macroexit() -> None:
    body = statements(shipped_hook("16"))
    assert body[0].startswith("exten => s,1," + GATE_CALL), body
    assert body[-1] == "same => n,MacroExit()", body
    assert "Return()" not in "".join(body), body


def test_both_hooks_gate_the_same_number_and_campaign() -> None:
    # They differ only in how they end, so that moving from FreePBX 16 to 17 changes one line.
    assert statements(shipped_hook("17"))[:-1] == statements(shipped_hook("16"))[:-1]


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
