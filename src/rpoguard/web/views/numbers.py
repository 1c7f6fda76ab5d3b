"""A number's page: every fact the store holds for it (answers with their controller and file, listing
periods, consents, contracts, refusals) and every decision with its reasons, basis and legal source; its
exports for a complaint file; and, for operators, the facts recorded by hand."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from urllib.parse import quote

from aiohttp import web

from rpoguard.constants import (
    BASIS_LAW,
    CHANGE_CONSENT_ADD,
    CHANGE_CONSENT_REVOKE,
    CHANGE_CONTRACT_ADD,
    CHANGE_OPTOUT_ADD,
    REASON_LAW,
    ROLE_OPERATOR,
    ROLE_VIEWER,
    SOURCE_CONSOLE,
)
from rpoguard.db.store import ConsentRecord, EvidenceItem, NotFoundError, RecordConflict
from rpoguard.evidence_text import describe
from rpoguard.ingest import plausible
from rpoguard.numbers import NumberError, normalize
from rpoguard.timeutil import TimeFormatError, iso, parse_date, parse_time, to_us
from rpoguard.web.context import config_of, record_change, redirect, store_of
from rpoguard.web.pdf import evidence_pdf
from rpoguard.web.render import language, render
from rpoguard.web.security import current_user, require, role_rank

log = logging.getLogger(__name__)

# What the page's timeline calls each kind of evidence item (data-kind): the facts by what they are about.
TIMELINE_KINDS = {
    "rpo_answer": "answer", "directory_listing": "listing", "directory_listing_ended": "listing",
    "consent": "consent", "consent_revoked": "consent", "consent_revoked_again": "consent",
    "contract": "contract", "contract_ended": "contract", "contract_end_corrected": "contract",
    "optout": "optout", "decision": "decision",
}
# A number called for years by an unrestricted campaign could have thousands of decisions; the page shows the
# latest ones, the CSV export every one.
DECISIONS_SHOWN = 200


@require(ROLE_VIEWER)
async def search(request: web.Request) -> web.StreamResponse:
    """The search box: any form of number (national first, as an Italian dials it) to its page."""
    text = request.query.get("number", "").strip()
    try:
        number = normalize(text, trunk_prefix="")
    except NumberError as exc:
        return render(request, "number_invalid.html", status=400, text=text, why=str(exc))
    return redirect(f"/numbers/{quote(number.e164)}")


async def _number_of(request: web.Request) -> str:
    text = request.match_info["number"]
    try:
        number = normalize(text, trunk_prefix="")
    except NumberError as exc:
        raise web.HTTPNotFound(text=str(exc)) from None
    if number.e164 != text:
        raise web.HTTPSeeOther(f"/numbers/{quote(number.e164)}")
    return number.e164


@require(ROLE_VIEWER)
async def number_page(request: web.Request) -> web.StreamResponse:
    number = await _number_of(request)
    store = store_of(request)
    items = await store.evidence(number, None)
    decisions = [i for i in items if i.kind == "decision"]
    decisions.reverse()  # newest first in the table
    shown = decisions[:DECISIONS_SHOWN]
    shown_ids = {id(i) for i in shown}
    timeline = [i for i in items if i.kind != "decision" or id(i) in shown_ids]
    line_type = normalize(number, trunk_prefix="").line_type
    principals = [p.id async for p in store.list_principals()]
    user = current_user(request)
    return render(
        request, "number.html", number=number, line_type=line_type,
        timeline=[_event(i) for i in timeline], decisions=[_event(i) for i in shown],
        more_decisions=len(decisions) > DECISIONS_SHOWN, principals=principals,
        can_edit=role_rank(user.role) >= role_rank(ROLE_OPERATOR),
        flash=request.query.get("saved"), error=request.query.get("error"),
        reason_law=REASON_LAW, basis_law=BASIS_LAW, quote=quote,
    )


def _event(item: EvidenceItem) -> dict[str, object]:
    return {"kind": TIMELINE_KINDS.get(item.kind, "note"), "item_kind": item.kind, "at_us": to_us(item.at),
            "principal": item.principal_id, "d": item.detail, "text": describe(item)}


# -- exports for a complaint file -------------------------------------------------------------------------

@require(ROLE_VIEWER)
async def export_csv(request: web.Request) -> web.StreamResponse:
    number = await _number_of(request)
    items = await store_of(request).evidence(number, None)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["time", "kind", "principal", "description", "detail"])
    for item in items:
        writer.writerow([iso(item.at), item.kind, item.principal_id or "", describe(item),
                         json.dumps(item.detail, ensure_ascii=False, sort_keys=True, default=str)])
    return web.Response(body=out.getvalue().encode("utf-8"), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": _attachment(number, "csv")})


@require(ROLE_VIEWER)
async def export_pdf(request: web.Request) -> web.StreamResponse:
    number = await _number_of(request)
    items = await store_of(request).evidence(number, None)
    user = current_user(request)
    pdf = evidence_pdf(number, items, generated_by=user.name, lang=language(request),
                       validity_days=config_of(request).rpo_validity_days)
    return web.Response(body=pdf, content_type="application/pdf",
                        headers={"Content-Disposition": _attachment(number, "pdf")})


def _attachment(number: str, extension: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f'attachment; filename="rpoguard-evidence-{number.lstrip("+")}-{stamp}.{extension}"'


# -- facts recorded by hand (operators) -------------------------------------------------------------------

class FormError(ValueError):
    """A field the person must correct; the message names it."""


FactHandler = Callable[[web.Request, str, "web.MultiDictProxy[str]"], Awaitable[tuple[str, str, dict[str, object]]]]


def _fact_form(handler: FactHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Run one fact form: the change, recorded with its user, then back to the number's page saying what
    happened (a mistake is shown on the page, nothing stored)."""

    @require(ROLE_OPERATOR)
    async def post(request: web.Request) -> web.StreamResponse:
        number = await _number_of(request)
        form = await request.post()
        page = f"/numbers/{quote(number)}"
        try:
            action, summary, detail = await handler(request, number, form)  # type: ignore[arg-type]
        except (FormError, TimeFormatError, plausible.ImplausibleDate, NotFoundError, RecordConflict) as exc:
            return redirect(f"{page}?error={quote(str(exc))}#forms")
        await record_change(request, action, number, detail)
        return redirect(f"{page}?saved={quote(summary)}#timeline")

    return post


def _field(form: web.MultiDictProxy[str], name: str, *, required: bool = True) -> str | None:
    value = str(form.get(name, "")).strip()
    if not value:
        if required:
            raise FormError(f"{name.replace('_', ' ')} is required")
        return None
    return value


def _moment(form: web.MultiDictProxy[str], name: str, *, required: bool = True) -> datetime | None:
    value = _field(form, name, required=required)
    if value is None:
        return None
    # A browser's datetime-local has no offset: Europe/Rome, as everywhere in rpoguard.
    moment = parse_time(value)
    plausible.not_in_future(moment, name.replace("_", " "))
    return moment


def _day(form: web.MultiDictProxy[str], name: str, *, required: bool = True) -> date | None:
    value = _field(form, name, required=required)
    return None if value is None else parse_date(value)


async def _principal(request: web.Request, form: web.MultiDictProxy[str], *, required: bool = True) -> str | None:
    principal = _field(form, "principal", required=required)
    if principal is not None and await store_of(request).get_principal(principal) is None:
        raise FormError(f"principal {principal!r} does not exist")
    return principal


async def _add_consent(request: web.Request, number: str,
                       form: web.MultiDictProxy[str]) -> tuple[str, str, dict[str, object]]:
    principal = await _principal(request, form)
    given = _moment(form, "given_at")
    expires = _moment(form, "expires_at", required=False) if form.get("expires_at") else None
    if expires is not None and given is not None and expires <= given:
        raise FormError("expires at must be after given at")
    record = ConsentRecord(number, str(principal), given, str(_field(form, "evidence")),  # type: ignore[arg-type]
                           form.get("automated") == "on", expires, _field(form, "purpose", required=False))
    consent_id, created = await store_of(request).add_consent(record)
    return CHANGE_CONSENT_ADD, f"consent #{consent_id} {'recorded' if created else 'was already recorded'}", {
        "consent_id": consent_id, "created": created, "principal": principal, "given_at": iso(record.given_at),
        "evidence": record.evidence, "automated": record.automated,
        "expires_at": iso(expires) if expires else None, "purpose": record.purpose}


async def _revoke_consents(request: web.Request, number: str,
                           form: web.MultiDictProxy[str]) -> tuple[str, str, dict[str, object]]:
    principal = str(await _principal(request, form))
    at = _moment(form, "at", required=False) or datetime.now(UTC)
    revocations = await store_of(request).revoke_consents(number, principal, at)
    if not revocations:
        raise FormError(f"no consent of {number} to {principal} was in force at {iso(at)}")
    return CHANGE_CONSENT_REVOKE, f"{len(revocations)} consent(s) revoked", {
        "principal": principal, "at": iso(at),
        "consents": [{"consent_id": r.consent_id, "first": r.first} for r in revocations]}


async def _add_contract(request: web.Request, number: str,
                        form: web.MultiDictProxy[str]) -> tuple[str, str, dict[str, object]]:
    principal = str(await _principal(request, form))
    start = _day(form, "start")
    end = _day(form, "end", required=False)
    if start is None:
        raise FormError("start is required")
    if end is not None and end < start:
        raise FormError("end must not be before start")
    plausible.not_in_future(start, "start")
    outcome = await store_of(request).add_contract(number, principal, start, end)
    return CHANGE_CONTRACT_ADD, f"contract #{outcome.contract_id}: {outcome.outcome}", {
        "contract_id": outcome.contract_id, "outcome": outcome.outcome, "principal": principal,
        "start": start.isoformat(), "end": end.isoformat() if end else None}


async def _add_optout(request: web.Request, number: str,
                      form: web.MultiDictProxy[str]) -> tuple[str, str, dict[str, object]]:
    # No principal: the refusal covers every principal (the reading that never favours a call).
    principal = await _principal(request, form, required=False)
    at = _moment(form, "at", required=False) or datetime.now(UTC)
    reference = _field(form, "reference", required=False) or f"console user {current_user(request).name}"
    optout_id = await store_of(request).add_optout(number, principal, at, SOURCE_CONSOLE, reference)
    return CHANGE_OPTOUT_ADD, f"refusal #{optout_id} recorded", {
        "optout_id": optout_id, "principal": principal, "at": iso(at), "reference": reference}


def routes() -> list[web.RouteDef]:
    return [
        web.get("/numbers", search),
        web.get("/numbers/{number}", number_page),
        web.get("/numbers/{number}/evidence.csv", export_csv),
        web.get("/numbers/{number}/evidence.pdf", export_pdf),
        web.post("/numbers/{number}/consents", _fact_form(_add_consent)),
        web.post("/numbers/{number}/consents/revoke", _fact_form(_revoke_consents)),
        web.post("/numbers/{number}/contracts", _fact_form(_add_contract)),
        web.post("/numbers/{number}/optouts", _fact_form(_add_optout)),
    ]
