-- rpoguard data schema v3 (issue 14): history is never rewritten.
-- 1. Every input file of an import, with its own name, size and SHA-256: a two-list RPO answer has two.
--    The imports row keeps the fingerprint of the whole input, which recognises the same files again.
-- 2. Every RPO answer is kept with the file that gave it: a second file answering for the same number,
--    principal and check time adds its own row instead of changing the first one. Decisions combine the
--    answers of one check time as the import always did ("registered" wins, the later registration date
--    counts: policy/rpo.py).
-- 3. Notes on stored facts: what was said about a consent or a contract after it was recorded (a second
--    revocation, the end of a running contract, a corrected end), each with when it was recorded and by
--    which command or import. The fact's own record stays as it was first written.

CREATE TABLE import_files (
    id          INTEGER PRIMARY KEY,
    import_id   INTEGER NOT NULL REFERENCES imports(id),
    position    INTEGER NOT NULL,             -- 1, 2: the order the files were given in
    role        TEXT NOT NULL,                -- file / submitted / registered / cleansed
    file_name   TEXT NOT NULL,
    file_size   INTEGER,
    sha256      TEXT,
    UNIQUE (import_id, position)
);

-- Imports stored before v3 had one file each, except a two-list RPO answer: its two SHA-256 were joined
-- with '+' (the cleaned-list form writing 'cleansed:' before the second), its names with ' + ', and its
-- two sizes were stored only as their sum (so each file's size is unknown here).
INSERT INTO import_files (import_id, position, role, file_name, file_size, sha256)
SELECT id, 1, 'file', file_name, file_size, sha256 FROM imports
 WHERE sha256 IS NULL OR instr(sha256, '+') = 0 ORDER BY id;
INSERT INTO import_files (import_id, position, role, file_name, file_size, sha256)
SELECT id, 1, 'submitted',
       CASE WHEN instr(file_name, ' + ') > 0 THEN substr(file_name, 1, instr(file_name, ' + ') - 1) ELSE file_name END,
       NULL, substr(sha256, 1, instr(sha256, '+') - 1)
  FROM imports WHERE instr(sha256, '+') > 0 ORDER BY id;
INSERT INTO import_files (import_id, position, role, file_name, file_size, sha256)
SELECT id, 2, CASE WHEN instr(sha256, '+cleansed:') > 0 THEN 'cleansed' ELSE 'registered' END,
       CASE WHEN instr(file_name, ' + ') > 0 THEN substr(file_name, instr(file_name, ' + ') + 3) ELSE file_name END,
       NULL, substr(sha256, length(sha256) - 63)
  FROM imports WHERE instr(sha256, '+') > 0 ORDER BY id;

-- SQLite cannot change a table's unique key in place: the table is rebuilt, ids kept.
CREATE TABLE rpo_results_v3 (
    id              INTEGER PRIMARY KEY,
    number          TEXT NOT NULL,
    principal_id    TEXT REFERENCES principals(id),
    checked_us      INTEGER NOT NULL,
    registered      INTEGER NOT NULL,
    registered_us   INTEGER,
    import_id       INTEGER REFERENCES imports(id),
    UNIQUE (number, principal_id, checked_us, import_id)
);
INSERT INTO rpo_results_v3 (id, number, principal_id, checked_us, registered, registered_us, import_id)
SELECT id, number, principal_id, checked_us, registered, registered_us, import_id FROM rpo_results ORDER BY id;
DROP TABLE rpo_results;
ALTER TABLE rpo_results_v3 RENAME TO rpo_results;

CREATE TABLE fact_notes (
    id            INTEGER PRIMARY KEY,
    fact          TEXT NOT NULL,                  -- consent / contract
    fact_id       INTEGER NOT NULL,               -- consents.id / contracts.id
    number        TEXT NOT NULL,
    principal_id  TEXT NOT NULL,
    kind          TEXT NOT NULL,                  -- revoked, revoked_again / end_set, end_corrected
    at_us         INTEGER,                        -- a revocation: the moment it names
    end_date      TEXT,                           -- a contract's end: the date it names (NULL: no end)
    source        TEXT NOT NULL,                  -- the command, or 'import'
    import_id     INTEGER REFERENCES imports(id),
    recorded_us   INTEGER NOT NULL
);
-- The per-call probe reads the notes of a revoked consent or an ended contract (the earliest moment
-- counts); the evidence reads them by number.
CREATE INDEX fact_notes_by_fact ON fact_notes (fact, fact_id);
CREATE INDEX fact_notes_by_number ON fact_notes (number);
