-- rpoguard audit schema v2 (issue 14): a decision is always for the moment it is made, and its row says
-- when it was written. The writer sets recorded_us (wall clock, µs) once per group commit, as it sets
-- seq and prev_hash; the row's hash covers it (audit.chain_hash). Rows written before v2 keep NULL and
-- their old hash, so an upgraded log still verifies whole.

ALTER TABLE audit_log ADD COLUMN recorded_us INTEGER;
