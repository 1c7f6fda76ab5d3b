"""`rpoguard dialplan audit`: read the dialplan and name every priority that can reach a carrier without
asking the gate first (docs/bypass.md, "dialplan audit").

The dialplan is modelled as Asterisk holds it: contexts -> extensions -> priorities (application and data),
with includes and switches. It is read from extensions.conf (with its #include files) or from a running
Asterisk over AMI (ShowDialPlan), which also shows what other modules loaded (AEL, FreePBX's generated files).

The rule, per extension: a priority dialling a target that would make a trunk channel (`[watch] trunks`) is
gated when every way to it from the extension's first priority, and from every priority a jump elsewhere
enters it at, passes a priority that runs GoSub(rpoguard-check,...), GoSub(rpoguard-check-ari,...), or a
GoSub/Macro into a subroutine that does. Ways follow the next priority and the jumps (Goto, GotoIf,
GotoIfTime) written out literally; a jump built at run time (Goto(${DEST})) cannot be followed, so a priority
only such a jump reaches is judged by the priorities before it. A subroutine counts as gating when it runs
the gate before its first Return in priority order: a condition inside it (the FreePBX predial hook gates
only marketing calls, by design) is not judged here. A dial target built at run time (${TRUNK}/...) cannot be
told apart from a trunk, so it counts as one (fail closed). `watch` and `reconcile` then prove it for the
calls themselves.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from rpoguard.bypass.ami import AmiTarget, AmiUnavailable, connect, disconnect
from rpoguard.bypass.match import TrunkPatterns
from rpoguard.constants import (
    DIALPLAN_NOT_VISIBLE,
    DIALPLAN_TARGET_UNKNOWN,
    DIALPLAN_TEXT,
    DIALPLAN_UNGATED,
    GATE_CONTEXT,
    GATE_CONTEXT_ARI,
)

log = logging.getLogger(__name__)

GATE_CONTEXTS = (GATE_CONTEXT, GATE_CONTEXT_ARI)
# FreePBX runs this subroutine right before every trunk Dial() of macro-dialout-trunk (dialplan/rpoguard.conf).
FREEPBX_DIALOUT = "macro-dialout-trunk"
FREEPBX_HOOK = "macro-dialout-trunk-predial-hook"
HOOK_NOT_FREEPBX = "not FreePBX"
HOOK_ABSENT = "absent"
HOOK_GATES = "runs the gate"
HOOK_NOT_GATING = "does not run the gate"
# pbx_config reads these sections as settings, not contexts.
_NOT_CONTEXTS = frozenset({"general", "globals"})
# After these the next priority does not run (a subroutine returns, the call ends, or it goes elsewhere).
_ENDS = frozenset({"return", "hangup", "macroexit", "goto"})
# Applications that jump to a dialplan location (their targets are followed when written out literally).
_JUMPS = frozenset({"goto", "gotoif", "gotoiftime", "gosub", "gosubif"})
# Applications whose first argument is one or more `&`-separated dial targets, and RetryDial's fourth.
_DIAL_TARGET_ARG = MappingProxyType({"dial": 0, "page": 0, "originate": 0, "retrydial": 3})
# Applications that ring devices named outside the dialplan (queues.conf, followme.conf): listed, not judged.
_INDIRECT_DIALS = frozenset({"queue", "followme"})
_SAMPLE_SUFFIX = "-0000001a"  # what Asterisk appends to a channel's name: PJSIP/carrier-0000001a
_MAX_INCLUDE_DEPTH = 20
# How long a running Asterisk may take to list its whole dialplan; only a wedged one takes this long.
SHOW_DIALPLAN_TIMEOUT = 60.0


class DialplanError(Exception):
    """The dialplan cannot be read: the message names the file and line."""


# -- the model ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Priority:
    number: int
    label: str | None
    app: str
    data: str
    where: str  # "file:line", or "" from AMI

    def line(self) -> str:
        return f"{self.app}({self.data})"


@dataclass(slots=True)
class Extension:
    name: str
    priorities: dict[int, Priority] = field(default_factory=dict)
    hint: str | None = None

    def ordered(self) -> list[Priority]:
        return [self.priorities[n] for n in sorted(self.priorities)]

    def label(self, name: str) -> int | None:
        for prio in self.priorities.values():
            if prio.label == name:
                return prio.number
        return None


@dataclass(slots=True)
class Context:
    name: str
    extensions: dict[str, Extension] = field(default_factory=dict)
    includes: list[str] = field(default_factory=list)
    switches: list[str] = field(default_factory=list)
    where: str = ""

    def extension(self, name: str) -> Extension:
        return self.extensions.setdefault(name, Extension(name))

    def find(self, exten: str) -> list[Extension]:
        """The extensions that would answer `exten` (exact name first, else the patterns matching it)."""
        if exten in self.extensions:
            return [self.extensions[exten]]
        return [ext for name, ext in self.extensions.items() if name.startswith("_") and _pattern_matches(name, exten)]


@dataclass(slots=True)
class Dialplan:
    source: str  # the file read, or "AMI user@host:port"
    contexts: dict[str, Context] = field(default_factory=dict)

    def context(self, name: str, where: str = "") -> Context:
        if name not in self.contexts:
            self.contexts[name] = Context(name, where=where)
        return self.contexts[name]

    def priority_count(self) -> int:
        return sum(len(e.priorities) for c in self.contexts.values() for e in c.extensions.values())


def _pattern_matches(pattern: str, exten: str) -> bool:
    pattern = pattern.split("/", 1)[0]  # an extension's caller-ID match (`100/2000`) does not change the number
    if not pattern.startswith("_"):
        return pattern == exten
    regex = []
    chars = iter(pattern[1:])
    for char in chars:
        upper = char.upper()
        if upper == "X":
            regex.append("[0-9]")
        elif upper == "Z":
            regex.append("[1-9]")
        elif upper == "N":
            regex.append("[2-9]")
        elif char == ".":
            regex.append(".+")
        elif char == "!":
            regex.append(".*")
        elif char == "[":
            members = []
            for inner in chars:
                if inner == "]":
                    break
                members.append(re.escape(inner) if inner != "-" else "-")
            regex.append(f"[{''.join(members)}]")
        else:
            regex.append(re.escape(char))
    return re.fullmatch("".join(regex), exten) is not None


# -- Asterisk's argument syntax -------------------------------------------------------------------------

_SPLITTERS = MappingProxyType({sep: re.compile(r'[\\"()\[\]{}' + re.escape(sep) + "]") for sep in ",?:&"})


def split_args(data: str, sep: str = ",") -> list[str]:
    """Split application data as Asterisk does: not inside (), ${}, $[] or quotes, nor at an escaped `sep`."""
    parts: list[str] = []
    start = depth = 0
    quoted = False
    escaped_until = -1
    # Only the characters that matter are visited: a large dialplan is mostly plain text.
    special = _SPLITTERS.get(sep) or re.compile(r'[\\"()\[\]{}' + re.escape(sep) + "]")
    for found in special.finditer(data):
        i = found.start()
        if i < escaped_until:
            continue
        char = data[i]
        if char == "\\":
            escaped_until = i + 2
        elif char == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(0, depth - 1)
        elif depth == 0:
            parts.append(data[start:i])
            start = i + 1
    parts.append(data[start:])
    return parts


def _dynamic(text: str) -> bool:
    return "$" in text


def _app_call(text: str) -> tuple[str, str]:
    """"App(data)" -> ("App", "data"); a bare "App" -> ("App", "")."""
    text = text.strip()
    head, paren, rest = text.partition("(")
    if not paren:
        return text, ""
    end = rest.rfind(")")
    return head.strip(), rest[:end] if end >= 0 else rest


def _branches(data: str) -> tuple[str, list[str]] | None:
    """`cond?a:b` (GosubIf, ExecIf) -> (cond, [a, b]); None without a `?`."""
    parts = split_args(data, "?")
    if len(parts) < 2:
        return None
    return parts[0], split_args("?".join(parts[1:]), ":")


# -- reading extensions.conf ----------------------------------------------------------------------------

@dataclass(slots=True)
class _Line:
    text: str
    where: str


@dataclass(slots=True)
class _Category:
    name: str
    where: str
    template: bool = False
    lines: list[_Line] = field(default_factory=list)


_CATEGORY = re.compile(r"^\[([^\]]+)\]\s*(?:\(([^)]*)\))?\s*$")
_DIRECTIVE = re.compile(r"^#\s*(include|tryinclude|exec)\s+(.+)$", re.IGNORECASE)


def _strip_comments(text: str, in_block: int) -> tuple[str, int]:
    """The line without its comments; `in_block` counts open `;-- --;` blocks (they nest, as in Asterisk)."""
    if not in_block and ";" not in text:
        return text, 0
    out: list[str] = []
    i = 0
    while i < len(text):
        if in_block:
            if text.startswith("--;", i):
                in_block -= 1
                i += 3
            elif text.startswith(";--", i):
                in_block += 1
                i += 3
            else:
                i += 1
            continue
        if text.startswith(";--", i):
            in_block += 1
            i += 3
        elif text[i] == "\\" and text.startswith(";", i + 1):
            out.append(";")  # an escaped semicolon is data
            i += 2
        elif text[i] == ";":
            break
        else:
            out.append(text[i])
            i += 1
    return "".join(out), in_block


def _read_lines(path: Path, seen: tuple[Path, ...]) -> Iterator[_Line]:
    if len(seen) > _MAX_INCLUDE_DEPTH or path.resolve() in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise DialplanError(f"{path}: #include loop or nesting too deep ({chain})")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DialplanError(f"cannot read {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # Asterisk reads bytes; a comment in another encoding is no reason to stop
    in_block = 0
    for number, raw_line in enumerate(text.splitlines(), 1):
        where = f"{path}:{number}"
        line, in_block = _strip_comments(raw_line, in_block)
        line = line.strip()
        if not line:
            continue
        directive = _DIRECTIVE.match(line)
        if directive:
            kind, target = directive.group(1).lower(), directive.group(2).strip().strip('"<>').strip()
            if kind == "exec":
                raise DialplanError(f"{where}: #exec {target}: the dialplan it writes cannot be read from the "
                                    "file; audit the running Asterisk over AMI instead (no --file)")
            yield from _included(path, target, kind == "include", where, (*seen, path.resolve()))
            continue
        yield _Line(line, where)


def _included(path: Path, target: str, required: bool, where: str, seen: tuple[Path, ...]) -> Iterator[_Line]:
    pattern = Path(target) if Path(target).is_absolute() else path.parent / target
    matches = sorted(glob.glob(str(pattern))) if glob.has_magic(str(pattern)) else [str(pattern)]
    found = [Path(m) for m in matches if Path(m).exists()]
    if not found:
        if required:
            raise DialplanError(f"{where}: #include {target}: no such file ({pattern})")
        return
    for included in found:
        yield from _read_lines(included, seen)


def _categories(lines: Iterable[_Line]) -> list[_Category]:
    """The file's sections with Asterisk's template rules applied: `(!)` a template only, `(tmpl,...)`
    its templates' lines first, `(+)` more lines for an existing section."""
    categories: list[_Category] = []
    by_name: dict[str, _Category] = {}
    current: _Category | None = None
    for line in lines:
        header = _CATEGORY.match(line.text)
        if header:
            name = header.group(1).strip()
            options = [o.strip() for o in (header.group(2) or "").split(",") if o.strip()]
            if "+" in options:
                if name not in by_name:
                    raise DialplanError(f"{line.where}: [{name}](+) adds to a context that does not exist yet")
                current = by_name[name]
                continue
            current = _Category(name, line.where, template="!" in options)
            for option in options:
                if option == "!":
                    continue
                if option not in by_name:
                    raise DialplanError(f"{line.where}: [{name}] inherits from template {option}, which is "
                                        "not defined before it")
                current.lines.extend(by_name[option].lines)
            categories.append(current)
            by_name[name] = current
            continue
        if current is None:
            raise DialplanError(f"{line.where}: {line.text!r} is outside any [context]")
        current.lines.append(line)
    return categories


def _parse_priority(text: str, last: int | None, ext: Extension, where: str) -> tuple[int | None, str | None]:
    """pbx_config's priority: a number, `n` (the last one + 1), `s`/`same` (the last one), `hint`, or a label
    of the extension, each with an optional `(label)`. None for a hint."""
    label = None
    if "(" in text:
        text, _, rest = text.partition("(")
        label = rest.split(")", 1)[0].strip() or None
    text = text.strip()
    if text == "hint":
        return None, label
    if text in ("n", "next", "s", "same"):
        if last is None:
            raise DialplanError(f"{where}: priority '{text}' with no priority before it")
        return (last + 1 if text in ("n", "next") else last), label
    if text.isdigit() and int(text) > 0:
        return int(text), label
    found = ext.label(text)
    if found is None:
        raise DialplanError(f"{where}: invalid priority {text!r} (a number, n, n(label), hint or a known label)")
    return found, label


def _add_line(context: Context, key: str, value: str, where: str, state: dict[str, object]) -> None:
    if key == "include":
        context.includes.append(value.split(",", 1)[0].strip())
        return
    if key in ("switch", "eswitch", "lswitch"):
        context.switches.append(value.strip())
        return
    if key not in ("exten", "same"):
        return  # ignorepat and the like do not run anything
    if key == "same":
        name = state.get("exten")
        if not isinstance(name, str):
            raise DialplanError(f"{where}: 'same =>' with no 'exten =>' before it in [{context.name}]")
        rest = value
    else:
        fields = split_args(value)
        if len(fields) < 3:
            raise DialplanError(f"{where}: 'exten => {value}': expected NAME,PRIORITY,Application(data)")
        name = fields[0].strip()
        rest = ",".join(fields[1:])
        state["exten"] = name
    fields = split_args(rest)
    if len(fields) < 2:
        raise DialplanError(f"{where}: '{key} => {value}': expected PRIORITY,Application(data)")
    ext = context.extension(name)
    last = state.get("priority")
    number, label = _parse_priority(fields[0], last if isinstance(last, int) else None, ext, where)
    app_text = ",".join(fields[1:]).strip()
    if number is None:
        ext.hint = app_text
        return
    state["priority"] = number
    if "(" in app_text.split(",", 1)[0]:
        app, data = _app_call(app_text)
    else:  # the old "App,data" form
        app, _, data = app_text.partition(",")
    if number in ext.priorities:
        log.warning("%s: %s,%s,%d is defined twice; Asterisk keeps the first", where, context.name, name, number)
        return
    ext.priorities[number] = Priority(number, label, app.strip(), data, where)


def read_conf(path: str | Path) -> Dialplan:
    """The dialplan of an extensions.conf, its #include/#tryinclude files read relative to it."""
    path = Path(path)
    plan = Dialplan(str(path))
    for category in _categories(_read_lines(path, ())):
        if category.template or category.name in _NOT_CONTEXTS:
            continue
        context = plan.context(category.name, category.where)
        # pbx_config's `n` counts on from the last priority added in the context, whatever the extension.
        state: dict[str, object] = {}
        for line in category.lines:
            key, sep, value = line.text.partition("=")
            if not sep:
                raise DialplanError(f"{line.where}: {line.text!r} is not 'exten => ...', 'same => ...', "
                                    "'include => ...' or a setting")
            _add_line(context, key.strip().lower(), value.lstrip(">").strip(), line.where, state)
    return plan


# -- reading it over AMI --------------------------------------------------------------------------------

def from_ami_events(events: Iterable[Mapping[str, str]], source: str) -> Dialplan:
    """The dialplan from ShowDialPlan's ListDialplan events (one per priority, include, switch)."""
    plan = Dialplan(source)
    for event in events:
        if str(event.get("Event", "")).lower() != "listdialplan":
            continue
        name = str(event.get("Context", ""))
        if not name:
            continue
        context = plan.context(name, f"AMI ({event.get('Registrar', '')})" if event.get("Registrar") else "AMI")
        if event.get("IncludeContext"):
            context.includes.append(str(event["IncludeContext"]))
            continue
        if event.get("Switch"):
            context.switches.append(str(event["Switch"]))
            continue
        exten = event.get("Extension")
        priority = str(event.get("Priority", ""))
        if not exten or not priority:
            continue
        ext = context.extension(str(exten))
        app = str(event.get("Application", ""))
        data = str(event.get("AppData", ""))
        if data == "(null)":  # how Asterisk writes empty data
            data = ""
        if priority == "hint":
            ext.hint = app
            continue
        if not priority.isdigit():
            raise DialplanError(f"AMI: ListDialplan for {name},{exten} has priority {priority!r}, not a number")
        number = int(priority)
        ext.priorities.setdefault(number, Priority(number, str(event.get("ExtensionLabel", "")) or None, app, data,
                                                   ""))
    return plan


async def read_ami(target: AmiTarget, *, connect_timeout: float,
                   list_timeout: float = SHOW_DIALPLAN_TIMEOUT) -> Dialplan:
    """The dialplan a running Asterisk holds, by ShowDialPlan (needs `write = reporting` in manager.conf)."""
    manager = await connect(target, events=False, timeout=connect_timeout)
    try:
        reply = manager.send_action({"Action": "ShowDialPlan"})
        # asyncio.wait, not wait_for: a cancelled action future would upset panoramisk's bookkeeping. A list
        # cut off by a lost connection never completes, so the connection's end is waited for as well.
        gone = getattr(manager.protocol, "gone", None)
        await asyncio.wait({reply} | ({gone} if gone is not None else set()), timeout=list_timeout,
                           return_when=asyncio.FIRST_COMPLETED)
        if not reply.done():
            raise AmiUnavailable(f"Asterisk at {target.host}:{target.port} " + (
                "closed the connection before its dialplan list was complete" if gone is not None and gone.done()
                else f"did not list its dialplan within {list_timeout:g} s"))
        messages = reply.result()
    finally:
        await disconnect(manager)
    if not isinstance(messages, list):  # one reply, no list: refused
        said = str(messages.get("Message", "") or messages.get("Response", "")).strip()
        remedy = ": the manager.conf user needs write = reporting" if "permission" in said.lower() else ""
        raise AmiUnavailable(f"Asterisk refused ShowDialPlan to user {target.user} ({said}){remedy}")
    if not any(str(m.get("Event", "")).lower() == "showdialplancomplete" for m in messages):
        said = str(messages[-1].get("Message", "") or messages[-1].get("Response", "")).strip()
        raise AmiUnavailable(f"Asterisk's dialplan list from {target.host}:{target.port} ended before it was "
                             f"complete ({said or 'no ShowDialPlanComplete'})")
    return from_ami_events(messages, f"AMI {target.describe()}")


# -- the audit ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Finding:
    context: str
    extension: str
    priority: int
    label: str | None
    line: str  # Application(data)
    where: str
    why: str  # a DIALPLAN_* code
    via: str | None = None  # the jump that reaches it past the gate, when it is one

    @property
    def text(self) -> str:
        return DIALPLAN_TEXT[self.why]

    def as_dict(self) -> dict[str, object]:
        return {"context": self.context, "extension": self.extension, "priority": self.priority,
                "label": self.label, "application": self.line, "where": self.where or None, "why": self.why,
                "text": self.text, "via": self.via}


@dataclass(slots=True)
class AuditReport:
    source: str
    contexts: int = 0
    priorities: int = 0
    trunk_dials: int = 0  # priorities dialling a trunk, or a target built at run time
    gated: int = 0
    indirect: list[str] = field(default_factory=list)  # Queue/FollowMe priorities: members are not in the dialplan
    freepbx_hook: str = HOOK_NOT_FREEPBX
    findings: list[Finding] = field(default_factory=list)

    def summary(self) -> str:
        hook = "" if self.freepbx_hook == HOOK_NOT_FREEPBX else f"; FreePBX {FREEPBX_HOOK}: {self.freepbx_hook}"
        return (f"{self.contexts} context(s), {self.priorities} priorities read, {self.trunk_dials} trunk dial(s), "
                f"{self.gated} gated, {len(self.findings)} finding(s){hook}")

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "contexts": self.contexts, "priorities": self.priorities,
                "trunk_dials": self.trunk_dials, "gated": self.gated, "findings_count": len(self.findings),
                "freepbx_hook": self.freepbx_hook, "indirect_dials": self.indirect,
                "findings": [f.as_dict() for f in self.findings]}


TRUNK = "trunk"
NOT_TRUNK = "not a trunk"
UNKNOWN = "unknown"


def _literal_prefix(pattern: str) -> str:
    cut = min((i for i, c in enumerate(pattern) if c in "*?["), default=len(pattern))
    return pattern[:cut]


def classify_target(target: str, trunks: TrunkPatterns) -> str:
    """Whether one dial target (PJSIP/${N}@carrier, SIP/peer/N, IAX2/peer/N, DAHDI/g1/N...) makes a channel
    matching the trunk patterns: TRUNK, NOT_TRUNK, or UNKNOWN when the name depends on a run-time value."""
    target = target.strip()
    tech, slash, resource = target.partition("/")
    if not slash or _dynamic(tech):
        return UNKNOWN if _dynamic(target) else NOT_TRUNK
    first = resource.split("/", 1)[0]
    peer = first.rsplit("@", 1)[-1].split(":", 1)[0] if "@" in first else first.split(":", 1)[0]
    known = bool(peer) and not _dynamic(peer)
    if tech.upper() == "DAHDI" and known and not peer.isdigit():
        known = False  # a group or span (g1, r2, i1): the channel's number is chosen at dial time
    if known:
        return TRUNK if trunks.match(f"{tech}/{peer}{_SAMPLE_SUFFIX}") else NOT_TRUNK
    # Only the technology is known: a trunk only if some pattern could name a channel of it.
    prefix = f"{tech}/"
    for pattern in trunks.patterns:
        literal = _literal_prefix(pattern)
        if literal.startswith(prefix) or prefix.startswith(literal):
            return UNKNOWN
    return NOT_TRUNK


class _Auditor:
    def __init__(self, plan: Dialplan, trunks: TrunkPatterns) -> None:
        self.plan = plan
        self.trunks = trunks
        self._gates: dict[tuple[str, str, int], bool] = {}
        self._jumps: dict[tuple[str, str, int], list[tuple[str, str, int]]] = {}

    # A call into a subroutine gates when, from where it enters, that extension runs the gate before it ends.
    def _enters_gate(self, context: str, exten: str, priority: int, stack: frozenset[tuple[str, str, int]]) -> bool:
        if context in GATE_CONTEXTS:
            return True
        key = (context, exten, priority)
        if key in self._gates:
            return self._gates[key]
        if key in stack or context not in self.plan.contexts:
            return False
        candidates = self.plan.contexts[context].find(exten)
        result = bool(candidates) and all(
            self._runs_gate_before_end(context, ext, priority, stack | {key}) for ext in candidates)
        self._gates[key] = result
        return result

    def _runs_gate_before_end(self, context: str, ext: Extension, start: int,
                              stack: frozenset[tuple[str, str, int]]) -> bool:
        for prio in ext.ordered():
            if prio.number < start:
                continue
            if self.is_gate(context, ext, prio, stack):
                return True
            if prio.app.lower() in _ENDS:
                return False
        return False

    def _location(self, context: str, ext: Extension, where: str) -> tuple[str, str, int] | None:
        """A jump's target (`ctx,exten,prio(args)`, `exten,prio(args)`, `prio(args)`, a label for the priority)
        when written out literally, else None; a call into the gate's subroutines counts whatever follows."""
        parts = [p.strip() for p in split_args(where.split("(", 1)[0])]
        if len(parts) == 3:
            ctx, exten, prio = parts
        elif len(parts) == 2:
            ctx, (exten, prio) = context, parts
        else:
            ctx, exten, prio = context, ext.name, parts[0]
        if ctx in GATE_CONTEXTS:
            return ctx, exten, 1
        if exten == "${EXTEN}":  # the number being dialled: an extension of the same name, in practice
            exten = ext.name
        if _dynamic(ctx) or _dynamic(exten) or _dynamic(prio) or not prio:
            return None
        if prio.isdigit():
            return ctx, exten, int(prio)
        target = self.plan.contexts.get(ctx)
        found = [n for e in (target.find(exten) if target else []) if (n := e.label(prio)) is not None]
        return (ctx, exten, found[0]) if found else None

    def jumps(self, context: str, ext: Extension, prio: Priority) -> list[tuple[str, str, int]]:
        """Where `prio` may jump to (Goto, GotoIf, GotoIfTime, and the calls of Gosub and GosubIf)."""
        app = prio.app.lower()
        if app not in _JUMPS:
            return []
        key = (context, ext.name, prio.number)
        if key not in self._jumps:
            if app in ("goto", "gosub"):
                targets = [prio.data]
            else:
                branches = _branches(prio.data)
                targets = branches[1] if branches else []
            self._jumps[key] = [t for t in (self._location(context, ext, x) for x in targets if x.strip())
                                if t is not None]
        return self._jumps[key]

    def is_gate(self, context: str, ext: Extension, prio: Priority,
                stack: frozenset[tuple[str, str, int]] = frozenset()) -> bool:
        app = prio.app.lower()
        if app == "gosub":
            target = self._location(context, ext, prio.data)
            return target is not None and self._enters_gate(*target, stack)
        if app == "macro":  # FreePBX 16 and older: Macro(name,...) runs [macro-name] from s,1
            name = split_args(prio.data)[0].strip()
            return not _dynamic(name) and self._enters_gate(f"macro-{name}", "s", 1, stack)
        if app == "gosubif":  # gates only when both ways do
            branches = _branches(prio.data)
            if branches is None or len(branches[1]) < 2:
                return False
            return all(self.is_gate(context, ext, Priority(prio.number, None, "Gosub", b, prio.where), stack)
                       for b in branches[1][:2])
        if app == "exec":
            inner_app, inner_data = _app_call(prio.data)
            return self.is_gate(context, ext, Priority(prio.number, None, inner_app, inner_data, prio.where), stack)
        return False  # ExecIf and the rest: conditional, or no gate at all

    def dial_kind(self, prio: Priority) -> str | None:
        """TRUNK / UNKNOWN for a priority that dials one, NOT_TRUNK for one that dials only other targets, None
        for any other application."""
        app = prio.app.lower()
        if app in ("exec", "execif"):
            if app == "exec":
                inner = [prio.data]
            else:
                branches = _branches(prio.data)
                inner = branches[1] if branches else []
            kinds = [self.dial_kind(Priority(prio.number, None, *_app_call(i), prio.where)) for i in inner]
            return _worst([k for k in kinds if k is not None])
        if app not in _DIAL_TARGET_ARG:
            return None
        args = split_args(prio.data)
        index = _DIAL_TARGET_ARG[app]
        if index >= len(args):
            return NOT_TRUNK
        return _worst([classify_target(t, self.trunks) for t in split_args(args[index], "&") if t.strip()])

    def run(self) -> AuditReport:
        report = AuditReport(self.plan.source, contexts=len(self.plan.contexts),
                             priorities=self.plan.priority_count())
        entries = self._entries()
        for context in self.plan.contexts.values():
            if context.name in GATE_CONTEXTS:
                continue
            for switch in context.switches:
                report.findings.append(Finding(context.name, "", 0, None, f"switch => {switch}", context.where,
                                               DIALPLAN_NOT_VISIBLE))
            for ext in context.extensions.values():
                self._extension(context, ext, entries.get((context.name, ext.name), {}), report)
        report.freepbx_hook = self.freepbx_hook()
        return report

    def _entries(self) -> dict[tuple[str, str], dict[int, str]]:
        """Where jumps from elsewhere enter each extension: priority -> the jump, as the finding names it."""
        entries: dict[tuple[str, str], dict[int, str]] = {}
        for context in self.plan.contexts.values():
            for ext in context.extensions.values():
                for prio in ext.ordered():
                    for ctx, exten, number in self.jumps(context.name, ext, prio):
                        if ctx == context.name and exten == ext.name:
                            continue  # a jump inside the extension is an edge of its own walk
                        target = self.plan.contexts.get(ctx)
                        for found in target.find(exten) if target else []:
                            entries.setdefault((ctx, found.name), {}).setdefault(
                                number, f"{context.name},{ext.name},{prio.number}: {prio.line()}")
        return entries

    def _extension(self, context: Context, ext: Extension, entered: Mapping[int, str], report: AuditReport) -> None:
        """Walk the extension from its first priority and from every priority a jump enters it at, along
        the next priority and the jumps inside it, never past a priority that runs the gate: a trunk dial
        reached so is a finding. One that no walk reaches (only a jump built at run time gets there) is
        judged by the priorities before it."""
        ordered = ext.ordered()
        if not ordered:
            return
        gates = {p.number for p in ordered if self.is_gate(context.name, ext, p)}
        starts: dict[int, str | None] = {ordered[0].number: None}
        for number, via in entered.items():
            if number in ext.priorities:
                starts.setdefault(number, via)
        ungated = self._walk(context, ext, starts, gates)
        reached = set(ungated) | set(self._walk(context, ext, {g + 1: None for g in gates}, set()))
        first_gate = min(gates, default=None)
        for prio in ordered:
            if prio.number in gates:
                continue
            if prio.app.lower() in _INDIRECT_DIALS:
                report.indirect.append(f"{context.name},{ext.name},{prio.number}: {prio.line()}")
                continue
            kind = self.dial_kind(prio)
            if kind not in (TRUNK, UNKNOWN):
                continue
            report.trunk_dials += 1
            if prio.number in ungated:
                open_path = True
            elif prio.number in reached:
                open_path = False
            else:
                open_path = first_gate is None or first_gate > prio.number
            if not open_path:
                report.gated += 1
                continue
            why = DIALPLAN_UNGATED if kind == TRUNK else DIALPLAN_TARGET_UNKNOWN
            # The jump matters only where the priorities before the dial do run the gate.
            via = ungated.get(prio.number) if first_gate is not None and first_gate < prio.number else None
            report.findings.append(Finding(context.name, ext.name, prio.number, prio.label, prio.line(), prio.where,
                                           why, via))

    def _walk(self, context: Context, ext: Extension, starts: Mapping[int, str | None],
              stops: set[int]) -> dict[int, str | None]:
        """The priorities reachable from `starts` along the next priority and the jumps inside the extension,
        not going on from one in `stops`; each with the last jump taken on the way there (None: none)."""
        reached: dict[int, str | None] = {}
        todo = list(starts.items())
        while todo:
            number, via = todo.pop()
            if number in reached or number not in ext.priorities:
                continue
            reached[number] = via
            if number in stops:
                continue
            prio = ext.priorities[number]
            app = prio.app.lower()
            if app not in _ENDS:
                todo.append((number + 1, via))
            if app in ("goto", "gotoif", "gotoiftime"):
                jump = f"{context.name},{ext.name},{number}: {prio.line()}"
                todo.extend((target, jump) for ctx, exten, target in self.jumps(context.name, ext, prio)
                            if ctx == context.name and exten == ext.name)
        return reached

    def freepbx_hook(self) -> str:
        if FREEPBX_DIALOUT not in self.plan.contexts:
            return HOOK_NOT_FREEPBX
        if FREEPBX_HOOK not in self.plan.contexts:
            return HOOK_ABSENT
        return HOOK_GATES if self._enters_gate(FREEPBX_HOOK, "s", 1, frozenset()) else HOOK_NOT_GATING


def _worst(kinds: list[str]) -> str | None:
    for kind in (TRUNK, UNKNOWN, NOT_TRUNK):
        if kind in kinds:
            return kind
    return None


def audit(plan: Dialplan, trunks: TrunkPatterns) -> AuditReport:
    """Every priority of `plan` that can reach a trunk without the gate, and the counts for the summary."""
    if not trunks:
        raise ValueError("no trunks: set [watch] trunks in the config (channel-name patterns such as "
                         "\"PJSIP/carrier-*\")")
    return _Auditor(plan, trunks).run()
