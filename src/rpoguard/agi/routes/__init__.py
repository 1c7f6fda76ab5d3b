"""The routes a FastAGI script path or classic AGI invocation can name; one route per module."""

from __future__ import annotations

from rpoguard.agi.protocol import Route
from rpoguard.agi.routes.check import ROUTE_CHECK, CheckRoute
from rpoguard.agi.routes.optout import ROUTE_OPTOUT, OptoutRoute
from rpoguard.agi.shared import GateLike

__all__ = ["ROUTE_CHECK", "ROUTE_OPTOUT", "GateLike", "build_routes"]


def build_routes(gate: GateLike) -> dict[str, Route]:
    return {ROUTE_CHECK: CheckRoute(gate), ROUTE_OPTOUT: OptoutRoute(gate)}
