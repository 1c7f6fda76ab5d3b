"""rpoguard: compliance gate for outbound marketing calls from Asterisk."""

from __future__ import annotations

__version__ = "0.1.0"
