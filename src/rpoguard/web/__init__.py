"""The compliance console (`rpoguard web`): server-rendered pages for operators and DPOs (docs/console.md)."""

from __future__ import annotations
