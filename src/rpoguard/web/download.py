"""Downloads written as they are read: a CSV of millions of rows goes out in chunks, each sent before the
next rows are read (the client's pace holds the reading back), never built whole in memory."""

from __future__ import annotations

import io
from collections.abc import AsyncIterable, AsyncIterator
from typing import TypeVar

from aiohttp import web

T = TypeVar("T")
# What is gathered before a write: big enough to keep the number of writes low, small enough to stay small.
FLUSH_BYTES = 1 << 16


class Download:
    """A text download: `out` is the file-like object the CLI's writers write to; `tap` wraps the rows they
    read so that what they wrote so far is sent before the next row is read."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.out = io.StringIO()

    async def flush(self, at_least: int = 0) -> None:
        if self.out.tell() > at_least:
            data = self.out.getvalue().encode("utf-8")
            self.out.seek(0)
            self.out.truncate()
            await self.response.write(data)

    async def tap(self, rows: AsyncIterable[T]) -> AsyncIterator[T]:
        async for row in rows:
            yield row
            await self.flush(FLUSH_BYTES)

    async def finish(self) -> web.StreamResponse:
        await self.flush()
        await self.response.write_eof()
        return self.response


async def start_download(request: web.Request, filename: str, content_type: str = "text/csv") -> Download:
    """Send the headers of an attachment named `filename` (ASCII only: a principal's id, a date)."""
    response = web.StreamResponse(headers={
        "Content-Type": f"{content_type}; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{filename}"',
        # Personal data (numbers): never cached, and named only by the server's own headers.
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    })
    await response.prepare(request)
    return Download(response)
