-- +goose Up

-- Deletions used to exist only as NOTIFY hints: a client that was offline, or
-- whose hints the listener had to drop, kept showing rows that were gone,
-- since a replay from the table cannot show a row that is not there. Now
-- every statement that deletes rows (or moves them to another user) records
-- them in notifications_deleted, one row per user and statement with the ids
-- in an array, so that a 900,000-row DELETE writes a few hundred small rows,
-- not 900,000. Resumes and catch-ups replay deletions from it. pgpush serve
-- prunes it (PGPUSH_DELETIONS_RETENTION); a cursor older than what was pruned
-- gets a fresh snapshot.
--
-- The hints change too: a user with more than 32 rows in one statement is
-- named once in a "b" (bulk) hint whatever the operation, deletions included
-- (its connections catch up from the table and from notifications_deleted).

CREATE TABLE notifications_deleted (
    user_id     text        NOT NULL,
    deleted_xid xid8        NOT NULL DEFAULT pg_current_xact_id(),
    ids         bigint[]    NOT NULL,
    deleted_at  timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE notifications_deleted IS
    'pgpush internal: ids of notifications rows deleted (or moved to another user), one row per user and statement, so that clients that were offline learn of them. Pruned by pgpush serve after PGPUSH_DELETIONS_RETENTION.';
COMMENT ON COLUMN notifications_deleted.user_id IS 'The user whose rows these were.';
COMMENT ON COLUMN notifications_deleted.deleted_xid IS 'The transaction that deleted (or moved) them; resumes replay deletions at or above a cursor.';
COMMENT ON COLUMN notifications_deleted.ids IS 'The ids of the deleted rows.';
COMMENT ON COLUMN notifications_deleted.deleted_at IS 'When; pruning goes by it.';

-- Analyzed every 5% of growth (not 10%): pgpush's sessions keep a generic
-- plan until the next ANALYZE, and one made while the table was small scans
-- it whole.
ALTER TABLE notifications_deleted SET (autovacuum_analyze_scale_factor = 0.05);

CREATE INDEX notifications_deleted_user_id_xid_idx ON notifications_deleted (user_id, deleted_xid);
CREATE INDEX notifications_deleted_deleted_at_idx ON notifications_deleted (deleted_at);
COMMENT ON INDEX notifications_deleted_user_id_xid_idx IS 'pgpush: replay of a user''s deletions at or above a cursor.';
COMMENT ON INDEX notifications_deleted_deleted_at_idx IS 'pgpush: pruning of old deletions.';

-- The horizon below which deletions may have been pruned: a cursor below it
-- cannot be replayed exactly and gets a fresh snapshot instead.
CREATE TABLE notifications_deleted_horizon (
    single  boolean PRIMARY KEY DEFAULT true CHECK (single),
    horizon xid8    NOT NULL
);
INSERT INTO notifications_deleted_horizon (horizon) VALUES ('0');
COMMENT ON TABLE notifications_deleted_horizon IS
    'pgpush internal: one row; every pruned notifications_deleted row had a deleted_xid below horizon.';

-- +goose StatementBegin
-- ops are 'c' (created), 'u' (updated), 'd' (deleted) with a row each, or 'b'
-- (bulk) naming a user whose rows must be caught up from the table (id
-- ignored). A user with more than 32 rows is named in a "b" hint instead:
--   {"v":1,"xmin":<xid8>,"op":"c"|"u"|"d","rows":[[id,"user_id"],...]}
--   {"v":1,"xmin":<xid8>,"op":"b","users":["user_id",...]}
CREATE OR REPLACE FUNCTION notifications_hints(ops text[], ids bigint[], user_ids text[])
RETURNS SETOF text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    head text := '{"v":1,"xmin":' || pg_snapshot_xmin(pg_current_snapshot())::text || ',"op":"';
BEGIN
    -- The common case, one row, needs no chunking.
    IF cardinality(ids) = 1 AND ops[1] <> 'b' THEN
        RETURN NEXT head || ops[1] || '","rows":[[' || ids[1] || ',' || to_json(user_ids[1])::text || ']]}';
        RETURN;
    END IF;
    RETURN QUERY
    WITH h AS (
        SELECT u.op, u.id, u.user_id, u.ord
        FROM unnest(ops, ids, user_ids) WITH ORDINALITY AS u(op, id, user_id, ord)
    ), bulk AS (
        SELECT h.user_id, min(h.ord) AS ord
        FROM h
        GROUP BY h.user_id
        HAVING count(*) > 32 OR bool_or(h.op = 'b')
    ), items AS (
        SELECT h.op, h.ord, '[' || h.id || ',' || to_json(h.user_id)::text || ']' AS item
        FROM h
        WHERE h.user_id NOT IN (SELECT bulk.user_id FROM bulk)
        UNION ALL
        SELECT 'b', bulk.ord, to_json(bulk.user_id)::text
        FROM bulk
    ), chunked AS (
        SELECT items.op, items.ord, items.item,
               sum(octet_length(items.item) + 1) OVER (PARTITION BY items.op ORDER BY items.ord) / 7000 AS chunk
        FROM items
    )
    SELECT head || chunked.op
        || CASE WHEN chunked.op = 'b' THEN '","users":[' ELSE '","rows":[' END
        || string_agg(chunked.item, ',' ORDER BY chunked.ord) || ']}'
    FROM chunked
    GROUP BY chunked.op, chunked.chunk
    ORDER BY min(chunked.ord);
END;
$$;
-- +goose StatementEnd

COMMENT ON FUNCTION notifications_hints(text[], bigint[], text[]) IS
    'pgpush: packs row hints (operation, id, user_id) into NOTIFY payloads well under the 8,000-byte limit; a user with more than 32 rows in one statement is named once ("b" hint) instead.';

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION notifications_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    channel text := 'pgpush.' || TG_TABLE_SCHEMA;
    ops text[];
    ids bigint[];
    user_ids text[];
    payload text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg('c'::text ORDER BY id), array_agg(id ORDER BY id), array_agg(user_id ORDER BY id)
        INTO ops, ids, user_ids
        FROM new_rows;
    ELSIF TG_OP = 'UPDATE' THEN
        -- A row moved to another user is deleted for the old one and created
        -- for the new one.
        SELECT array_agg(h.op ORDER BY h.id, h.op DESC), array_agg(h.id ORDER BY h.id, h.op DESC),
               array_agg(h.user_id ORDER BY h.id, h.op DESC)
        INTO ops, ids, user_ids
        FROM (
            SELECT CASE WHEN o.user_id = n.user_id THEN 'u' ELSE 'c' END AS op, n.id, n.user_id
            FROM new_rows n JOIN old_rows o ON o.id = n.id
            UNION ALL
            SELECT 'd'::text, o.id, o.user_id
            FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE o.user_id <> n.user_id
        ) h;
        IF array_position(ops, 'd') IS NOT NULL THEN
            INSERT INTO notifications_deleted (user_id, ids)
            SELECT m.user_id, array_agg(m.id ORDER BY m.id)
            FROM unnest(ops, ids, user_ids) AS m(op, id, user_id)
            WHERE m.op = 'd'
            GROUP BY m.user_id;
        END IF;
    ELSE
        -- One pass over the deleted rows, grouped by user: the record of the
        -- deletions, then the hints (a user with more than 32 rows is named
        -- once, so a big DELETE needs no array of all its rows).
        WITH g AS MATERIALIZED (
            SELECT o.user_id, array_agg(o.id) AS ids
            FROM old_rows o
            GROUP BY o.user_id
        ), recorded AS (
            INSERT INTO notifications_deleted (user_id, ids)
            SELECT g.user_id, g.ids FROM g
        ), h AS (
            SELECT 'b'::text AS op, 0::bigint AS id, g.user_id
            FROM g
            WHERE cardinality(g.ids) > 32
            UNION ALL
            SELECT 'd'::text, d.id, g.user_id
            FROM g CROSS JOIN LATERAL unnest(g.ids) AS d(id)
            WHERE cardinality(g.ids) <= 32
        )
        SELECT array_agg(h.op), array_agg(h.id), array_agg(h.user_id)
        INTO ops, ids, user_ids
        FROM h;
    END IF;

    IF ids IS NULL THEN
        RETURN NULL;
    END IF;
    FOR payload IN SELECT notifications_hints(ops, ids, user_ids) LOOP
        PERFORM pg_notify(channel, payload);
    END LOOP;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

COMMENT ON FUNCTION notifications_notify() IS
    'pgpush: sends pg_notify hints (row ids and user ids, never the row) on channel "pgpush.<schema>" for every INSERT, UPDATE and DELETE statement, and records deleted (or moved) rows in notifications_deleted.';

-- CREATE OR REPLACE dropped the pinned search_path of 00002; pin it again.
-- +goose StatementBegin
DO $$
DECLARE
    path text := format('pg_catalog, %I, pg_temp', current_schema());
BEGIN
    EXECUTE format('ALTER FUNCTION notifications_notify() SET search_path = %s', path);
    EXECUTE format('ALTER FUNCTION notifications_hints(text[], bigint[], text[]) SET search_path = %s', path);
END;
$$;
-- +goose StatementEnd

-- The trigger records deletions as the table's owner, so a role that may
-- delete notifications needs no grant on notifications_deleted. It is safe:
-- the function's search_path is pinned (above), it reads only the
-- statement's transition tables and writes only notifications_deleted.
ALTER FUNCTION notifications_notify() SECURITY DEFINER;
-- Grouping a big DELETE's rows by user fits in memory instead of spilling
-- to disk (a 900,000-row DELETE: about a quarter less CPU). Only the trigger
-- runs with it, and only a statement that big uses it.
ALTER FUNCTION notifications_notify() SET work_mem = '64MB';

-- The last objects without a comment.
COMMENT ON INDEX notifications_pkey IS 'pgpush: rows by id (fetches behind NOTIFY hints, mark read).';
COMMENT ON CONSTRAINT notifications_user_id_length ON notifications IS
    'A user id travels in every NOTIFY hint; 1 to 1024 bytes keeps a hint far below NOTIFY''s 8,000-byte payload limit.';

-- +goose Down

COMMENT ON INDEX notifications_pkey IS NULL;
COMMENT ON CONSTRAINT notifications_user_id_length ON notifications IS NULL;
ALTER FUNCTION notifications_notify() SECURITY INVOKER;
ALTER FUNCTION notifications_notify() RESET work_mem;

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION notifications_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    channel text := 'pgpush.' || TG_TABLE_SCHEMA;
    ops text[];
    ids bigint[];
    user_ids text[];
    payload text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg('c'::text ORDER BY id), array_agg(id ORDER BY id), array_agg(user_id ORDER BY id)
        INTO ops, ids, user_ids
        FROM new_rows;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT array_agg(h.op ORDER BY h.id, h.op DESC), array_agg(h.id ORDER BY h.id, h.op DESC),
               array_agg(h.user_id ORDER BY h.id, h.op DESC)
        INTO ops, ids, user_ids
        FROM (
            SELECT CASE WHEN o.user_id = n.user_id THEN 'u' ELSE 'c' END AS op, n.id, n.user_id
            FROM new_rows n JOIN old_rows o ON o.id = n.id
            UNION ALL
            SELECT 'd'::text, o.id, o.user_id
            FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE o.user_id <> n.user_id
        ) h;
    ELSE
        SELECT array_agg('d'::text ORDER BY id), array_agg(id ORDER BY id), array_agg(user_id ORDER BY id)
        INTO ops, ids, user_ids
        FROM old_rows;
    END IF;

    IF ids IS NULL THEN
        RETURN NULL;
    END IF;
    FOR payload IN SELECT notifications_hints(ops, ids, user_ids) LOOP
        PERFORM pg_notify(channel, payload);
    END LOOP;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION notifications_hints(ops text[], ids bigint[], user_ids text[])
RETURNS SETOF text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    head text := '{"v":1,"xmin":' || pg_snapshot_xmin(pg_current_snapshot())::text || ',"op":"';
BEGIN
    IF cardinality(ids) = 1 THEN
        RETURN NEXT head || ops[1] || '","rows":[[' || ids[1] || ',' || to_json(user_ids[1])::text || ']]}';
        RETURN;
    END IF;
    RETURN QUERY
    WITH h AS (
        SELECT u.op, u.id, u.user_id, u.ord
        FROM unnest(ops, ids, user_ids) WITH ORDINALITY AS u(op, id, user_id, ord)
    ), bulk AS (
        SELECT h.user_id, min(h.ord) AS ord
        FROM h
        WHERE h.op <> 'd'
        GROUP BY h.user_id
        HAVING count(*) > 32
    ), items AS (
        SELECT h.op, h.ord, '[' || h.id || ',' || to_json(h.user_id)::text || ']' AS item
        FROM h
        WHERE h.op = 'd' OR h.user_id NOT IN (SELECT bulk.user_id FROM bulk)
        UNION ALL
        SELECT 'b', bulk.ord, to_json(bulk.user_id)::text
        FROM bulk
    ), chunked AS (
        SELECT items.op, items.ord, items.item,
               sum(octet_length(items.item) + 1) OVER (PARTITION BY items.op ORDER BY items.ord) / 7000 AS chunk
        FROM items
    )
    SELECT head || chunked.op
        || CASE WHEN chunked.op = 'b' THEN '","users":[' ELSE '","rows":[' END
        || string_agg(chunked.item, ',' ORDER BY chunked.ord) || ']}'
    FROM chunked
    GROUP BY chunked.op, chunked.chunk
    ORDER BY min(chunked.ord);
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
DO $$
DECLARE
    path text := format('pg_catalog, %I, pg_temp', current_schema());
BEGIN
    EXECUTE format('ALTER FUNCTION notifications_notify() SET search_path = %s', path);
    EXECUTE format('ALTER FUNCTION notifications_hints(text[], bigint[], text[]) SET search_path = %s', path);
END;
$$;
-- +goose StatementEnd

COMMENT ON FUNCTION notifications_hints(text[], bigint[], text[]) IS
    'pgpush: packs row hints (operation, id, user_id) into NOTIFY payloads well under the 8,000-byte limit; a user with more than 32 created or updated rows in one statement is named once ("b" hint) instead.';
COMMENT ON FUNCTION notifications_notify() IS
    'pgpush: sends pg_notify hints (row ids and user ids, never the row) on channel "pgpush.<schema>" for every INSERT, UPDATE and DELETE statement.';

DROP TABLE notifications_deleted_horizon;
DROP TABLE notifications_deleted;
