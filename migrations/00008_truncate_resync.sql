-- +goose Up

-- A TRUNCATE removes rows without row hints and records no deletions to
-- replay, so clients used to keep the rows they held until they reconnected
-- without a cursor. Now the TRUNCATE trigger also raises the deletions'
-- horizon above its own transaction: a cursor from before the TRUNCATE is
-- below it and gets a fresh snapshot (SPEC §4, "resync"), as a cursor
-- below pruned deletions does. Its "r" hint says so:
--
--   {"v":2,"xid":<xid8>,"op":"r","truncated":true}
--
-- and pgpush makes every connection replay from its own cursor; a replay
-- from below the horizon ends with close code 1013, and the client comes
-- back with its cursor to a fresh snapshot. The hint is unsigned, like every
-- "r" hint: a forged one makes connections replay, which is exact whatever
-- the hint says (the horizon is read from the table), and costs only that.

DROP FUNCTION notifications_hint_reset();

-- +goose StatementBegin
CREATE FUNCTION notifications_hint_reset(truncated boolean DEFAULT false) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    -- As in notifications_notify.
    seq integer := set_config('pgpush.hint_seq',
        (coalesce(nullif(current_setting('pgpush.hint_seq', true), '')::integer, 0) + 1)::text, true)::integer;
BEGIN
    RETURN '{"v":2,"xid":' || pg_current_xact_id()::text || ',"op":"r"'
        || CASE WHEN truncated THEN ',"truncated":true' ELSE '' END
        || CASE WHEN seq > 1 THEN ',"seq":' || seq ELSE '' END || '}';
END;
$$;
-- +goose StatementEnd

COMMENT ON FUNCTION notifications_hint_reset(boolean) IS
    'pgpush: the payload of an "r" hint, which tells pgpush that unread counts changed without row hints, and with truncated that rows were removed by a TRUNCATE.';

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION notifications_count() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- notifications_notify records INSERT, UPDATE and DELETE; this trigger
    -- is only attached for TRUNCATE.
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM notifications_unread_delta;
        DELETE FROM notifications_unread;
        -- Cursors below this transaction cannot be replayed exactly.
        UPDATE notifications_deleted_horizon
        SET horizon = greatest(horizon, (pg_current_xact_id()::text::bigint + 1)::text::xid8);
        PERFORM pg_notify('pgpush.' || TG_TABLE_SCHEMA, notifications_hint_reset(true));
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

COMMENT ON FUNCTION notifications_count() IS
    'pgpush: on TRUNCATE, empties the unread counts, raises the deletions'' horizon above the transaction (clients holding rows from before it start afresh) and sends an "r" hint with "truncated" (notifications_notify records the other statements'' changes).';

-- CREATE OR REPLACE reset the trigger's SECURITY DEFINER and pinned
-- search_path (see 00007).
-- +goose StatementBegin
DO $$
DECLARE
    path text := format('pg_catalog, %I, pg_temp', current_schema());
BEGIN
    EXECUTE format('ALTER FUNCTION notifications_hint_reset(boolean) SET search_path = %s', path);
    EXECUTE format('ALTER FUNCTION notifications_count() SET search_path = %s', path);
END;
$$;
-- +goose StatementEnd

ALTER FUNCTION notifications_count() SECURITY DEFINER;

-- +goose Down

DROP FUNCTION notifications_hint_reset(boolean);

-- +goose StatementBegin
CREATE FUNCTION notifications_hint_reset() RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    -- As in notifications_notify.
    seq integer := set_config('pgpush.hint_seq',
        (coalesce(nullif(current_setting('pgpush.hint_seq', true), '')::integer, 0) + 1)::text, true)::integer;
BEGIN
    RETURN '{"v":2,"xid":' || pg_current_xact_id()::text || ',"op":"r"'
        || CASE WHEN seq > 1 THEN ',"seq":' || seq ELSE '' END || '}';
END;
$$;
-- +goose StatementEnd

COMMENT ON FUNCTION notifications_hint_reset() IS
    'pgpush: the payload of an "r" hint, which tells pgpush that unread counts changed without row hints.';

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION notifications_count() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- INSERT, UPDATE and DELETE statements are counted by
    -- notifications_notify, from the deltas of its hints.
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM notifications_unread_delta;
        DELETE FROM notifications_unread;
        PERFORM pg_notify('pgpush.' || TG_TABLE_SCHEMA, notifications_hint_reset());
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

COMMENT ON FUNCTION notifications_count() IS
    'pgpush: on TRUNCATE, empties the unread counts and sends an "r" hint (notifications_notify records the other statements'' changes).';

-- +goose StatementBegin
DO $$
DECLARE
    path text := format('pg_catalog, %I, pg_temp', current_schema());
BEGIN
    EXECUTE format('ALTER FUNCTION notifications_hint_reset() SET search_path = %s', path);
    EXECUTE format('ALTER FUNCTION notifications_count() SET search_path = %s', path);
END;
$$;
-- +goose StatementEnd

ALTER FUNCTION notifications_count() SECURITY DEFINER;
