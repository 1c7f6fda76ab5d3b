-- rpoguard schema v5 (issue 17): the compliance console's users, and every change made through the
-- console (or to its users with `rpoguard user`) recorded with the user who made it (docs/console.md).

-- A user is never deleted: a disabled one stays, so the changes it made still name someone who existed.
CREATE TABLE console_users (
    name           TEXT PRIMARY KEY,
    role           TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    password_hash  TEXT NOT NULL,
    disabled       BOOLEAN NOT NULL DEFAULT FALSE,
    created_us     BIGINT NOT NULL,
    changed_us     BIGINT NOT NULL
);
-- Names that differ only in case would read as one person in the record of changes: refused.
CREATE UNIQUE INDEX console_users_folded ON console_users (lower(name));

-- Append-only, as the decision log is: what someone did through the console is never rewritten.
CREATE TABLE console_changes (
    id         BIGSERIAL PRIMARY KEY,
    at_us      BIGINT NOT NULL,
    user_name  TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    detail     JSONB NOT NULL
);
CREATE INDEX console_changes_by_time ON console_changes (at_us, id);
CREATE INDEX console_changes_by_user ON console_changes (user_name, at_us, id);

CREATE FUNCTION rpoguard_console_changes_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'console_changes is append-only';
END
$$;
CREATE TRIGGER console_changes_no_update BEFORE UPDATE OR DELETE ON console_changes
    FOR EACH ROW EXECUTE FUNCTION rpoguard_console_changes_append_only();
CREATE TRIGGER console_changes_no_truncate BEFORE TRUNCATE ON console_changes
    FOR EACH STATEMENT EXECUTE FUNCTION rpoguard_console_changes_append_only();
