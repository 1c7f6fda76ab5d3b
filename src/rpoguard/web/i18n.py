"""The console's words in Italian (the default: its users are Italian compliance staff) and English.

One entry per key: (Italian, English). A key missing here shows as itself, and tests/unit/test_web_i18n.py
fails on any key a template uses that is missing in either language."""

from __future__ import annotations

from typing import Final

from rpoguard.constants import (
    ATTEMPT_LIMIT,
    AUTOMATED_NO_CONSENT,
    CALLER_ID_INVALID,
    ENGINE_ERROR,
    FOREIGN_NUMBER,
    INVALID_NUMBER,
    OPTOUT,
    OUTSIDE_HOURS,
    RPO_EXPIRED,
    RPO_NOT_CHECKED,
    RPO_REGISTERED,
    UNKNOWN_CAMPAIGN,
    UNLISTED_NO_CONSENT,
    UNSUPPORTED_NUMBER_TYPE,
)

LANGUAGES: Final = ("it", "en")
DEFAULT_LANGUAGE: Final = "it"
LANG_COOKIE: Final = "rpoguard_lang"

CATALOGUE: Final[dict[str, tuple[str, str]]] = {
    # the frame of every page
    "app.title": ("rpoguard: console di conformità", "rpoguard: compliance console"),
    "nav.overview": ("Panoramica", "Overview"),
    "nav.decisions": ("Decisioni", "Decisions"),
    "nav.imports": ("Importazioni", "Imports"),
    "nav.due": ("Da verificare nel RPO", "Registry due"),
    "nav.audit": ("Registro", "Audit"),
    "nav.principals": ("Titolari e campagne", "Principals and campaigns"),
    "nav.users": ("Utenti", "Users"),
    "nav.search": ("Cerca numero", "Search number"),
    "nav.search_placeholder": ("es. 06 4567 8901", "e.g. 06 4567 8901"),
    "nav.logout": ("Esci", "Log out"),
    "nav.language": ("Lingua", "Language"),
    "role.viewer": ("lettore", "viewer"),
    "role.operator": ("operatore", "operator"),
    "role.admin": ("amministratore", "admin"),
    "times.note": ("Orari in Europe/Rome", "Times in Europe/Rome"),
    # login
    "login.title": ("Accesso", "Log in"),
    "login.username": ("Nome utente", "User name"),
    "login.password": ("Password", "Password"),
    "login.submit": ("Accedi", "Log in"),
    "login.failed": ("Nome utente o password errati.", "Wrong user name or password."),
    "login.throttled": ("Troppi tentativi falliti: riprova tra {minutes} minuti.",
                        "Too many failed attempts: try again in {minutes} minutes."),
    "login.expired": ("La sessione è scaduta: accedi di nuovo.", "Your session expired: log in again."),
    # errors
    "error.title": ("Errore", "Error"),
    "error.403": ("Non hai il ruolo necessario per questa azione.", "Your role does not allow this."),
    "error.csrf": ("Modulo scaduto o non valido: ricarica la pagina e riprova.",
                   "The form expired or is not valid: reload the page and try again."),
    "error.404": ("Pagina non trovata.", "Page not found."),
    "error.413": ("File troppo grande.", "File too large."),
    "error.503": ("Il database non risponde: riprova tra poco. Nessuna chiamata viene autorizzata nel frattempo.",
                  "The database does not answer: try again shortly. No call is allowed meanwhile."),
    "error.500": ("Errore interno: il dettaglio è nel log del servizio.",
                  "Internal error: the service's log has the details."),
    "error.back": ("Torna alla panoramica", "Back to the overview"),
    # overview
    "overview.title": ("Panoramica", "Overview"),
    "overview.today": ("Oggi", "Today"),
    "overview.week": ("Ultimi 7 giorni", "Last 7 days"),
    "overview.allowed": ("consentite", "allowed"),
    "overview.blocked": ("bloccate", "blocked"),
    "overview.chart": ("Decisioni per ora, ultime 48 ore", "Decisions per hour, last 48 hours"),
    "overview.blocks_by_reason": ("Blocchi per motivo (7 giorni)", "Blocks by reason (7 days)"),
    "overview.freshness": ("Validità delle risposte RPO per titolare", "RPO answer freshness per principal"),
    "overview.expiring_in": ("scadono entro {days} g", "expire within {days} d"),
    "overview.numbers": ("numeri con risposta", "numbers with an answer"),
    "overview.expired": ("scadute", "expired"),
    "overview.without": ("senza risposta valida", "without a valid answer"),
    "overview.counting": ("conteggio in corso…", "counting…"),
    "overview.as_of": ("aggiornato alle {time}", "as of {time}"),
    "overview.latest_imports": ("Ultime importazioni", "Latest imports"),
    "overview.audit_state": ("Stato del registro delle decisioni", "The decision log's state"),
    "overview.decisions_total": ("decisioni registrate", "decisions recorded"),
    "overview.last_verified": ("ultima verifica", "last verified"),
    "overview.never_verified": ("non ancora verificato da questa console", "not yet verified from this console"),
    "overview.anchors": ("ancore", "anchors"),
    "overview.no_anchor": ("nessun file di ancore configurato", "no anchor file configured"),
    "overview.no_data": ("nessun dato", "no data"),
    # common words
    "word.reason": ("Motivo", "Reason"),
    "word.reasons": ("Motivi", "Reasons"),
    "word.count": ("Numero", "Count"),
    "word.time": ("Ora", "Time"),
    "word.decision": ("Decisione", "Decision"),
    "word.allow": ("consentita", "allow"),
    "word.block": ("bloccata", "block"),
    "word.basis": ("Base giuridica", "Legal basis"),
    "word.source": ("Fonte", "Source"),
    "word.law": ("Norma", "Law"),
    "word.campaign": ("Campagna", "Campaign"),
    "word.principal": ("Titolare", "Principal"),
    "word.number": ("Numero", "Number"),
    "word.dialled": ("Composto", "Dialled"),
    "word.caller_id": ("ID chiamante", "Caller ID"),
    "word.id": ("ID", "ID"),
    "word.kind": ("Tipo", "Kind"),
    "word.file": ("File", "File"),
    "word.rows": ("Righe", "Rows"),
    "word.stored": ("salvate", "stored"),
    "word.rejected": ("scartate", "rejected"),
    "word.when": ("Quando", "When"),
    "word.detail": ("Dettaglio", "Detail"),
    "word.name": ("Nome", "Name"),
    "word.role": ("Ruolo", "Role"),
    "word.state": ("Stato", "State"),
    "word.from": ("Da", "From"),
    "word.to": ("A", "To"),
    "word.search": ("Cerca", "Search"),
    "word.any": ("tutti", "any"),
    "word.next": ("Pagina successiva", "Next page"),
    "word.first": ("Prima pagina", "First page"),
    "word.none": ("nessuno", "none"),
    "word.yes": ("sì", "yes"),
    "word.no": ("no", "no"),
    "word.save": ("Salva", "Save"),
    "word.add": ("Aggiungi", "Add"),
    "word.user": ("Utente", "User"),
    "word.disabled": ("disattivato", "disabled"),
    "word.active": ("attivo", "active"),
    "word.automated": ("automatizzata", "automated"),
    "word.caller_ids": ("ID chiamante dichiarati", "Declared caller IDs"),
    "word.cap": ("Limite tentativi", "Attempt cap"),
    "word.created": ("Creato", "Created"),
    "word.changed": ("Modificato", "Changed"),
    "word.export_csv": ("Esporta CSV", "Export CSV"),
    "word.export_pdf": ("Esporta PDF", "Export PDF"),
    # number page
    "number.title": ("Numero {number}", "Number {number}"),
    "number.invalid": ("«{text}» non è un numero italiano valido: {why}",
                       "'{text}' is not a valid Italian number: {why}"),
    "number.line": ("Tipo di linea", "Line type"),
    "number.timeline": ("Cronologia delle prove", "Evidence timeline"),
    "number.decisions": ("Decisioni per questo numero", "Decisions for this number"),
    "number.no_events": ("Nessun fatto registrato per questo numero.", "No fact recorded for this number."),
    "number.no_decisions": ("Nessuna decisione per questo numero.", "No decision for this number."),
    "number.more_decisions": ("Mostrate le ultime {n} decisioni: l'esportazione CSV le contiene tutte.",
                              "The latest {n} decisions are shown: the CSV export holds them all."),
    "number.forms": ("Registra un fatto", "Record a fact"),
    "event.answer": ("Risposta RPO", "RPO answer"),
    "event.listing": ("Elenco pubblico", "Public directory"),
    "event.consent": ("Consenso", "Consent"),
    "event.revocation": ("Revoca del consenso", "Consent revoked"),
    "event.contract": ("Contratto", "Contract"),
    "event.optout": ("Opposizione / rifiuto", "Refusal"),
    "event.note": ("Nota", "Note"),
    "event.registered": ("iscritto al RPO", "registered in the RPO"),
    "event.not_registered": ("non iscritto al RPO", "not registered in the RPO"),
    "event.decision": ("Decisione", "Decision"),
    # forms on the number page
    "form.consent": ("Nuovo consenso", "New consent"),
    "form.given_at": ("Dato il", "Given at"),
    "form.evidence": ("Riferimento della prova", "Evidence reference"),
    "form.expires_at": ("Scade il", "Expires at"),
    "form.automated": ("Copre chiamate automatizzate", "Covers automated calls"),
    "form.revoke": ("Revoca i consensi", "Revoke consents"),
    "form.at": ("Il", "At"),
    "form.contract": ("Nuovo contratto", "New contract"),
    "form.start": ("Inizio", "Start"),
    "form.end": ("Fine", "End"),
    "form.optout": ("Registra un rifiuto («non chiamatemi più»)", "Record a refusal (\"do not call me again\")"),
    "form.all_principals": ("tutti i titolari", "every principal"),
    "form.reference": ("Riferimento", "Reference"),
    "form.saved": ("Salvato.", "Saved."),
    "form.error": ("Non salvato: {why}", "Not saved: {why}"),
    # decisions page
    "decisions.title": ("Decisioni", "Decisions"),
    "decisions.none": ("Nessuna decisione corrisponde.", "No decision matches."),
    "decisions.filters": ("Filtri", "Filters"),
    # principals and campaigns
    "principals.title": ("Titolari e campagne", "Principals and campaigns"),
    "principals.principals": ("Titolari del trattamento", "Principals (data controllers)"),
    "principals.campaigns": ("Campagne", "Campaigns"),
    "principals.add_principal": ("Nuovo titolare", "New principal"),
    "principals.add_campaign": ("Nuova campagna", "New campaign"),
    "principals.max_attempts": ("Tentativi massimi", "Max attempts"),
    "principals.per_days": ("in giorni", "per days"),
    # users
    "users.title": ("Utenti della console", "Console users"),
    "users.add": ("Nuovo utente", "New user"),
    "users.password": ("Password (almeno 12 caratteri)", "Password (12 characters or more)"),
    "users.disable": ("Disattiva", "Disable"),
    "users.enable": ("Riattiva", "Enable"),
    "users.changes": ("Modifiche fatte dalla console", "Changes made through the console"),
    "users.action": ("Azione", "Action"),
    "users.target": ("Oggetto", "Target"),
}

# The reasons' sentences in Italian; English is constants.REASON_TEXT itself.
REASON_TEXT_IT: Final = {
    INVALID_NUMBER: "non è un numero di telefono valido",
    FOREIGN_NUMBER: "non è un numero italiano; rpoguard prova la conformità solo per numeri italiani",
    UNSUPPORTED_NUMBER_TYPE: "numero italiano né fisso né mobile (numero verde, a tariffa, VoIP...)",
    UNKNOWN_CAMPAIGN: "la campagna non è configurata: titolare e regole sono sconosciuti",
    OPTOUT: "la persona ha rifiutato altre chiamate (rifiuto in chiamata o opposizione registrata)",
    RPO_NOT_CHECKED: "nessuna risposta del RPO ottenuta dal titolare di questa campagna per questo numero: "
                       "va sottoposto al Registro Pubblico delle Opposizioni",
    RPO_EXPIRED: "la risposta del RPO è più vecchia della sua validità ({validity_days} giorni): "
                   "va verificata di nuovo",
    RPO_REGISTERED: "iscritto al RPO e senza un consenso a questo titolare dato dopo l'iscrizione, né uno dato "
                      "nell'ambito di un contratto in corso o cessato da non più di 30 giorni",
    UNLISTED_NO_CONSENT: "non presente in un elenco pubblico e senza un consenso valido per questo titolare "
                           "(opt-in)",
    AUTOMATED_NO_CONSENT: "campagna automatizzata senza un consenso che copra le chiamate automatizzate",
    OUTSIDE_HOURS: "fuori dalle fasce orarie consentite (Europe/Rome)",
    CALLER_ID_INVALID: "l'ID chiamante è nascosto o non è tra quelli dichiarati dal titolare",
    ATTEMPT_LIMIT: "raggiunto il limite di tentativi della campagna per questo numero",
    ENGINE_ERROR: "rpoguard non ha potuto provare la conformità della chiamata (errore interno o del database)",
}


def translate(key: str, lang: str, **values: object) -> str:
    entry = CATALOGUE.get(key)
    if entry is None:
        return key
    text = entry[0] if lang == "it" else entry[1]
    return text.format(**values) if values else text


def pick_language(cookie: str | None) -> str:
    """The person's choice (the cookie the language links set), else Italian: the console's users are
    Italian compliance staff, and a browser's English does not say otherwise."""
    return cookie if cookie in LANGUAGES else DEFAULT_LANGUAGE
