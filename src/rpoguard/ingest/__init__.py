"""Importers: RPO answers, public-directory listings, consents; and the batch scrub of campaign lists."""

from __future__ import annotations
