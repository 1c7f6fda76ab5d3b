-- rpoguard data schema v1: what the operator imports and declares. Times are INTEGER microseconds since
-- the Unix epoch (UTC); dates are ISO TEXT. Decisions and refusals live in the audit file (audit/), so
-- that a long import here never holds up a call.

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

-- Every RPO answer ever imported. The decision reads a number's whole history (a handful of rows): the
-- latest answer and the start of its latest registered run (policy/rpo.py).
CREATE TABLE rpo_results (
    id              INTEGER PRIMARY KEY,
    number          TEXT NOT NULL,
    checked_us      INTEGER NOT NULL,
    registered      INTEGER NOT NULL,
    registered_us   INTEGER,
    import_id       INTEGER REFERENCES imports(id),
    UNIQUE (number, checked_us)
);

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
