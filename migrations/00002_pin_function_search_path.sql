-- +goose Up

-- The trigger functions run as whoever writes to the table, and used to look
-- names up in that writer's search_path: a writer whose search_path did not
-- name pgpush's schema failed with "function notifications_hints does not
-- exist", and a writer whose search_path listed a schema other roles may
-- create objects in could be made to run their functions or operators. Each
-- function now resolves names in pg_catalog first, then in the schema it
-- lives in, and never in pg_temp before those.

-- +goose StatementBegin
DO $$
DECLARE
    path text := format('pg_catalog, %I, pg_temp', current_schema());
BEGIN
    EXECUTE format('ALTER FUNCTION notifications_notify() SET search_path = %s', path);
    EXECUTE format('ALTER FUNCTION notifications_hints(text[], bigint[], text[]) SET search_path = %s', path);
    EXECUTE format('ALTER FUNCTION notifications_stamp() SET search_path = %s', path);
END;
$$;
-- +goose StatementEnd

-- +goose Down
ALTER FUNCTION notifications_notify() RESET search_path;
ALTER FUNCTION notifications_hints(text[], bigint[], text[]) RESET search_path;
ALTER FUNCTION notifications_stamp() RESET search_path;
