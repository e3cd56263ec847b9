-- +goose Up

-- Every frame pgpush sends carries its user's unread count. It used to be
-- counted from the table for every batch, a cost that grew with the user's
-- unread rows (2,000 unread rows: ~1.6 ms per batch). Now the count is kept:
-- a statement trigger appends each statement's change per user to
-- notifications_unread_delta (an append-only ledger: writers never wait for
-- each other, so no new lock and no deadlock), pgpush serve folds the ledger
-- into notifications_unread every second, and the count is the sum of both
-- (view notifications_unread_counts), read in the same snapshot as the rows:
-- exact, and bounded by the few ledger rows since the last fold.
--
-- A fold takes the ledger rows of every transaction below its snapshot's
-- xmin (all finished: the committed ones are all visible to it), adds them
-- to the totals, deletes them, and raises notifications_unread_folded to
-- that xmin, all in one transaction; the view counts only ledger rows at or
-- above it. So a reader's index range starts above the folded rows and never
-- visits them while they wait, dead, for VACUUM (a queue table's rows would
-- otherwise cost every read a heap page each).

-- Writers wait while the counts are taken, so none is missed.
LOCK TABLE notifications IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE notifications_unread (
    user_id text   PRIMARY KEY,
    unread  bigint NOT NULL
) WITH (fillfactor = 70);

CREATE TABLE notifications_unread_delta (
    user_id   text   NOT NULL,
    delta_xid xid8   NOT NULL DEFAULT pg_current_xact_id(),
    delta     bigint NOT NULL
);
CREATE INDEX notifications_unread_delta_user_id_xid_idx ON notifications_unread_delta (user_id, delta_xid);

CREATE TABLE notifications_unread_folded (
    single boolean PRIMARY KEY DEFAULT true CHECK (single),
    below  xid8    NOT NULL
);
INSERT INTO notifications_unread_folded (below) VALUES ('0');

COMMENT ON TABLE notifications_unread IS
    'pgpush internal: unread rows per user, as of the last fold of notifications_unread_delta. Read the count from view notifications_unread_counts.';
COMMENT ON COLUMN notifications_unread.user_id IS 'The user.';
COMMENT ON COLUMN notifications_unread.unread IS 'Their unread rows, not counting notifications_unread_delta.';
COMMENT ON TABLE notifications_unread_delta IS
    'pgpush internal: per statement and user, how many rows became unread (negative: read or deleted); written by trigger notifications_count, folded into notifications_unread by pgpush serve every second.';
COMMENT ON COLUMN notifications_unread_delta.user_id IS 'The user.';
COMMENT ON COLUMN notifications_unread_delta.delta_xid IS 'The transaction that made the change.';
COMMENT ON COLUMN notifications_unread_delta.delta IS 'The change of their unread count.';
COMMENT ON INDEX notifications_unread_delta_user_id_xid_idx IS 'pgpush: a user''s changes not folded yet.';
COMMENT ON TABLE notifications_unread_folded IS
    'pgpush internal: one row; the ledger rows of every transaction below "below" are in notifications_unread.';

CREATE VIEW notifications_unread_counts AS
SELECT c.user_id, sum(c.unread)::bigint AS unread
FROM (
    SELECT u.user_id, u.unread FROM notifications_unread u
    UNION ALL
    SELECT d.user_id, d.delta FROM notifications_unread_delta d
    WHERE d.delta_xid >= (SELECT f.below FROM notifications_unread_folded f)
) c
GROUP BY c.user_id;

COMMENT ON VIEW notifications_unread_counts IS
    'pgpush: each user''s unread notifications (rows with read_at NULL), exact in every snapshot; filter by user_id. A user without unread rows has 0 or no row.';

-- +goose StatementBegin
CREATE FUNCTION notifications_unread_recount() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    users bigint;
BEGIN
    LOCK TABLE notifications IN SHARE ROW EXCLUSIVE MODE;
    -- Every ledger row is in the recount: the ones written from here on
    -- come after it.
    UPDATE notifications_unread_folded SET below = pg_current_xact_id();
    DELETE FROM notifications_unread_delta;
    DELETE FROM notifications_unread;
    INSERT INTO notifications_unread (user_id, unread)
    SELECT n.user_id, count(*)
    FROM notifications n
    WHERE n.read_at IS NULL
    GROUP BY n.user_id;
    GET DIAGNOSTICS users = ROW_COUNT;
    RETURN users;
END;
$$;
-- +goose StatementEnd

COMMENT ON FUNCTION notifications_unread_recount() IS
    'pgpush: counts every user''s unread rows again from the table (writers wait meanwhile), e.g. after rows were written with triggers disabled (session_replication_role = replica). Returns the number of users with unread rows.';

SELECT notifications_unread_recount();

-- +goose StatementBegin
CREATE FUNCTION notifications_count() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM notifications_unread_delta;
        DELETE FROM notifications_unread;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO notifications_unread_delta (user_id, delta)
        SELECT n.user_id, count(*)
        FROM new_rows n
        WHERE n.read_at IS NULL
        GROUP BY n.user_id;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO notifications_unread_delta (user_id, delta)
        SELECT c.user_id, sum(c.delta)
        FROM (
            SELECT n.user_id, 1 AS delta FROM new_rows n WHERE n.read_at IS NULL
            UNION ALL
            SELECT o.user_id, -1 FROM old_rows o WHERE o.read_at IS NULL
        ) c
        GROUP BY c.user_id
        HAVING sum(c.delta) <> 0;
    ELSE
        INSERT INTO notifications_unread_delta (user_id, delta)
        SELECT o.user_id, -count(*)
        FROM old_rows o
        WHERE o.read_at IS NULL
        GROUP BY o.user_id;
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

COMMENT ON FUNCTION notifications_count() IS
    'pgpush: records how each statement changed its users'' unread counts in notifications_unread_delta (a TRUNCATE empties the counts).';

-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION notifications_count() SET search_path = pg_catalog, %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION notifications_unread_recount() SET search_path = pg_catalog, %I, pg_temp', current_schema());
END;
$$;
-- +goose StatementEnd

-- Like notifications_notify: writers need no grant on the count tables; the
-- function reads only the transition tables and writes only those tables.
ALTER FUNCTION notifications_count() SECURITY DEFINER;

CREATE TRIGGER notifications_count_insert AFTER INSERT ON notifications
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notifications_count();
CREATE TRIGGER notifications_count_update AFTER UPDATE ON notifications
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notifications_count();
CREATE TRIGGER notifications_count_delete AFTER DELETE ON notifications
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notifications_count();
CREATE TRIGGER notifications_count_truncate AFTER TRUNCATE ON notifications
    FOR EACH STATEMENT EXECUTE FUNCTION notifications_count();

COMMENT ON TRIGGER notifications_count_insert ON notifications IS 'pgpush: keeps the users'' unread counts.';
COMMENT ON TRIGGER notifications_count_update ON notifications IS 'pgpush: keeps the users'' unread counts.';
COMMENT ON TRIGGER notifications_count_delete ON notifications IS 'pgpush: keeps the users'' unread counts.';
COMMENT ON TRIGGER notifications_count_truncate ON notifications IS 'pgpush: keeps the users'' unread counts.';

-- The partial index of unread rows served the counts. Every INSERT wrote to
-- it, at a leaf of its own per user (after a checkpoint, a whole 8 KiB page
-- in the WAL that the writer's commit flushes): without it a one-row INSERT
-- writes about half the WAL. "Mark all read" now finds a user's unread rows
-- through notifications_user_id_id_idx.
DROP INDEX notifications_user_id_unread_idx;

-- +goose Down
CREATE INDEX notifications_user_id_unread_idx ON notifications (user_id, id) WHERE read_at IS NULL;
COMMENT ON INDEX notifications_user_id_unread_idx IS 'pgpush: per-user unread count and mark-all-read.';
DROP FUNCTION notifications_unread_recount();
DROP TRIGGER notifications_count_insert ON notifications;
DROP TRIGGER notifications_count_update ON notifications;
DROP TRIGGER notifications_count_delete ON notifications;
DROP TRIGGER notifications_count_truncate ON notifications;
DROP FUNCTION notifications_count();
DROP VIEW notifications_unread_counts;
DROP TABLE notifications_unread_folded;
DROP TABLE notifications_unread_delta;
DROP TABLE notifications_unread;
