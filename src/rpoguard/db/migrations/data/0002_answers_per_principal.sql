-- rpoguard data schema v2.
-- 1. RPO answers belong to a principal: the data controller that consulted the RPO. A citizen may lift
--    the opposition for some operators only, so two principals may get different answers for one number,
--    and a call for one principal may never rest on another's answer. Answers stored before v2 go to the
--    principal when exactly one exists; otherwise they keep a NULL principal ("controller unknown"): kept
--    as evidence, never read by a decision (the upgrade says how to import them again).
-- 2. Directory listings keep their history: a listing has a period, and a replacing import ends the
--    listings it no longer names instead of deleting them, so a decision can be made as of any moment
--    and the evidence shows every period.

ALTER TABLE imports ADD COLUMN principal_id TEXT REFERENCES principals(id);
UPDATE imports SET principal_id = (SELECT id FROM principals)
 WHERE kind = 'rpo' AND (SELECT count(*) FROM principals) = 1;

-- SQLite cannot change a table's unique key in place: the table is rebuilt, ids kept.
CREATE TABLE rpo_results_v2 (
    id              INTEGER PRIMARY KEY,
    number          TEXT NOT NULL,
    principal_id    TEXT REFERENCES principals(id),
    checked_us      INTEGER NOT NULL,
    registered      INTEGER NOT NULL,
    registered_us   INTEGER,
    import_id       INTEGER REFERENCES imports(id),
    UNIQUE (number, principal_id, checked_us)
);
INSERT INTO rpo_results_v2 (id, number, principal_id, checked_us, registered, registered_us, import_id)
SELECT r.id, r.number, (SELECT id FROM principals WHERE (SELECT count(*) FROM principals) = 1), r.checked_us,
       r.registered, r.registered_us, r.import_id
  FROM rpo_results r ORDER BY r.id;
DROP TABLE rpo_results;
ALTER TABLE rpo_results_v2 RENAME TO rpo_results;

CREATE TABLE listings (
    id          INTEGER PRIMARY KEY,
    number      TEXT NOT NULL,
    import_id   INTEGER REFERENCES imports(id),  -- the file that listed it
    listed_us   INTEGER NOT NULL,
    ended_us    INTEGER,                         -- NULL while the number is listed
    ended_by    INTEGER REFERENCES imports(id)   -- the replacing file that no longer named it
);
-- One open listing per number; the per-call probe finds the one in force at the call time.
CREATE UNIQUE INDEX listings_open ON listings (number) WHERE ended_us IS NULL;
CREATE INDEX listings_by_number ON listings (number, listed_us);
INSERT INTO listings (number, import_id, listed_us) SELECT number, import_id, listed_us FROM directory ORDER BY number;
DROP TABLE directory;
