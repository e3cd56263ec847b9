-- +goose Up

-- Hints v2. pgpush used to fetch every row a hint named, with its user's
-- unread count, before it could send a frame: a round trip per batch. Now a
-- hint carries what the frames need:
--
--   {"v":2,"xmin":<xid8>,"xid":<xid8>,"pid":<int>,"op":"c"|"u"|"d","rows":[[id,"user_id",delta(,PAYLOAD)],...],"sig":"<hex>"}
--   {"v":2,"xmin":<xid8>,"xid":<xid8>,"pid":<int>,"op":"b","users":["user_id",...],"deltas":[delta,...],"sig":"<hex>"}
--   {"v":2,"xid":<xid8>,"op":"r"}
--
-- xid is the writing transaction's top-level id, pid its backend's (a
-- notification names its sender: pgpush takes a signed payload sent by
-- another backend for a replay, and does not trust it). delta is how much the row
-- (for "b": all of the user's rows in the statement) changes its user's
-- unread count; per user and statement the deltas add up to what the trigger
-- records in notifications_unread_delta (it writes the ledger from them, see
-- the end of Up). A row created
-- by an INSERT carries PAYLOAD, json_build_array(kind, title, body, url,
-- data, created_at, read_at), when that is at most 2,000 bytes (and the
-- user id's JSON too: a row stays a few KB). "r" (reset) says counts changed
-- without row hints (TRUNCATE, notifications_unread_recount()).
--
-- Any role may NOTIFY any channel, so hints that carry data are signed: sig
-- is the hex HMAC-SHA256, under the key in notifications_hint_key, of the
-- payload up to (not including) its ',"sig":"' suffix. pgpush trusts the
-- data of a hint only when the signature verifies, and fetches otherwise.
--
-- NOTIFY folds identical payloads of one transaction into one, which would
-- lose deltas (mark read, unread, read again in one transaction); so from
-- the second statement of a transaction that fires these triggers on, a
-- payload carries "seq":<n> (the statement's number among them) before
-- "sig" (or before the closing brace of an "r" hint).
--
-- Without a key (someone deleted the row) hints go unsigned, ending in "}"
-- after their data, rather than not at all.

CREATE TABLE notifications_hint_key (
    single    boolean PRIMARY KEY DEFAULT true CHECK (single),
    key       bytea   NOT NULL,
    inner_pad bytea   NOT NULL,
    outer_pad bytea   NOT NULL
);

COMMENT ON TABLE notifications_hint_key IS
    'pgpush internal: one row, the key that signs NOTIFY hints (HMAC-SHA256). Secret: no grants; only its owner (the SECURITY DEFINER trigger) and pgpush (connecting as the owner, or granted SELECT by the DBA) may read it. Replace it with notifications_hint_key_rotate().';
COMMENT ON COLUMN notifications_hint_key.key IS 'The 32-byte key.';
COMMENT ON COLUMN notifications_hint_key.inner_pad IS 'The key zero-padded to 64 bytes, xor 0x36 (HMAC''s inner key), so the trigger computes none.';
COMMENT ON COLUMN notifications_hint_key.outer_pad IS 'The key zero-padded to 64 bytes, xor 0x5c (HMAC''s outer key).';

-- +goose StatementBegin
CREATE FUNCTION notifications_hint_key_rotate() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    -- gen_random_uuid() draws from pg_strong_random: 244 random bits.
    k bytea := decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex');
    k0 bytea := k || decode(repeat('00', 32), 'hex');
    ipad bytea := k0;
    opad bytea := k0;
BEGIN
    FOR i IN 0..63 LOOP
        ipad := set_byte(ipad, i, get_byte(k0, i) # 54);
        opad := set_byte(opad, i, get_byte(k0, i) # 92);
    END LOOP;
    INSERT INTO notifications_hint_key (key, inner_pad, outer_pad) VALUES (k, ipad, opad)
    ON CONFLICT (single) DO UPDATE
    SET key = excluded.key, inner_pad = excluded.inner_pad, outer_pad = excluded.outer_pad;
END;
$$;
-- +goose StatementEnd

COMMENT ON FUNCTION notifications_hint_key_rotate() IS
    'pgpush: replaces the key that signs NOTIFY hints (for DBAs, e.g. after it leaked). Hints signed with the old key then fail to verify until pgpush reads the new one, and pgpush fetches their rows meanwhile.';
REVOKE ALL ON FUNCTION notifications_hint_key_rotate() FROM PUBLIC;

SELECT notifications_hint_key_rotate();

DROP FUNCTION notifications_hints(text[], bigint[], text[]);

-- +goose StatementBegin
-- Packs row hints into NOTIFY payloads of at most about 7,000 bytes, signed
-- with the given pads (those of notifications_hint_key; NULL sends them
-- unsigned). Arrays are parallel: ops 'c', 'u', 'd', or 'b' (a user whose
-- rows are summed up already: delta is theirs, id ignored); payloads are
-- the rows' PAYLOAD or NULL. A user with more than 32 items is named once
-- in a "b" hint with the sum of their deltas.
CREATE FUNCTION notifications_hints(ops text[], ids bigint[], user_ids text[], deltas integer[], payloads text[],
                                    seq integer, inner_pad bytea, outer_pad bytea)
RETURNS SETOF text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    head text := '{"v":2,"xmin":' || pg_snapshot_xmin(pg_current_snapshot())::text
        || ',"xid":' || pg_current_xact_id()::text || ',"pid":' || pg_backend_pid() || ',"op":"';
    tail text := CASE WHEN seq > 1 THEN ',"seq":' || seq ELSE '' END;
    u text;
    m text;
BEGIN
    -- The common case, one row, needs no chunking.
    IF cardinality(ids) = 1 AND ops[1] <> 'b' THEN
        u := to_json(user_ids[1])::text;
        m := head || ops[1] || '","rows":[[' || ids[1] || ',' || u || ',' || deltas[1]
            || CASE WHEN octet_length(payloads[1]) <= 2000 AND octet_length(u) <= 2000 THEN ',' || payloads[1] ELSE '' END
            || ']]' || tail;
        RETURN NEXT m || coalesce(',"sig":"' || encode(sha256(outer_pad || sha256(inner_pad || convert_to(m, 'UTF8'))), 'hex') || '"}', '}');
        RETURN;
    END IF;
    RETURN QUERY
    WITH h AS (
        SELECT x.op, x.id, x.user_id, x.delta, x.payload, x.ord
        FROM unnest(ops, ids, user_ids, deltas, payloads) WITH ORDINALITY AS x(op, id, user_id, delta, payload, ord)
    ), bulk AS (
        SELECT h.user_id, min(h.ord) AS ord, sum(h.delta) AS delta
        FROM h
        GROUP BY h.user_id
        HAVING count(*) > 32 OR bool_or(h.op = 'b')
    ), items AS (
        SELECT h.op, h.ord,
               '[' || h.id || ',' || j.u || ',' || h.delta
                   || CASE WHEN octet_length(h.payload) <= 2000 AND octet_length(j.u) <= 2000 THEN ',' || h.payload ELSE '' END
                   || ']' AS item,
               NULL::text AS delta
        FROM h CROSS JOIN LATERAL (SELECT to_json(h.user_id)::text AS u) j
        WHERE h.user_id NOT IN (SELECT bulk.user_id FROM bulk)
        UNION ALL
        SELECT 'b', bulk.ord, to_json(bulk.user_id)::text, bulk.delta::text
        FROM bulk
    ), sized AS (
        SELECT items.op, items.ord, items.item, items.delta,
               octet_length(items.item) + 1 + coalesce(octet_length(items.delta) + 1, 0) AS size
        FROM items
    ), chunked AS (
        -- A chunk ends where the running size crosses a multiple of 6,800
        -- less the op's largest item, so no chunk exceeds 6,800 bytes of
        -- items (rows with a PAYLOAD reach a few KB each), nor a payload,
        -- with its head, seq and signature, 7,000 bytes.
        SELECT sized.op, sized.ord, sized.item, sized.delta,
               sum(sized.size) OVER (PARTITION BY sized.op ORDER BY sized.ord)
                   / (6800 - max(sized.size) OVER (PARTITION BY sized.op)) AS chunk
        FROM sized
    ), msgs AS (
        SELECT head || chunked.op
            || CASE WHEN chunked.op = 'b'
                    THEN '","users":[' || string_agg(chunked.item, ',' ORDER BY chunked.ord)
                        || '],"deltas":[' || string_agg(chunked.delta, ',' ORDER BY chunked.ord) || ']'
                    ELSE '","rows":[' || string_agg(chunked.item, ',' ORDER BY chunked.ord) || ']'
               END
            || tail AS m,
            min(chunked.ord) AS ord
        FROM chunked
        GROUP BY chunked.op, chunked.chunk
    )
    SELECT msgs.m || coalesce(',"sig":"' || encode(sha256(outer_pad || sha256(inner_pad || convert_to(msgs.m, 'UTF8'))), 'hex') || '"}', '}')
    FROM msgs
    ORDER BY msgs.ord;
END;
$$;
-- +goose StatementEnd

COMMENT ON FUNCTION notifications_hints(text[], bigint[], text[], integer[], text[], integer, bytea, bytea) IS
    'pgpush: packs row hints (operation, id, user_id, unread delta, row payload) into signed NOTIFY payloads well under the 8,000-byte limit; a user with more than 32 rows in one statement is named once ("b" hint, with the sum of their deltas) instead.';

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION notifications_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    channel text := 'pgpush.' || TG_TABLE_SCHEMA;
    ops text[];
    ids bigint[];
    user_ids text[];
    deltas integer[];
    payloads text[];
    ipad bytea;
    opad bytea;
    one_id bigint;
    one_user text;
    one_delta integer;
    one_payload text;
    rows_seen bigint;
    seq integer;
    u text;
    m text;
    payload text;
BEGIN
    -- This statement's number among its transaction's that fire the
    -- triggers (see "seq" above), in a transaction-local setting. Not a function of
    -- its own: a SQL function's plan would be made again in every
    -- transaction (~30 µs).
    seq := set_config('pgpush.hint_seq',
        (coalesce(nullif(current_setting('pgpush.hint_seq', true), '')::integer, 0) + 1)::text, true)::integer;
    IF TG_OP = 'INSERT' THEN
        -- The hot path, a one-row INSERT, is served by this one query: the
        -- first row with its payload, the key, and whether there are more.
        SELECT n.id, n.user_id, (n.read_at IS NULL)::integer,
               json_build_array(n.kind, n.title, n.body, n.url, n.data, n.created_at, n.read_at)::text,
               k.inner_pad, k.outer_pad,
               (SELECT count(*) FROM (SELECT FROM new_rows LIMIT 2) c)
        INTO one_id, one_user, one_delta, one_payload, ipad, opad, rows_seen
        FROM new_rows n LEFT JOIN notifications_hint_key k ON true
        LIMIT 1;
        IF rows_seen IS NULL THEN
            RETURN NULL;
        END IF;
        IF rows_seen = 1 THEN
            IF one_delta <> 0 THEN
                INSERT INTO notifications_unread_delta (user_id, delta) VALUES (one_user, one_delta);
            END IF;
            u := to_json(one_user)::text;
            m := '{"v":2,"xmin":' || pg_snapshot_xmin(pg_current_snapshot())::text
                || ',"xid":' || pg_current_xact_id()::text || ',"pid":' || pg_backend_pid() || ',"op":"c","rows":[[' || one_id || ',' || u || ',' || one_delta
                || CASE WHEN octet_length(one_payload) <= 2000 AND octet_length(u) <= 2000 THEN ',' || one_payload ELSE '' END
                || ']]' || CASE WHEN seq > 1 THEN ',"seq":' || seq ELSE '' END;
            PERFORM pg_notify(channel,
                m || coalesce(',"sig":"' || encode(sha256(opad || sha256(ipad || convert_to(m, 'UTF8'))), 'hex') || '"}', '}'));
            RETURN NULL;
        END IF;
        -- One sort, by user: a user with more than 32 rows becomes one "b"
        -- item with the sum of their deltas right here (no per-row arrays,
        -- no payloads built for them); the others' rows travel with their
        -- payload, in id order per user.
        SELECT array_agg(x.op), array_agg(x.id), array_agg(x.user_id), array_agg(x.delta), array_agg(x.payload)
        INTO ops, ids, user_ids, deltas, payloads
        FROM (
            SELECT CASE WHEN w.user_rows > 32 THEN 'b' ELSE 'c' END AS op, w.id, w.user_id,
                   CASE WHEN w.user_rows > 32 THEN w.user_unread ELSE (w.read_at IS NULL)::integer END AS delta,
                   CASE WHEN w.user_rows <= 32
                        THEN json_build_array(w.kind, w.title, w.body, w.url, w.data, w.created_at, w.read_at)::text
                   END AS payload
            FROM (
                SELECT n.*, count(*) OVER u AS user_rows,
                       count(*) FILTER (WHERE n.read_at IS NULL) OVER u AS user_unread,
                       row_number() OVER (u ORDER BY n.id) AS k
                FROM new_rows n
                WINDOW u AS (PARTITION BY n.user_id)
            ) w
            WHERE w.user_rows <= 32 OR w.k = 1
        ) x;
    ELSIF TG_OP = 'UPDATE' THEN
        -- A row moved to another user is deleted for the old one and created
        -- for the new one; so is a row whose id changed (the full join). The
        -- deltas add up, per user, to the new rows' unread less the old ones'.
        -- As for INSERT, one sort by user: a user with more than 32 rows
        -- becomes one "b" item with the sum of their deltas here, so a DBA's
        -- 900,000-row UPDATE builds no array of 900,000 items.
        WITH h AS MATERIALIZED (
            SELECT h.op, h.id, h.user_id, h.delta
            FROM new_rows n FULL JOIN old_rows o ON o.id = n.id
            CROSS JOIN LATERAL (VALUES
                (CASE WHEN n.id IS NULL THEN NULL WHEN o.user_id = n.user_id THEN 'u' ELSE 'c' END, n.id, n.user_id,
                 (n.read_at IS NULL)::integer - CASE WHEN o.user_id = n.user_id AND o.read_at IS NULL THEN 1 ELSE 0 END),
                (CASE WHEN o.id IS NOT NULL AND o.user_id IS DISTINCT FROM n.user_id THEN 'd' END, o.id, o.user_id,
                 -(o.read_at IS NULL)::integer)
            ) AS h(op, id, user_id, delta)
            WHERE h.op IS NOT NULL
        ), recorded AS (
            INSERT INTO notifications_deleted (user_id, ids)
            SELECT h.user_id, array_agg(h.id ORDER BY h.id)
            FROM h
            WHERE h.op = 'd'
            GROUP BY h.user_id
        ), w AS (
            SELECT h.op, h.id, h.user_id, h.delta,
                   count(*) OVER u AS user_rows,
                   sum(h.delta) OVER u AS user_delta,
                   row_number() OVER (u ORDER BY h.id, h.op DESC) AS k
            FROM h
            WINDOW u AS (PARTITION BY h.user_id)
        ), x AS (
            SELECT CASE WHEN w.user_rows > 32 THEN 'b' ELSE w.op END AS op, w.id, w.user_id,
                   CASE WHEN w.user_rows > 32 THEN w.user_delta ELSE w.delta END::integer AS delta
            FROM w
            WHERE w.user_rows <= 32 OR w.k = 1
        )
        SELECT array_agg(x.op ORDER BY x.id, x.op DESC), array_agg(x.id ORDER BY x.id, x.op DESC),
               array_agg(x.user_id ORDER BY x.id, x.op DESC), array_agg(x.delta ORDER BY x.id, x.op DESC)
        INTO ops, ids, user_ids, deltas
        FROM x;
    ELSE
        -- One pass over the deleted rows, grouped by user: the record of the
        -- deletions, then the hints (a user with more than 32 rows is named
        -- once, so a big DELETE needs no array of all its rows). A user's
        -- ids are gathered in two arrays, unread and read, which tell each
        -- row's delta without a second array per row.
        WITH g AS MATERIALIZED (
            SELECT o.user_id, count(*) AS n,
                   array_agg(o.id) FILTER (WHERE o.read_at IS NULL) AS unread_ids,
                   array_agg(o.id) FILTER (WHERE o.read_at IS NOT NULL) AS read_ids
            FROM old_rows o
            GROUP BY o.user_id
        ), recorded AS (
            INSERT INTO notifications_deleted (user_id, ids)
            SELECT g.user_id, g.unread_ids || g.read_ids FROM g
        ), h AS (
            SELECT 'b'::text AS op, 0::bigint AS id, g.user_id, -coalesce(cardinality(g.unread_ids), 0) AS delta
            FROM g
            WHERE g.n > 32
            UNION ALL
            SELECT 'd'::text, d.id, g.user_id, -1
            FROM g CROSS JOIN LATERAL unnest(g.unread_ids) AS d(id)
            WHERE g.n <= 32
            UNION ALL
            SELECT 'd'::text, d.id, g.user_id, 0
            FROM g CROSS JOIN LATERAL unnest(g.read_ids) AS d(id)
            WHERE g.n <= 32
        )
        SELECT array_agg(h.op), array_agg(h.id), array_agg(h.user_id), array_agg(h.delta)
        INTO ops, ids, user_ids, deltas
        FROM h;
    END IF;

    IF ids IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO notifications_unread_delta (user_id, delta)
    SELECT x.user_id, sum(x.delta)
    FROM unnest(user_ids, deltas) AS x(user_id, delta)
    GROUP BY x.user_id
    HAVING sum(x.delta) <> 0;
    IF TG_OP <> 'INSERT' THEN
        SELECT k.inner_pad, k.outer_pad INTO ipad, opad FROM notifications_hint_key k;
    END IF;
    FOR payload IN SELECT notifications_hints(ops, ids, user_ids, deltas, payloads, seq, ipad, opad) LOOP
        PERFORM pg_notify(channel, payload);
    END LOOP;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

COMMENT ON FUNCTION notifications_notify() IS
    'pgpush: sends signed pg_notify hints (row ids, user ids, unread deltas, and an INSERT''s small rows) on channel "pgpush.<schema>" for every INSERT, UPDATE and DELETE statement, records deleted (or moved) rows in notifications_deleted, and each user''s unread delta in notifications_unread_delta.';

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

COMMENT ON FUNCTION notifications_unread_recount() IS
    'pgpush: counts every user''s unread rows again from the table (writers wait meanwhile), e.g. after rows were written with triggers disabled (session_replication_role = replica), and sends an "r" hint. Returns the number of users with unread rows.';

-- +goose StatementBegin
-- The "r" (reset) hint: counts changed without row hints. Unsigned: it
-- carries no data, and a forged one only costs pgpush a recount.
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

-- CREATE OR REPLACE dropped the pinned search_path of 00002 and 00006, and
-- the trigger's SECURITY DEFINER and work_mem; set them again, and pin the
-- new functions too.
-- +goose StatementBegin
DO $$
DECLARE
    path text := format('pg_catalog, %I, pg_temp', current_schema());
BEGIN
    EXECUTE format('ALTER FUNCTION notifications_notify() SET search_path = %s', path);
    EXECUTE format('ALTER FUNCTION notifications_hints(text[], bigint[], text[], integer[], text[], integer, bytea, bytea) SET search_path = %s', path);
    EXECUTE format('ALTER FUNCTION notifications_hint_reset() SET search_path = %s', path);
    EXECUTE format('ALTER FUNCTION notifications_hint_key_rotate() SET search_path = %s', path);
    EXECUTE format('ALTER FUNCTION notifications_count() SET search_path = %s', path);
    EXECUTE format('ALTER FUNCTION notifications_unread_recount() SET search_path = %s', path);
END;
$$;
-- +goose StatementEnd

-- The trigger reads the key as the table's owner: writers need no grant on
-- notifications_hint_key (and must have none).
ALTER FUNCTION notifications_notify() SECURITY DEFINER;
ALTER FUNCTION notifications_notify() SET work_mem = '64MB';
ALTER FUNCTION notifications_count() SECURITY DEFINER;

-- notifications_notify writes the unread ledger itself now, from the deltas
-- it computes for the hints anyway: one statement trigger, and one pass
-- over the transition tables, instead of two (a second trigger cost a one-row
-- INSERT ~20-35 us). Only TRUNCATE is left to notifications_count.
DROP TRIGGER notifications_count_insert ON notifications;
DROP TRIGGER notifications_count_update ON notifications;
DROP TRIGGER notifications_count_delete ON notifications;

-- +goose Down
CREATE TRIGGER notifications_count_insert AFTER INSERT ON notifications
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notifications_count();
CREATE TRIGGER notifications_count_update AFTER UPDATE ON notifications
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notifications_count();
CREATE TRIGGER notifications_count_delete AFTER DELETE ON notifications
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notifications_count();
COMMENT ON TRIGGER notifications_count_insert ON notifications IS 'pgpush: keeps the users'' unread counts.';
COMMENT ON TRIGGER notifications_count_update ON notifications IS 'pgpush: keeps the users'' unread counts.';
COMMENT ON TRIGGER notifications_count_delete ON notifications IS 'pgpush: keeps the users'' unread counts.';

-- The function bodies of 00005 and 00006 again, with what CREATE OR REPLACE
-- drops set again after them.

DROP FUNCTION notifications_hints(text[], bigint[], text[], integer[], text[], integer, bytea, bytea);

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

ALTER FUNCTION notifications_notify() SECURITY DEFINER;
ALTER FUNCTION notifications_notify() SET work_mem = '64MB';

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
    RETURN users;
END;
$$;
-- +goose StatementEnd

COMMENT ON FUNCTION notifications_unread_recount() IS
    'pgpush: counts every user''s unread rows again from the table (writers wait meanwhile), e.g. after rows were written with triggers disabled (session_replication_role = replica). Returns the number of users with unread rows.';


-- +goose StatementBegin
CREATE OR REPLACE FUNCTION notifications_count() RETURNS trigger
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

ALTER FUNCTION notifications_count() SECURITY DEFINER;

DROP FUNCTION notifications_hint_reset();
DROP FUNCTION notifications_hint_key_rotate();
DROP TABLE notifications_hint_key;
