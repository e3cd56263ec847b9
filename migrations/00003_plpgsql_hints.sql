-- +goose Up

-- notifications_hints was a set-returning SQL function, which PostgreSQL
-- parses and plans again on every call: a third of the database's CPU under
-- a stream of one-row inserts. In PL/pgSQL its query plan is cached per
-- session. Same payloads as before.

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
LANGUAGE sql STABLE AS $$
    SELECT '{"v":1,"xmin":' || pg_snapshot_xmin(pg_current_snapshot())::text
        || ',"op":"' || op || '","rows":[' || string_agg(item, ',' ORDER BY ord) || ']}'
    FROM (
        SELECT op, ord, item,
               sum(octet_length(item) + 1) OVER (PARTITION BY op ORDER BY ord) / 7000 AS chunk
        FROM (
            SELECT h.op, h.ord, '[' || h.id || ',' || to_json(h.user_id)::text || ']' AS item
            FROM unnest(ops, ids, user_ids) WITH ORDINALITY AS h(op, id, user_id, ord)
        ) items
    ) chunked
    GROUP BY op, chunk
    ORDER BY min(ord);
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
