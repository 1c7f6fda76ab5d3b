"""`python -m rpoguard.cli`, the same as the `rpoguard` command."""

from __future__ import annotations

from rpoguard.cli import run

run()
