-- +goose Up

-- notifications_unread_recount() set the ledger's mark
-- (notifications_unread_folded.below) to its own transaction id. A writer
-- whose transaction had taken a lower id, and whose INSERT waited for the
-- recount's lock on the table, then wrote its ledger row below the mark:
-- the view left it out until the next fold added it to the totals, so its
-- user's count was one short meanwhile (for good while no pgpush ran). The
-- mark is now the xmin of a snapshot taken once the table is locked: every
-- transaction below it has finished, so its ledger rows are deleted and its
-- rows counted here, and every transaction still running then, such a
-- writer, has an id at or above it.

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION notifications_unread_recount() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    users bigint;
BEGIN
    LOCK TABLE notifications IN SHARE ROW EXCLUSIVE MODE;
    -- Every ledger row is in the recount: those written from here on are
    -- of transactions at or above this statement's xmin.
    UPDATE notifications_unread_folded SET below = pg_snapshot_xmin(pg_current_snapshot());
    DELETE FROM notifications_unread_delta;
    DELETE FROM notifications_unread;
    INSERT INTO notifications_unread (user_id, unread)
    SELECT n.user_id, count(*)
    FROM notifications n
    WHERE n.read_at IS NULL
    GROUP BY n.user_id;
    GET DIAGNOSTICS users = ROW_COUNT;
    -- The channel of the table's schema (current_schema() would name
    -- pg_catalog, first in the pinned search_path).
    PERFORM pg_notify('pgpush.' || s.nspname, notifications_hint_reset())
    FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
    WHERE c.oid = 'notifications'::regclass;
    RETURN users;
END;
$$;
-- +goose StatementEnd

-- CREATE OR REPLACE dropped the pinned search_path (see 00007).
-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION notifications_unread_recount() SET search_path = pg_catalog, %I, pg_temp', current_schema());
END;
$$;
-- +goose StatementEnd

-- +goose Down

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION notifications_unread_recount() RETURNS bigint
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
    -- The channel of the table's schema (current_schema() would name
    -- pg_catalog, first in the pinned search_path).
    PERFORM pg_notify('pgpush.' || s.nspname, notifications_hint_reset())
    FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
    WHERE c.oid = 'notifications'::regclass;
    RETURN users;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION notifications_unread_recount() SET search_path = pg_catalog, %I, pg_temp', current_schema());
END;
$$;
-- +goose StatementEnd
