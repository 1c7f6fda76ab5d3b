"""The fuzz suite's import path: agi_fakes from tests/integration.

agi_fakes (a fake Asterisk that splits commands exactly as res_agi's parse_args does) lives beside the
integration tests; the fuzz tests import it rather than keep a second copy that could drift from it.
Shared Hypothesis settings are in fuzz_helpers.py (a conftest cannot be imported by name reliably).
"""

from __future__ import annotations

import sys
from pathlib import Path

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
if str(INTEGRATION) not in sys.path:
    sys.path.insert(0, str(INTEGRATION))
