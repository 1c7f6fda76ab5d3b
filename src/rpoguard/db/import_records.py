"""The record every import leaves (tables imports and import_files), the same on both backends: whether a
file is a repeat, the import's row and its files, and the counts written when it commits. Each store runs
these inside the import's own transaction, so a failed import leaves no record either."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rpoguard.db.rows import opt_us
from rpoguard.db.store import ImportMeta, ImportSummary
from rpoguard.timeutil import to_us


def repeat_sql(same: str, replaced: str) -> str:
    """The earlier import of the same file, if it still stands. `same`: the backend's NULL-safe equality;
    `replaced`: its test that an import's detail says it ended listings ('removed' before schema 2)."""
    return ("SELECT id, rows_read, rows_stored, rows_rejected, detail FROM imports"
            # The same answer file obtained by another principal is another principal's answer.
            f" WHERE kind = :kind AND sha256 = :sha256 AND checked_us {same} :checked"
            f" AND principal_id {same} :principal"
            # A replacing import since then undid it: then it is no repeat.
            f" AND id > (SELECT coalesce(max(id), 0) FROM imports WHERE kind = :kind AND {replaced})"
            " ORDER BY id LIMIT 1")


def is_repeatable(meta: ImportMeta, additive: bool) -> bool:
    """Only an additive import of a known file can be skipped as a repeat: a replacing one must replace
    again."""
    return bool(meta.sha256) and additive


def repeat_params(meta: ImportMeta) -> dict[str, Any]:
    return {"kind": meta.kind, "sha256": meta.sha256, "checked": opt_us(meta.checked_at),
            "principal": meta.principal_id}


def repeat_summary(row: Sequence[Any], meta: ImportMeta) -> ImportSummary:
    """What the earlier import of the same file stored, for an import skipped as its repeat."""
    import_id, rows_read, rows_stored, rows_rejected, detail = row
    return ImportSummary(import_id, rows_read, rows_stored, rows_rejected, json.loads(detail) if detail else {},
                         already_imported=True, files=meta.input_files())


INSERT_IMPORT_SQL = ("INSERT INTO imports (kind, file_name, file_size, sha256, checked_us, principal_id, imported_us)"
                     " VALUES (:kind, :file_name, :file_size, :sha256, :checked, :principal, :imported)")


def import_params(meta: ImportMeta) -> dict[str, Any]:
    return {"kind": meta.kind, "file_name": meta.file_name, "file_size": meta.file_size, "sha256": meta.sha256,
            "checked": opt_us(meta.checked_at), "principal": meta.principal_id,
            "imported": to_us(datetime.now().astimezone())}


INSERT_FILE_SQL = ("INSERT INTO import_files (import_id, position, role, file_name, file_size, sha256)"
                   " VALUES (:import, :position, :role, :name, :size, :sha256)")


def file_params(import_id: int, meta: ImportMeta) -> list[dict[str, Any]]:
    """Each input file of the import, in its order."""
    return [{"import": import_id, "position": position, "role": f.role, "name": f.name, "size": f.size,
             "sha256": f.sha256} for position, f in enumerate(meta.input_files(), start=1)]


FINISH_SQL = ("UPDATE imports SET rows_read = :read, rows_stored = :stored, rows_rejected = :rejected,"
              " detail = :detail WHERE id = :import")


def finish_params(summary: ImportSummary, meta: ImportMeta) -> dict[str, Any]:
    """Complete the summary (its files, the rows the reader and the store rejected) and give the counts to
    record with the import."""
    summary.files = meta.input_files()
    summary.rows_rejected = len(meta.rejected)
    if not summary.rows_read:
        summary.rows_read = summary.rows_stored + summary.detail.get("duplicates", 0)
    summary.rows_read += summary.rows_rejected
    return {"read": summary.rows_read, "stored": summary.rows_stored, "rejected": summary.rows_rejected,
            "detail": json.dumps(summary.detail), "import": summary.import_id}
