-- +goose Up

-- A statement that writes many rows for one user (a bulk import, a fan-out
-- job) used to list every row in its hints: the trigger spent a fifth of a
-- 100,000-row INSERT building them, and the dispatcher then marked such a
-- user's connections behind anyway, to read the rows from the table. Now a
-- user with more than 32 created or updated rows in one statement is named
-- once, in a "b" (bulk) hint, {"v":1,"xmin":…,"op":"b","users":["alice",…]}:
-- pgpush replays that user's rows from the table. Deletions are always listed
-- row by row, since a replay cannot show them.

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION notifications_hints(ops text[], ids bigint[], user_ids text[])
RETURNS SETOF text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    head text := '{"v":1,"xmin":' || pg_snapshot_xmin(pg_current_snapshot())::text || ',"op":"';
BEGIN
    -- The common case, one row, needs no chunking.
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

COMMENT ON FUNCTION notifications_hints(text[], bigint[], text[]) IS
    'pgpush: packs row hints (operation, id, user_id) into NOTIFY payloads well under the 8,000-byte limit; a user with more than 32 created or updated rows in one statement is named once ("b" hint) instead.';

-- CREATE OR REPLACE dropped the pinned search_path of 00002; pin it again.
-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION notifications_hints(text[], bigint[], text[]) SET search_path = %s',
        format('pg_catalog, %I, pg_temp', current_schema()));
END;
$$;
-- +goose StatementEnd

-- +goose Down

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION notifications_hints(ops text[], ids bigint[], user_ids text[])
RETURNS SETOF text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    -- The common case, one row, needs no chunking.
    IF cardinality(ids) = 1 THEN
        RETURN NEXT '{"v":1,"xmin":' || pg_snapshot_xmin(pg_current_snapshot())::text
            || ',"op":"' || ops[1] || '","rows":[[' || ids[1] || ',' || to_json(user_ids[1])::text || ']]}';
        RETURN;
    END IF;
    RETURN QUERY
    SELECT '{"v":1,"xmin":' || pg_snapshot_xmin(pg_current_snapshot())::text
        || ',"op":"' || chunked.op || '","rows":[' || string_agg(chunked.item, ',' ORDER BY chunked.ord) || ']}'
    FROM (
        SELECT items.op, items.ord, items.item,
               sum(octet_length(items.item) + 1) OVER (PARTITION BY items.op ORDER BY items.ord) / 7000 AS chunk
        FROM (
            SELECT h.op, h.ord, '[' || h.id || ',' || to_json(h.user_id)::text || ']' AS item
            FROM unnest(ops, ids, user_ids) WITH ORDINALITY AS h(op, id, user_id, ord)
        ) items
    ) chunked
    GROUP BY chunked.op, chunked.chunk
    ORDER BY min(chunked.ord);
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION notifications_hints(text[], bigint[], text[]) SET search_path = %s',
        format('pg_catalog, %I, pg_temp', current_schema()));
END;
$$;
-- +goose StatementEnd


COMMENT ON FUNCTION notifications_hints(text[], bigint[], text[]) IS
    'pgpush: packs row hints (operation, id, user_id) into NOTIFY payloads well under the 8,000-byte limit.';
