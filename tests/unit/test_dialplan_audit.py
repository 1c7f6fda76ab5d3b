"""`dialplan audit`: reading extensions.conf as pbx_config does, and finding the priorities that dial a trunk
without asking the gate first (src/rpoguard/bypass/dialplan_audit.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rpoguard.bypass.dialplan_audit import (
    HOOK_ABSENT,
    HOOK_GATES,
    HOOK_NOT_FREEPBX,
    HOOK_NOT_GATING,
    NOT_TRUNK,
    TRUNK,
    UNKNOWN,
    AuditReport,
    DialplanError,
    audit,
    classify_target,
    from_ami_events,
    read_conf,
    split_args,
)
from rpoguard.bypass.match import TrunkPatterns
from rpoguard.constants import DIALPLAN_NOT_VISIBLE, DIALPLAN_TARGET_UNKNOWN, DIALPLAN_TEXT, DIALPLAN_UNGATED
from support.dialplan_examples import PRODUCT_DIALPLAN, shipped_hook

REPO = Path(__file__).resolve().parents[2]
FREEPBX17_ROUTES = REPO / "tests" / "e2e" / "dialplan_freepbx17.conf"
CARRIER = TrunkPatterns(["PJSIP/carrier-*"])

Audit = Callable[..., AuditReport]


@pytest.fixture
def audit_text(write_file: Callable[..., Path]) -> Audit:
    """Audit an extensions.conf made of `text` (beside the shipped rpoguard.conf, as an administrator has it)."""

    def run(text: str, trunks: TrunkPatterns = CARRIER) -> AuditReport:
        write_file("rpoguard.conf", PRODUCT_DIALPLAN.read_text(encoding="utf-8"))
        return audit(read_conf(write_file("extensions.conf", "#include rpoguard.conf\n" + text)), trunks)

    return run


def findings(report: AuditReport) -> list[tuple[str, str, int, str]]:
    return [(f.context, f.extension, f.priority, f.why) for f in report.findings]


def test_a_route_that_asks_the_gate_before_it_dials_is_clean(audit_text: Audit) -> None:
    report = audit_text("""
[outbound-acme]
exten => _[+0-9].,1,GoSub(rpoguard-check,s,1(${EXTEN},autunno26))
 same => n,Dial(PJSIP/${RPOGUARD_NUMBER}@carrier,30)
 same => n,Hangup()
""")
    assert report.findings == []
    assert (report.trunk_dials, report.gated) == (1, 1)
    # rpoguard.conf's own contexts, and this one.
    assert report.contexts == 4 and report.freepbx_hook == HOOK_NOT_FREEPBX


def test_a_route_that_dials_without_asking_is_a_finding_with_its_place(audit_text: Audit, tmp_path: Path) -> None:
    report = audit_text("""[outbound-acme]
exten => _[+0-9].,1,NoOp(calling)
 same => n(out),Dial(PJSIP/${EXTEN}@carrier,30)
""")
    [finding] = report.findings
    assert (finding.context, finding.extension, finding.priority, finding.label) == ("outbound-acme", "_[+0-9].", 2,
                                                                                      "out")
    assert finding.line == "Dial(PJSIP/${EXTEN}@carrier,30)" and finding.why == DIALPLAN_UNGATED
    assert finding.where == f"{tmp_path / 'extensions.conf'}:4"
    assert finding.as_dict()["text"] == DIALPLAN_TEXT[DIALPLAN_UNGATED]


def test_the_gate_after_the_dial_does_not_count(audit_text: Audit) -> None:
    report = audit_text("""[outbound-acme]
exten => _X.,1,Dial(PJSIP/${EXTEN}@carrier)
 same => n,GoSub(rpoguard-check,s,1(${EXTEN},autunno26))
 same => n,Dial(PJSIP/${EXTEN}@carrier)
""")
    assert findings(report) == [("outbound-acme", "_X.", 1, DIALPLAN_UNGATED)]
    assert (report.trunk_dials, report.gated) == (2, 1)


def test_the_gate_of_another_extension_does_not_count(audit_text: Audit) -> None:
    report = audit_text("""[outbound-acme]
exten => s,1,GoSub(rpoguard-check,s,1(${EXTEN},autunno26))
exten => _X.,1,Dial(PJSIP/${EXTEN}@carrier)
""")
    assert findings(report) == [("outbound-acme", "_X.", 1, DIALPLAN_UNGATED)]


def test_a_subroutine_that_runs_the_gate_gates_the_route(audit_text: Audit) -> None:
    report = audit_text("""[sub-check]
exten => s,1,NoOp(campaign ${ARG2})
 same => n,GoSub(rpoguard-check-ari,s,1(${ARG1},${ARG2}))
 same => n,Return()

[sub-log]
exten => s,1,Verbose(1,dialling ${ARG1})
 same => n,Return()
 same => n,GoSub(rpoguard-check,s,1(${ARG1},x))

[macro-gate]
exten => s,1,Gosub(sub-check,s,1(${ARG1},${ARG2}))
 same => n,MacroExit()

[route-sub]
exten => _X.,1,gosub(sub-check,s,1(${EXTEN},c))
 same => n,Dial(PJSIP/${EXTEN}@carrier)

[route-macro]
exten => _X.,1,Macro(gate,${EXTEN},c)
 same => n,Dial(PJSIP/${EXTEN}@carrier)

[route-log-only]
exten => _X.,1,GoSub(sub-log,s,1(${EXTEN}))
 same => n,Dial(PJSIP/${EXTEN}@carrier)

[route-missing]
exten => _X.,1,GoSub(sub-nowhere,s,1(${EXTEN}))
 same => n,Dial(PJSIP/${EXTEN}@carrier)

[route-variable-sub]
exten => _X.,1,GoSub(${SUB},s,1(${EXTEN}))
 same => n,Dial(PJSIP/${EXTEN}@carrier)
""")
    # sub-log returns before its gate; a subroutine that is not there, or is chosen at run time, gates nothing.
    assert findings(report) == [("route-log-only", "_X.", 2, DIALPLAN_UNGATED),
                                ("route-missing", "_X.", 2, DIALPLAN_UNGATED),
                                ("route-variable-sub", "_X.", 2, DIALPLAN_UNGATED)]
    assert report.gated == 2


def test_conditional_gates_count_only_when_every_way_gates(audit_text: Audit) -> None:
    report = audit_text("""[sub-check]
exten => s,1,GoSub(rpoguard-check,s,1(${ARG1},${ARG2}))
 same => n,Return()

[route-gosubif-one-way]
exten => _X.,1,GosubIf($[${LEN(${EXTEN})} > 5]?rpoguard-check,s,1(${EXTEN},c))
 same => n,Dial(PJSIP/${EXTEN}@carrier)

[route-gosubif-both-ways]
exten => _X.,1,GosubIf($["${C}" = ""]?rpoguard-check,s,1(${EXTEN},none):sub-check,s,1(${EXTEN},${C}))
 same => n,Dial(PJSIP/${EXTEN}@carrier)

[route-execif]
exten => _X.,1,ExecIf($["${C}" != ""]?GoSub(rpoguard-check,s,1(${EXTEN},${C})))
 same => n,Dial(PJSIP/${EXTEN}@carrier)

[route-exec]
exten => _X.,1,Exec(GoSub(rpoguard-check,s,1(${EXTEN},c)))
 same => n,ExecIf($[1]?Dial(PJSIP/${EXTEN}@carrier))
""")
    assert findings(report) == [("route-gosubif-one-way", "_X.", 2, DIALPLAN_UNGATED),
                                ("route-execif", "_X.", 2, DIALPLAN_UNGATED)]
    assert (report.trunk_dials, report.gated) == (4, 2)


def test_a_jump_past_the_gate_is_a_finding_naming_the_jump(audit_text: Audit) -> None:
    report = audit_text("""[route-skip]
exten => _X.,1,GotoIf($["${VIP}" = "1"]?out)
 same => n,GoSub(rpoguard-check,s,1(${EXTEN},c))
 same => n(out),Dial(PJSIP/${EXTEN}@carrier)

[route-entered-late]
exten => _X.,1,GoSub(rpoguard-check,s,1(${EXTEN},c))
 same => n(dial),Dial(PJSIP/${EXTEN}@carrier)

[shortcut]
exten => _X.,1,Goto(route-entered-late,${EXTEN},dial)
""")
    assert [(f.context, f.priority, f.via) for f in report.findings] == [
        ("route-skip", 3, 'route-skip,_X.,1: GotoIf($["${VIP}" = "1"]?out)'),
        ("route-entered-late", 2, "shortcut,_X.,1: Goto(route-entered-late,${EXTEN},dial)")]


def test_jumps_that_stay_on_the_gated_side_are_clean(audit_text: Audit) -> None:
    report = audit_text("""[route]
exten => _X.,1,GotoIf($[${LEN(${EXTEN})} < 6]?short)
 same => n,Set(N=${EXTEN})
 same => n(short),NoOp()
 same => n(again),GoSub(rpoguard-check,s,1(${EXTEN},c))
 same => n,Dial(PJSIP/${EXTEN}@carrier,30)
 same => n,GotoIf($["${DIALSTATUS}" = "BUSY"]?${EXTEN},again)
 same => n,Hangup()
 same => n(spare),Dial(PJSIP/${EXTEN}@carrier)
exten => _0X.,1,Goto(route,${EXTEN:1},again)
""")
    # `spare` is reached by no jump written out: judged by the priorities before it, which run the gate.
    assert report.findings == [] and (report.trunk_dials, report.gated) == (2, 2)


def test_a_target_built_at_run_time_is_reported_as_such(audit_text: Audit) -> None:
    report = audit_text("""[route]
exten => _X.,1,Dial(${TRUNK}/${EXTEN})
 same => n,Dial(PJSIP/${ENDPOINT})
 same => n,Dial(SIP/${PEER}/${EXTEN})
 same => n,Dial(PJSIP/phone100&PJSIP/${EXTEN}@carrier)
 same => n,Dial(PJSIP/phone100,20)
 same => n,Dial(Local/${EXTEN}@route)
""")
    # SIP/... cannot be a PJSIP/carrier-* channel whatever the peer; phone100 is not the carrier.
    assert findings(report) == [("route", "_X.", 1, DIALPLAN_TARGET_UNKNOWN),
                                ("route", "_X.", 2, DIALPLAN_TARGET_UNKNOWN),
                                ("route", "_X.", 4, DIALPLAN_UNGATED)]
    assert report.trunk_dials == 3


@pytest.mark.parametrize(("target", "patterns", "kind"), [
    ("PJSIP/carrier", ["PJSIP/carrier-*"], TRUNK),
    ("PJSIP/${N}@carrier", ["PJSIP/carrier-*"], TRUNK),
    ("PJSIP/carrier/sip:${N}@10.0.0.1:5060", ["PJSIP/carrier-*"], TRUNK),
    ("PJSIP/${N}@other", ["PJSIP/carrier-*"], NOT_TRUNK),
    ("PJSIP/${N}@${EP}", ["PJSIP/carrier-*"], UNKNOWN),
    ("SIP/peer/${N}", ["SIP/peer-*"], TRUNK),
    ("SIP/${N}@peer:5060", ["SIP/peer-*"], TRUNK),
    ("IAX2/user:pw@peer/${N}", ["IAX2/peer-*"], TRUNK),
    ("IAX2/peer/${N}", ["PJSIP/carrier-*"], NOT_TRUNK),
    ("DAHDI/g1/${N}", ["DAHDI/*"], UNKNOWN),
    ("DAHDI/g1/${N}", ["PJSIP/carrier-*"], NOT_TRUNK),
    ("DAHDI/1/${N}", ["DAHDI/1-*"], TRUNK),
    ("DAHDI/2/${N}", ["DAHDI/1-*"], NOT_TRUNK),
    ("Local/${N}@outbound", ["PJSIP/carrier-*"], NOT_TRUNK),
    ("${DIAL}", ["PJSIP/carrier-*"], UNKNOWN),
    ("PJSIP/${X}", ["*"], UNKNOWN),
])
def test_which_channel_a_dial_target_makes(target: str, patterns: list[str], kind: str) -> None:
    assert classify_target(target, TrunkPatterns(patterns)) == kind


def test_queue_and_followme_are_listed_not_judged(audit_text: Audit) -> None:
    report = audit_text("[support]\nexten => 100,1,Queue(agents)\n")
    assert report.findings == [] and report.indirect == ["support,100,1: Queue(agents)"]


def test_a_switch_hides_extensions_from_the_audit(audit_text: Audit) -> None:
    report = audit_text("[outbound]\nswitch => Realtime/outbound@extensions\n")
    assert findings(report) == [("outbound", "", 0, DIALPLAN_NOT_VISIBLE)]


def freepbx(write_file: Callable[..., Path], hook: str | None) -> AuditReport:
    write_file("routes.conf", FREEPBX17_ROUTES.read_text(encoding="utf-8"))
    write_file("rpoguard.conf", PRODUCT_DIALPLAN.read_text(encoding="utf-8"))
    write_file("extensions_custom.conf", hook or "")
    conf = write_file("extensions.conf", "#include rpoguard.conf\n#include routes.conf\n"
                                         "#tryinclude extensions_custom.conf\n")
    return audit(read_conf(conf), CARRIER)


@pytest.mark.parametrize("version", ["17", "16"])
def test_freepbx_trunk_dial_is_gated_by_the_shipped_predial_hook(write_file: Callable[..., Path],
                                                                 version: str) -> None:
    report = freepbx(write_file, shipped_hook(version))
    assert report.freepbx_hook == HOOK_GATES and report.findings == []
    assert (report.trunk_dials, report.gated) == (1, 1)


def test_freepbx_without_the_hook_or_with_an_empty_one_is_a_finding(write_file: Callable[..., Path]) -> None:
    report = freepbx(write_file, None)
    assert report.freepbx_hook == HOOK_ABSENT
    assert findings(report) == [("macro-dialout-trunk", "s", 7, DIALPLAN_UNGATED)]
    assert "FreePBX macro-dialout-trunk-predial-hook: absent" in report.summary()
    report = freepbx(write_file, "[macro-dialout-trunk-predial-hook]\nexten => s,1,Return()\n")
    assert report.freepbx_hook == HOOK_NOT_GATING and len(report.findings) == 1


def test_freepbx_16_dialout_runs_the_hook_as_a_macro(audit_text: Audit) -> None:
    report = audit_text(shipped_hook("16") + """
[macro-dialout-trunk]
exten => s,1,Set(OUTNUM=${ARG2})
 same => n,Macro(dialout-trunk-predial-hook,)
 same => n,Dial(${OUT_${DIAL_TRUNK}}/${OUTNUM},300)
""")
    assert report.freepbx_hook == HOOK_GATES and report.findings == [] and report.gated == 1


# -- reading extensions.conf ----------------------------------------------------------------------------

def test_priorities_labels_hints_and_the_old_syntax(write_file: Callable[..., Path]) -> None:
    plan = read_conf(write_file("extensions.conf", """[general]
static = yes
[globals]
TRUNK=PJSIP/carrier
[ctx]
exten => 100,hint,PJSIP/phone100
exten => 100,1,Answer()
 same => n(again),Playback(hello)
 same => 5,Wait,1
 same => n,Goto(again)
exten => 101,n,NoOp(pbx_config numbers on from the context's last priority)
exten => 100,again,NoOp(a priority defined twice: Asterisk keeps the first)
exten => _0[1-9]X.,1,NoOp()
"""))
    assert list(plan.contexts) == ["ctx"]
    ext = plan.contexts["ctx"].extensions["100"]
    assert ext.hint == "PJSIP/phone100"
    assert [(p.number, p.label, p.app, p.data) for p in ext.ordered()] == [
        (1, None, "Answer", ""), (2, "again", "Playback", "hello"), (5, None, "Wait", "1"), (6, None, "Goto", "again")]
    assert [p.number for p in plan.contexts["ctx"].extensions["101"].ordered()] == [7]
    assert plan.contexts["ctx"].find("0612345678")[0].name == "_0[1-9]X."
    assert plan.priority_count() == 6


def test_comments_and_escaped_semicolons(write_file: Callable[..., Path]) -> None:
    plan = read_conf(write_file("extensions.conf", """[ctx] ; a context
exten => s,1,NoOp(a\\;b) ; comment
;-- a block comment
exten => s,2,Dial(PJSIP/${EXTEN}@carrier)
--; exten => s,2,NoOp(after the block)
 same => n,NoOp(x) ;-- inline --; ; and a comment
"""))
    assert [(p.number, p.line()) for p in plan.contexts["ctx"].extensions["s"].ordered()] == [
        (1, "NoOp(a;b)"), (2, "NoOp(after the block)"), (3, "NoOp(x)")]


def test_templates_and_additions(write_file: Callable[..., Path]) -> None:
    plan = read_conf(write_file("extensions.conf", """[common](!)
exten => s,1,GoSub(rpoguard-check,s,1(${ARG1},c))
[route-a](common)
 same => n,Dial(PJSIP/${ARG1}@carrier)
[route-b]
exten => 1,1,NoOp()
[route-b](+)
exten => 2,1,NoOp()
include => route-a
include => route-c,09:00-17:00,mon-fri,*,*
"""))
    assert sorted(plan.contexts) == ["route-a", "route-b"]  # a template is no context
    assert [p.app for p in plan.contexts["route-a"].extensions["s"].ordered()] == ["GoSub", "Dial"]
    assert sorted(plan.contexts["route-b"].extensions) == ["1", "2"]
    assert plan.contexts["route-b"].includes == ["route-a", "route-c"]
    assert audit(plan, CARRIER).findings == []


def test_includes_are_read_relative_to_the_file(write_file: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    write_file("conf.d/a.conf", "[a]\nexten => s,1,Dial(PJSIP/x@carrier)\n")
    write_file("conf.d/b.conf", "[b]\nexten => s,1,NoOp()\n")
    write_file("sub.conf", '#include "conf.d/*.conf"\n#tryinclude missing.conf\n')
    plan = read_conf(write_file("extensions.conf", "#include sub.conf\n"))
    assert sorted(plan.contexts) == ["a", "b"]
    [finding] = audit(plan, CARRIER).findings
    assert finding.where == f"{tmp_path / 'conf.d' / 'a.conf'}:2"


@pytest.mark.parametrize(("text", "message"), [
    ("#include nowhere.conf\n", "#include nowhere.conf: no such file"),
    ("#exec /usr/local/bin/make-dialplan\n", "audit the running Asterisk over AMI instead"),
    ("[a]\nexten => s,1,NoOp()\n#include extensions.conf\n", "#include loop"),
    ("exten => s,1,NoOp()\n", "outside any [context]"),
    ("[a]\n same => n,NoOp()\n", "'same =>' with no 'exten =>'"),
    ("[a]\nexten => s,n,NoOp()\n", "priority 'n' with no priority before it"),
    ("[a]\nexten => s,later,NoOp()\n", "invalid priority 'later'"),
    ("[a]\nexten => s\n", "expected NAME,PRIORITY,Application(data)"),
    ("[a](+)\n", "does not exist yet"),
    ("[a](tmpl)\n", "template tmpl, which is not defined"),
    ("[a]\nthis is not a line\n", "is not 'exten => ...'"),
])
def test_a_file_it_cannot_read_is_an_error_naming_file_and_line(write_file: Callable[..., Path], tmp_path: Path,
                                                                text: str, message: str) -> None:
    with pytest.raises(DialplanError) as caught:
        read_conf(write_file("extensions.conf", text))
    assert str(caught.value).startswith(f"{tmp_path / 'extensions.conf'}:") and message in str(caught.value)


def test_a_missing_file_is_an_error() -> None:
    with pytest.raises(DialplanError, match=r"cannot read /nonexistent/extensions\.conf: No such file"):
        read_conf("/nonexistent/extensions.conf")


def test_split_args_keeps_functions_expressions_and_escapes_whole() -> None:
    assert split_args('a,${IF($[${X} = 1]?b:c)},"d,e",f\\,g,') == ["a", "${IF($[${X} = 1]?b:c)}", '"d,e"', "f\\,g",
                                                                     ""]
    assert split_args("PJSIP/a&PJSIP/${CUT(X,&,1)}", "&") == ["PJSIP/a", "PJSIP/${CUT(X,&,1)}"]


def test_the_model_from_ami_events_is_the_same_as_from_the_file(write_file: Callable[..., Path]) -> None:
    events = [
        {"Event": "ListDialplan", "Context": "route", "IncludeContext": "other", "Registrar": "pbx_config"},
        {"Event": "ListDialplan", "Context": "route", "Extension": "_X.", "Priority": "1",
         "Application": "GoSub", "AppData": "rpoguard-check,s,1(${EXTEN},c)", "Registrar": "pbx_config"},
        {"Event": "ListDialplan", "Context": "route", "Extension": "_X.", "ExtensionLabel": "out", "Priority": "2",
         "Application": "Dial", "AppData": "PJSIP/${EXTEN}@carrier", "Registrar": "pbx_config"},
        {"Event": "ListDialplan", "Context": "route", "Extension": "_X.", "Priority": "3",
         "Application": "Hangup", "AppData": "(null)", "Registrar": "pbx_config"},
        {"Event": "ListDialplan", "Context": "route", "Extension": "100", "Priority": "hint",
         "Application": "PJSIP/phone100", "Registrar": "pbx_config"},
        {"Event": "ListDialplan", "Context": "route", "Switch": "Realtime/route@extensions",
         "Registrar": "pbx_config"},
    ]
    from_ami = from_ami_events(events, "AMI x")
    from_file = read_conf(write_file("extensions.conf", """[route]
include => other
exten => _X.,1,GoSub(rpoguard-check,s,1(${EXTEN},c))
 same => n(out),Dial(PJSIP/${EXTEN}@carrier)
 same => n,Hangup()
exten => 100,hint,PJSIP/phone100
switch => Realtime/route@extensions
"""))
    route_ami, route_file = from_ami.contexts["route"], from_file.contexts["route"]
    assert (route_ami.includes, route_ami.switches) == (route_file.includes, route_file.switches)
    for name in ("_X.", "100"):
        ami_ext, file_ext = route_ami.extensions[name], route_file.extensions[name]
        assert ami_ext.hint == file_ext.hint
        assert [(p.number, p.label, p.app, p.data) for p in ami_ext.ordered()] == [
            (p.number, p.label, p.app, p.data) for p in file_ext.ordered()]


def test_the_audit_needs_trunks() -> None:
    with pytest.raises(ValueError, match=r"set \[watch\] trunks"):
        audit(from_ami_events([], "AMI x"), TrunkPatterns([]))
