-- rpoguard schema v1. Times are INTEGER microseconds since the Unix epoch (UTC); dates are ISO TEXT.

CREATE TABLE principals (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_us  INTEGER NOT NULL
) WITHOUT ROWID;

-- Caller IDs a principal declared to the ROC / AGCOM (rule 10), in E.164.
CREATE TABLE principal_caller_ids (
    principal_id TEXT NOT NULL REFERENCES principals(id),
    number       TEXT NOT NULL,
    PRIMARY KEY (principal_id, number)
) WITHOUT ROWID;

CREATE TABLE campaigns (
    id            TEXT PRIMARY KEY,
    principal_id  TEXT NOT NULL REFERENCES principals(id),
    automated     INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER,
    per_days      INTEGER,
    created_us    INTEGER NOT NULL
) WITHOUT ROWID;

-- One row per imported file: what a DPO shows to prove where an RPO answer or a listing came from.
CREATE TABLE imports (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,              -- rpo / directory / consent
    file_name    TEXT NOT NULL,
    file_size    INTEGER,
    sha256       TEXT,
    checked_us   INTEGER,                    -- the RPO check time the file answers for
    imported_us  INTEGER NOT NULL,
    rows_read    INTEGER NOT NULL DEFAULT 0,
    rows_stored  INTEGER NOT NULL DEFAULT 0,
    rows_rejected INTEGER NOT NULL DEFAULT 0,
    detail       TEXT                        -- JSON: counts by status etc.
);

-- Every RPO answer ever imported (the history the registration bound is derived from).
CREATE TABLE rpo_results (
    id              INTEGER PRIMARY KEY,
    number          TEXT NOT NULL,
    checked_us      INTEGER NOT NULL,
    registered      INTEGER NOT NULL,
    registered_us   INTEGER,
    import_id       INTEGER REFERENCES imports(id),
    UNIQUE (number, checked_us)
);

-- The latest answer per number, kept by the importer so that a call costs one primary-key probe.
CREATE TABLE rpo_current (
    number          TEXT PRIMARY KEY,
    result_id       INTEGER NOT NULL,
    checked_us      INTEGER NOT NULL,
    registered      INTEGER NOT NULL,
    registered_us   INTEGER,
    import_id       INTEGER,
    -- first check of the current unbroken run of "registered" answers (NULL when not registered now)
    run_start_us    INTEGER,
    -- upper bound of the latest registration ever seen (see architecture.md §3)
    bound_us        INTEGER
) WITHOUT ROWID;

CREATE TABLE directory (
    number      TEXT PRIMARY KEY,
    import_id   INTEGER REFERENCES imports(id),
    listed_us   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE consents (
    id            INTEGER PRIMARY KEY,
    number        TEXT NOT NULL,
    principal_id  TEXT NOT NULL,
    given_us      INTEGER NOT NULL,
    evidence      TEXT NOT NULL CHECK (length(evidence) > 0),
    purpose       TEXT,
    automated     INTEGER NOT NULL DEFAULT 0,
    expires_us    INTEGER,
    revoked_us    INTEGER,
    import_id     INTEGER REFERENCES imports(id),
    created_us    INTEGER NOT NULL,
    UNIQUE (number, principal_id, given_us, evidence)
);
CREATE INDEX consents_by_number ON consents (number, principal_id);

CREATE TABLE contracts (
    id            INTEGER PRIMARY KEY,
    number        TEXT NOT NULL,
    principal_id  TEXT NOT NULL,
    start_date    TEXT NOT NULL,
    end_date      TEXT,
    created_us    INTEGER NOT NULL,
    UNIQUE (number, principal_id, start_date)
);
CREATE INDEX contracts_by_number ON contracts (number, principal_id);

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
-- Attempt caps count ALLOW decisions per number and principal in a window: one range probe.
CREATE INDEX audit_allows ON audit_log (number, principal_id, ts_us) WHERE decision = 'allow';

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
