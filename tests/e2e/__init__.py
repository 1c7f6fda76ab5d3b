"""End-to-end tests: a real Asterisk 22 and a SIPp carrier in a Debian sid chroot."""

from __future__ import annotations
