"""Driving the compliance console in-process: the real aiohttp app over a real socket (aiohttp's TestServer),
a client with its own cookie jar, and the CSRF token read from the page the way a browser's form carries it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientResponse, CookieJar
from aiohttp.test_utils import TestClient, TestServer

from rpoguard.config import Config
from rpoguard.db.store import Store
from rpoguard.web.app import make_app
from support.aio import Runner

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Page:
    status: int
    url: str
    text: str
    headers: dict[str, str] = field(default_factory=dict)

    def csrf(self) -> str:
        found = CSRF_INPUT.search(self.text)
        assert found, f"no CSRF field on {self.url}"
        return found.group(1)


class ConsoleClient:
    """One browser: a cookie jar, and the last CSRF token a page gave it."""

    def __init__(self, store: Store, config: Config, run: Runner) -> None:
        self.run = run
        self.app = make_app(store, config)

        async def start() -> TestClient[Any, Any]:
            # The cookie jar and the client belong to the test's loop: made on it.
            client: TestClient[Any, Any] = TestClient(TestServer(self.app), cookie_jar=CookieJar(unsafe=True))
            await client.start_server()
            return client

        self.client = run(start())
        self.token = ""

    def close(self) -> None:
        self.run(self.client.close())

    def _page(self, response: ClientResponse, text: str) -> Page:
        page = Page(response.status, str(response.url.path_qs), text, dict(response.headers))
        found = CSRF_INPUT.search(text)
        if found:
            self.token = found.group(1)
        return page

    def get(self, path: str, **kwargs: Any) -> Page:
        async def go() -> Page:
            async with self.client.get(path, **kwargs) as response:
                return self._page(response, await response.text())

        return self.run(go())

    def get_bytes(self, path: str) -> tuple[int, dict[str, str], bytes]:
        async def go() -> tuple[int, dict[str, str], bytes]:
            async with self.client.get(path) as response:
                return response.status, dict(response.headers), await response.read()

        return self.run(go())

    def post(self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True,
             follow: bool = True, **kwargs: Any) -> Page:
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf_token", self.token)

        async def go() -> Page:
            async with self.client.post(path, data=form, allow_redirects=follow, **kwargs) as response:
                return self._page(response, await response.text())

        return self.run(go())

    def login(self, username: str, password: str) -> Page:
        self.get("/login")
        return self.post("/login", {"username": username, "password": password})
