"""A number's evidence as a PDF for a complaint file: every fact and decision, oldest first, each decision's
reasons with their legal source, who printed it and when."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF

from rpoguard.constants import BASIS_LAW, REASON_LAW
from rpoguard.db.store import EvidenceItem
from rpoguard.evidence_text import describe
from rpoguard.timeutil import ROME, human
from rpoguard.web.i18n import translate
from rpoguard.web.render import reason_sentence

# Debian's fonts-dejavu-core: every character a name or a reference may hold. Without it, the PDF's built-in
# font covers Latin-1 and anything beyond shows as "?".
UNICODE_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
BUILTIN_FONT = "Helvetica"
KIND_KEYS = {"rpo_answer": "event.answer", "directory_listing": "event.listing",
             "directory_listing_ended": "event.listing", "consent": "event.consent",
             "consent_revoked": "event.revocation", "consent_revoked_again": "event.revocation",
             "contract": "event.contract", "contract_ended": "event.contract",
             "contract_end_corrected": "event.contract", "optout": "event.optout", "decision": "event.decision"}


class _Pdf(FPDF):
    def __init__(self) -> None:
        super().__init__(format="A4")
        if UNICODE_FONT.exists():
            self.add_font("body", fname=str(UNICODE_FONT))
            self.font_name = "body"
            self.unicode = True
        else:
            self.font_name = BUILTIN_FONT
            self.unicode = False
        self.set_auto_page_break(auto=True, margin=15)

    def text_of(self, value: str) -> str:
        return value if self.unicode else value.encode("latin-1", "replace").decode("latin-1")

    def para(self, value: str, size: float = 9, *, gap: float = 1.5) -> None:
        self.set_font(self.font_name, size=size)
        self.multi_cell(0, size * 0.5, self.text_of(value), new_x="LMARGIN", new_y="NEXT")
        self.ln(gap)


def evidence_pdf(number: str, items: list[EvidenceItem], *, generated_by: str, lang: str,
                 validity_days: int) -> bytes:
    pdf = _Pdf()
    pdf.add_page()
    now = datetime.now(UTC).astimezone(ROME)
    pdf.para(f"rpoguard: {translate('number.title', lang, number=number)}", 15, gap=3)
    pdf.para(f"{human(now)} (Europe/Rome) · {translate('word.user', lang)}: {generated_by} · {len(items)} records", 9,
             gap=4)
    for item in items:
        kind = translate(KIND_KEYS.get(item.kind, "event.note"), lang)
        pdf.para(f"{human(item.at)}  {kind}{' · ' + item.principal_id if item.principal_id else ''}", 10, gap=0.5)
        pdf.para(describe(item), 8, gap=0.5)
        if item.kind == "decision":
            for code in item.detail.get("reasons", []):  # type: ignore[union-attr]
                sentence = reason_sentence(str(code), lang, validity_days)
                pdf.para(f"  {code}: {sentence} [{REASON_LAW.get(str(code), '')}]", 8, gap=0.5)
            basis = item.detail.get("basis")
            if basis:
                pdf.para(f"  {translate('word.basis', lang)}: {basis} [{BASIS_LAW.get(str(basis), '')}]", 8, gap=0.5)
        pdf.ln(1.5)
    return bytes(pdf.output())
