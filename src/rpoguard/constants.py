"""Every name that crosses a boundary: reason codes, decisions, bases, channel variables.

These strings are public contract (docs/architecture.md §3, §4): scripts, dialplans and auditors match on
them, so they live in one module and are never spelled out anywhere else.
"""

from __future__ import annotations

from typing import Final

# Decisions as printed by the CLI (JSON) and stored in the audit log.
ALLOW: Final = "allow"
BLOCK: Final = "block"

# Decisions as set in the channel variable RPOGUARD_DECISION.
CHANNEL_ALLOW: Final = "ALLOW"
CHANNEL_BLOCK: Final = "BLOCK"

# Reason codes, in the order of the decision table (docs/architecture.md §3).
INVALID_NUMBER: Final = "invalid_number"
FOREIGN_NUMBER: Final = "foreign_number"
UNSUPPORTED_NUMBER_TYPE: Final = "unsupported_number_type"
UNKNOWN_CAMPAIGN: Final = "unknown_campaign"
OPTOUT: Final = "optout"
RPO_NOT_CHECKED: Final = "rpo_not_checked"
RPO_EXPIRED: Final = "rpo_expired"
RPO_REGISTERED: Final = "rpo_registered"
UNLISTED_NO_CONSENT: Final = "unlisted_no_consent"
AUTOMATED_NO_CONSENT: Final = "automated_no_consent"
OUTSIDE_HOURS: Final = "outside_hours"
CALLER_ID_INVALID: Final = "caller_id_invalid"
ATTEMPT_LIMIT: Final = "attempt_limit"
ENGINE_ERROR: Final = "engine_error"

REASON_CODES: Final = (
    INVALID_NUMBER,
    FOREIGN_NUMBER,
    UNSUPPORTED_NUMBER_TYPE,
    UNKNOWN_CAMPAIGN,
    OPTOUT,
    RPO_NOT_CHECKED,
    RPO_EXPIRED,
    RPO_REGISTERED,
    UNLISTED_NO_CONSENT,
    AUTOMATED_NO_CONSENT,
    OUTSIDE_HOURS,
    CALLER_ID_INVALID,
    ATTEMPT_LIMIT,
    ENGINE_ERROR,
)

# One sentence per code, for people: the CLI prints it next to the code.
REASON_TEXT: Final = {
    INVALID_NUMBER: "not a valid telephone number",
    FOREIGN_NUMBER: "not an Italian number; rpoguard only proves compliance for Italian numbers",
    UNSUPPORTED_NUMBER_TYPE: "an Italian number that is neither fixed nor mobile (toll-free, premium, VoIP...)",
    UNKNOWN_CAMPAIGN: "the campaign is not configured, so its principal and rules are unknown",
    OPTOUT: "the person refused further calls (in-call refusal or opt-out on record)",
    RPO_NOT_CHECKED: "no RPO answer obtained by this campaign's principal for this number (answers belong to the "
                     "data controller that consulted the RPO): submit it to the Registro Pubblico delle Opposizioni",
    # {validity_days}: the configured validity ([policy] rpo_validity_days), filled in by reason_text().
    RPO_EXPIRED: "the RPO result is older than its validity ({validity_days} days): check the number again",
    RPO_REGISTERED: "registered in the RPO and no consent to this principal given after registration, nor one "
                    "given within a contract running or ended at most 30 days ago",
    UNLISTED_NO_CONSENT: "not in a public directory and no valid consent for this principal (opt-in)",
    AUTOMATED_NO_CONSENT: "automated campaign without a consent that covers automated calls",
    OUTSIDE_HOURS: "outside the allowed calling hours (Europe/Rome)",
    CALLER_ID_INVALID: "the caller ID is withheld or not one the principal declared",
    ATTEMPT_LIMIT: "the campaign's attempt cap for this number is reached",
    ENGINE_ERROR: "rpoguard could not prove the call compliant (internal or storage error)",
}

# Where each reason comes from (docs/law.md gives the text of each source): the console shows it beside the
# reason, for a complaint file or the Garante.
REASON_LAW: Final = {
    INVALID_NUMBER: "DPR 26/2022 art. 7 c.1 (the register covers national numbers); docs/law.md §10",
    FOREIGN_NUMBER: "DPR 26/2022 art. 7 c.1 (the register covers national numbers); docs/law.md §10",
    UNSUPPORTED_NUMBER_TYPE: "DPR 26/2022 art. 7 c.1; docs/law.md §10",
    UNKNOWN_CAMPAIGN: "DPR 26/2022 art. 8 (each data controller consults for itself); docs/law.md §2",
    OPTOUT: "Codice privacy art. 130; Garante, Edison Energia 2022 (a refusal is final at once); docs/law.md §5",
    RPO_NOT_CHECKED: "DPR 26/2022 art. 8 c.2-3 (consult before every campaign, own list only); docs/law.md §1-2",
    RPO_EXPIRED: "DPR 26/2022 art. 8 c.2 (an answer is valid 15 days); docs/law.md §1",
    RPO_REGISTERED: "L. 5/2018 art. 1; DPR 26/2022 art. 7 c.7 (registration revokes earlier consents); "
                    "docs/law.md §4",
    UNLISTED_NO_CONSENT: "Codice privacy art. 130 c.3-bis; Codice di condotta art. 10 c.2 (opt-in); docs/law.md §3",
    AUTOMATED_NO_CONSENT: "Codice privacy art. 130 c.1; DL 139/2021 art. 9 c.8; docs/law.md §6",
    OUTSIDE_HOURS: "Codice di condotta per il telemarketing (Garante provv. 148/2024); docs/law.md §7",
    CALLER_ID_INVALID: "L. 5/2018 art. 2; Codice di condotta art. 7; docs/law.md §8",
    ATTEMPT_LIMIT: "the campaign's own cap (no statutory cap); docs/law.md §9",
    ENGINE_ERROR: "fail closed: a call that cannot be proven compliant is not made; docs/law.md",
}


def reason_text(code: str, validity_days: int) -> str:
    """REASON_TEXT for people, with the validity this installation enforces (it may be shorter than 15)."""
    return REASON_TEXT[code].format(validity_days=validity_days)


# Legal basis an ALLOW rests on.
BASIS_LISTED: Final = "listed"
BASIS_CONSENT: Final = "consent"
BASIS_CONTRACT: Final = "contract"
# Where each basis comes from, as REASON_LAW.
BASIS_LAW: Final = {
    BASIS_LISTED: "Codice privacy art. 130 c.3-bis (a directory number not on the register: opt-out); docs/law.md §3",
    BASIS_CONSENT: "consent to this principal given after registration or, unlisted, the opt-in; docs/law.md §3-4",
    BASIS_CONTRACT: "L. 5/2018 art. 1 (a consent given within a contract running or ended at most 30 days ago); "
                    "docs/law.md §4",
}

# Line types reported by the number normaliser.
LINE_FIXED: Final = "fixed"
LINE_MOBILE: Final = "mobile"

# Channel variables the gate sets (docs/architecture.md §4).
VAR_DECISION: Final = "RPOGUARD_DECISION"
VAR_REASON: Final = "RPOGUARD_REASON"
VAR_REASONS: Final = "RPOGUARD_REASONS"
VAR_NUMBER: Final = "RPOGUARD_NUMBER"
VAR_ID: Final = "RPOGUARD_ID"
# Set by the optout route once the refusal is stored; the dialplan logs an error without it.
VAR_OPTOUT: Final = "RPOGUARD_OPTOUT"
OPTOUT_OK: Final = "OK"

# Where a decision or an opt-out came from, as recorded in the audit log.
SOURCE_CLI: Final = "cli"
SOURCE_FASTAGI: Final = "fastagi"
SOURCE_AGI: Final = "agi"
SOURCE_ARI: Final = "ari"
SOURCE_IMPORT: Final = "import"
# A fact recorded through the compliance console (rpoguard web), with the user in console_changes.
SOURCE_CONSOLE: Final = "console"

TIMEZONE: Final = "Europe/Rome"
DEFAULT_RPO_VALIDITY_DAYS: Final = 15
CONTRACT_GRACE_DAYS: Final = 30
DEFAULT_FASTAGI_HOST: Final = "127.0.0.1"
DEFAULT_FASTAGI_PORT: Final = 4573

# Bypass findings (docs/bypass.md): a call that reached a carrier without an ALLOW for it, and the periods
# nobody watched. Stored by `watch`, printed by `reconcile`, listed by `findings list`.
FINDING_BYPASS: Final = "bypass"
FINDING_NOT_WATCHED: Final = "not_watched"
# Why a trunk leg is a bypass, most specific first: what the best candidate decision lacked.
BYPASS_NO_DECISION: Final = "no_decision"
BYPASS_NUMBER_UNKNOWN: Final = "number_unknown"
BYPASS_OTHER_NUMBER: Final = "other_number"
BYPASS_DECISION_STALE: Final = "decision_stale"
BYPASS_DECISION_USED: Final = "decision_used"
BYPASS_TEXT: Final = {
    BYPASS_NO_DECISION: "no ALLOW decision for this call: the route did not ask the gate",
    BYPASS_NUMBER_UNKNOWN: "the number the trunk dialled cannot be read, so it cannot be matched to the call's "
                           "decision",
    BYPASS_OTHER_NUMBER: "the call's ALLOW was for another number",
    BYPASS_DECISION_STALE: "the call's ALLOW for this number was not made shortly before the trunk was dialled",
    BYPASS_DECISION_USED: "the call's ALLOW for this number already covered another trunk leg",
}

# `dialplan audit` (docs/bypass.md): the subroutines that ask the gate (dialplan/rpoguard.conf), and why a
# priority is a finding.
GATE_CONTEXT: Final = "rpoguard-check"
GATE_CONTEXT_ARI: Final = "rpoguard-check-ari"
DIALPLAN_UNGATED: Final = "ungated_trunk_dial"
DIALPLAN_TARGET_UNKNOWN: Final = "unknown_dial_target"
DIALPLAN_NOT_VISIBLE: Final = "dialplan_not_visible"
DIALPLAN_TEXT: Final = {
    DIALPLAN_UNGATED: "dials a trunk, and the gate may not have run: no earlier priority of this extension runs "
                      "it, or a jump goes past it",
    DIALPLAN_TARGET_UNKNOWN: "dials a target built at run time, which may be a trunk, and the gate may not have run: "
                             "no earlier priority of this extension runs it, or a jump goes past it",
    DIALPLAN_NOT_VISIBLE: "a switch looks extensions up outside the dialplan (e.g. Realtime), where this audit "
                          "cannot see whether they ask the gate",
}

# -- the console (docs/console.md): users' roles and the changes recorded with their user --------
ROLE_VIEWER: Final = "viewer"  # reads every page
ROLE_OPERATOR: Final = "operator"  # also imports and manages consents, contracts and refusals
ROLE_ADMIN: Final = "admin"  # also manages principals, campaigns and users
ROLES: Final = (ROLE_VIEWER, ROLE_OPERATOR, ROLE_ADMIN)  # in rising order of power
CHANGE_USER_ADD: Final = "user.add"
CHANGE_USER_PASSWD: Final = "user.passwd"  # noqa: S105 -- an action's name, not a password
CHANGE_USER_DISABLE: Final = "user.disable"
CHANGE_USER_ENABLE: Final = "user.enable"
CHANGE_USER_ROLE: Final = "user.role"
CHANGE_PRINCIPAL_ADD: Final = "principal.add"
CHANGE_CAMPAIGN_ADD: Final = "campaign.add"
CHANGE_CONSENT_ADD: Final = "consent.add"
CHANGE_CONSENT_REVOKE: Final = "consent.revoke"
CHANGE_CONTRACT_ADD: Final = "contract.add"
CHANGE_OPTOUT_ADD: Final = "optout.add"
CHANGE_IMPORT: Final = "import"
CHANGE_AUDIT_VERIFY: Final = "audit.verify"

# Console imports (web/jobs.py): the kinds of file an operator uploads (each the CLI's import of that kind),
# and the console changes a finished upload is recorded as.
KIND_REGISTRY: Final = "registry"
KIND_REGISTRY_LISTS: Final = "registry-lists"
KIND_CONSENTS: Final = "consents"
KIND_CONTRACTS: Final = "contracts"
KIND_OPTOUTS: Final = "optouts"
KIND_DIRECTORY: Final = "directory"
IMPORT_KINDS: Final = (KIND_REGISTRY, KIND_REGISTRY_LISTS, KIND_CONSENTS, KIND_CONTRACTS, KIND_OPTOUTS,
                       KIND_DIRECTORY)
CHANGE_IMPORT_FAILED: Final = "import.failed"

# `registry due --check` (freshness alarms): each principal's or campaign's line starts with one of these.
FRESHNESS_OK: Final = "OK"
FRESHNESS_ALARM: Final = "ALARM"

# systemd's notification protocol (sdnotify.py, sd_notify(3)): the variables systemd sets for the service.
ENV_NOTIFY_SOCKET: Final = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC: Final = "WATCHDOG_USEC"
ENV_WATCHDOG_PID: Final = "WATCHDOG_PID"

# `--log-format`: lines for a person (the default), or one JSON object per line for a log shipper.
LOG_FORMAT_TEXT: Final = "text"
LOG_FORMAT_JSON: Final = "json"
LOG_FORMATS: Final = (LOG_FORMAT_TEXT, LOG_FORMAT_JSON)
