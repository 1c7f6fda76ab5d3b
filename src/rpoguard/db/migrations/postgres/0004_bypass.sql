-- rpoguard schema v4 (issue 16): proving that no call bypassed the gate (docs/bypass.md).
-- 1. A decision names the call it was made for (linkedid, passed by the dialplan). Rows written before
--    keep NULL and their old hash (audit.chain_hash leaves linkedid out while it is NULL).
ALTER TABLE audit_log ADD COLUMN linkedid TEXT;

-- 2. What `watch` found: trunk legs no ALLOW covered (bypass) and the periods it could not watch.
CREATE TABLE bypass_findings (
    id            BIGSERIAL PRIMARY KEY,
    kind          TEXT NOT NULL,
    found_us      BIGINT NOT NULL,
    at_us         BIGINT NOT NULL,
    until_us      BIGINT,
    why           TEXT,
    channel       TEXT,
    number        TEXT,
    dialled       TEXT,
    uniqueid      TEXT,
    linkedid      TEXT,
    decision_id   TEXT,
    detail        TEXT NOT NULL,
    source        TEXT NOT NULL,
    hung_up       BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX bypass_findings_by_time ON bypass_findings (at_us);
