"""Chromium starts under Playwright here and renders a page with text (no console needed)."""

from __future__ import annotations

from typing import Any


def test_chromium_renders_a_page(browser: Any) -> None:
    page = browser.new_page()
    try:
        page.set_content("<html lang='it'><h1>Registro delle opposizioni</h1><script>document.title = 'ok'</script>")
        assert page.inner_text("h1") == "Registro delle opposizioni"
        assert page.title() == "ok"
        # Fonts are installed: the heading has a width (text drawn with no font at all has none).
        assert page.eval_on_selector("h1", "h => h.getBoundingClientRect().width") > 0
    finally:
        page.close()
