"""What the tests share: fakes of Asterisk (AGI and ARI), a clock, raw database access, PostgreSQL fixtures,
the numbering plan. pytest puts tests/ on the import path (pyproject's ``pythonpath``), so a test writes
``from support.agi_fakes import make_env``; the benchmarks import the same files as ``tests.support``."""
