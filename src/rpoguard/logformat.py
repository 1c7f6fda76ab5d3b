"""`--log-format json`: one JSON object per line for log shippers, with the same content as the text lines."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TextIO

from rpoguard.constants import LOG_FORMAT_JSON
from rpoguard.numbers import redact


class JsonFormatter(logging.Formatter):
    """{"time", "level", "logger", "message"[, "exception"]}: time in ISO 8601 UTC. The message is the one
    the text format prints (numbers already masked where it is logged); an exception's text is masked here
    too, since an exception may quote the number it failed on."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        return json.dumps(entry, ensure_ascii=False)


def configure(*, verbose: bool, log_format: str, stream: TextIO) -> None:
    """The root logger for a command: WARNING and up (INFO with -v) on `stream`, in the chosen format."""
    handler = logging.StreamHandler(stream)
    if log_format == LOG_FORMAT_JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])
