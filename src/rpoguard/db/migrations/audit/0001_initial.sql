-- rpoguard audit schema v1: what happened on calls. Written by the gate on every call, so it is its own
-- file: imports into the data file never hold its write lock.

-- In-call refusals and other opt-outs; principal_id NULL covers every principal.
CREATE TABLE optouts (
    id            INTEGER PRIMARY KEY,
    number        TEXT NOT NULL,
    principal_id  TEXT,
    at_us         INTEGER NOT NULL,
    source        TEXT NOT NULL,
    reference     TEXT,
    created_us    INTEGER NOT NULL
);
CREATE INDEX optouts_by_number ON optouts (number);
-- The same refusal imported twice is stored once.
CREATE UNIQUE INDEX optouts_once ON optouts (number, coalesce(principal_id, ''), at_us, source);

-- The decision log: append-only, hash-chained (audit.py).
CREATE TABLE audit_log (
    seq           INTEGER PRIMARY KEY,
    decision_id   TEXT NOT NULL UNIQUE,
    ts_us         INTEGER NOT NULL,
    number        TEXT,
    raw_number    TEXT NOT NULL,
    campaign_id   TEXT,
    principal_id  TEXT,
    caller_id     TEXT,
    decision      TEXT NOT NULL,
    reasons       TEXT NOT NULL,
    basis         TEXT,
    evidence      TEXT NOT NULL,
    source        TEXT NOT NULL,
    uniqueid      TEXT,
    channel       TEXT,
    prev_hash     TEXT NOT NULL,
    hash          TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit_log (ts_us);
CREATE INDEX audit_by_number ON audit_log (number, ts_us);
-- Attempt caps count ALLOW decisions per number and principal in a window: one range probe.
CREATE INDEX audit_allows ON audit_log (number, principal_id, ts_us) WHERE decision = 'allow';

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
