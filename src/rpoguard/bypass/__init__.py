"""Proving that no call bypassed the gate: trunk legs matched to ALLOW decisions, live (watch), after the
fact (reconcile), and the dialplan read for routes that never ask (dialplan audit). docs/bypass.md."""
