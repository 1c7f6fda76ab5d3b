"""What the routes share: how a request names the number, campaign and caller ID (the gate interface they
call is in agi/shared.py, shared with the ARI gate).

Argument order, the same for every route and for FastAGI and classic AGI:

    agi_arg_1  the dialled number            (absent: agi_extension)
    agi_arg_2  the campaign                  (used when the script's ``?campaign=`` is absent or empty)
    agi_arg_3  the caller ID to be presented (absent or empty: agi_callerid)

    AGI(agi://127.0.0.1:4573/check?campaign=C,${EXTEN})
    AGI(agi://127.0.0.1:4573/check,${EXTEN},C,0694801234)
    AGI(agi://127.0.0.1:4573/check?campaign=${URIENCODE(${ARG2})},${ARG1},${ARG2},${ARG3})  (rpoguard.conf)

A number argument that is present but empty is checked as empty (and refused) rather than replaced by
the extension, which inside a GoSub is ``s``. An empty caller ID argument means "the channel's own", as
dialplan/rpoguard.conf passes ``${ARG3}`` whether or not the caller gave one.

Every value these functions take is read strictly (AgiRequest.strict_*): one that was not UTF-8 ends the
session with failure instead of being decided on with U+FFFD in it. Only the values actually read are:
an agi_extension that is not UTF-8 does not matter when argument 1 gives the number.
"""

from __future__ import annotations

from typing import Final

from rpoguard.agi.protocol import AST_PRES_ALLOWED, AST_PRES_RESTRICTION, AgiRequest
from rpoguard.agi.shared import UNKNOWN
from rpoguard.constants import SOURCE_AGI, SOURCE_FASTAGI

ARG_NUMBER: Final = 1
ARG_CAMPAIGN: Final = 2
ARG_CALLER_ID: Final = 3
QUERY_CAMPAIGN: Final = "campaign"
# The call's linkedid (dialplan/rpoguard.conf passes ${CHANNEL(linkedid)}): AGI's environment lacks it.
QUERY_LINKEDID: Final = "linkedid"

# Environment keys copied into CallRequest.extra so the audit log keeps the input exactly as received.
_AUDIT_KEYS: Final = (
    "agi_request",
    "agi_network_script",
    "agi_context",
    "agi_extension",
    "agi_callerid",
    "agi_callingpres",
    "agi_accountcode",
)


def source_of(request: AgiRequest) -> str:
    return SOURCE_FASTAGI if request.network else SOURCE_AGI


def number_of(request: AgiRequest) -> str:
    number = request.strict_arg(ARG_NUMBER)
    if number is None:
        number = request.strict_env("agi_extension")
    return number or ""


def campaign_of(request: AgiRequest) -> str | None:
    return request.strict_query(QUERY_CAMPAIGN) or request.strict_arg(ARG_CAMPAIGN) or None


def linkedid_of(request: AgiRequest) -> str | None:
    return request.strict_query(QUERY_LINKEDID) or None


def caller_id_of(request: AgiRequest) -> str:
    """The caller ID the callee will see, or "" when it is withheld.

    Withheld when the channel's presentation is anything but allowed: restricted (0x20), and also
    unavailable (0x40, which Asterisk reports when there is no valid number) and reserved (0x60), since
    the callee sees no number in those cases either. Asterisk folds the name's presentation into
    agi_callingpres, so a restricted name also counts as withheld: a refusal, never a false allow. A
    presentation that is sent but is not a number cannot show that the number is presented, so it counts
    as withheld too.
    """
    raw_pres = request.strict_env("agi_callingpres")
    pres = request.callingpres
    if raw_pres is not None and pres is None:
        return ""
    if pres is not None and pres & AST_PRES_RESTRICTION != AST_PRES_ALLOWED:
        return ""
    caller_id = (request.strict_arg(ARG_CALLER_ID) or "").strip() or (request.strict_env("agi_callerid") or "").strip()
    return "" if caller_id.lower() == UNKNOWN else caller_id


def audit_extra(request: AgiRequest) -> dict[str, str]:
    extra = {key: request.env[key] for key in _AUDIT_KEYS if key in request.env}
    for index, value in enumerate(request.args, start=1):
        extra[f"arg_{index}"] = value
    return extra
