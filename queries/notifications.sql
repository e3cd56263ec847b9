-- name: NotificationListBefore :many
-- A user's rows newest first, older than before (keyset pagination).
SELECT sqlc.embed(notifications)
FROM notifications
WHERE user_id = @user_id AND id < @before
ORDER BY id DESC
LIMIT @row_limit;

-- name: NotificationUnreadCount :one
SELECT count(*)::bigint AS unread
FROM notifications
WHERE user_id = @user_id AND read_at IS NULL;

-- name: NotificationUnreadCounts :many
-- Unread counts of several users at once; users without unread rows are absent.
SELECT user_id, count(*)::bigint AS unread
FROM notifications
WHERE user_id = ANY(@user_ids::text[]) AND read_at IS NULL
GROUP BY user_id;

-- name: NotificationSyncState :one
-- The state a new connection starts from. xmin is a watermark: every
-- transaction below it had finished when this statement ran, so its rows are
-- visible to this and every later query. xmax is the next transaction id to be
-- assigned; a cursor above it comes from another database (or a restored
-- backup) and cannot be trusted.
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax,
       (SELECT count(*) FROM notifications
        WHERE user_id = @user_id AND read_at IS NULL)::bigint AS unread;

-- name: NotificationWatermark :one
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin;

-- name: NotificationsByIDs :many
-- The rows behind a batch of NOTIFY hints, only for users connected here,
-- each with its user's unread count, so that a batch costs one round trip.
-- The counts are a materialized CTE so that they are taken once whatever
-- join the (generic) plan picks.
WITH c AS MATERIALIZED (
    SELECT x.user_id, count(*) AS unread
    FROM notifications x
    WHERE x.user_id = ANY(@user_ids::text[]) AND x.read_at IS NULL
    GROUP BY x.user_id
)
SELECT sqlc.embed(n), coalesce(c.unread, 0)::bigint AS unread
FROM notifications n
LEFT JOIN c ON c.user_id = n.user_id
WHERE n.id = ANY(@ids::bigint[]) AND n.user_id = ANY(@user_ids::text[])
ORDER BY n.id;

-- name: NotificationReplay :many
-- A page of one user's rows written by transactions at or above since, in
-- (changed_xid, id) order after the keyset (after_xid, after_id). created is
-- true when the row was inserted at or after since, i.e. the client never saw it.
SELECT sqlc.embed(notifications),
       (created_xid >= (@since::bigint)::text::xid8) AS created
FROM notifications
WHERE user_id = @user_id
  AND (changed_xid, id) > ((@after_xid::bigint)::text::xid8, @after_id::bigint)
  AND changed_xid >= (@since::bigint)::text::xid8
ORDER BY changed_xid, id
LIMIT @row_limit;

-- name: NotificationCatchUp :many
-- The first page of a catch-up (see NotificationReplay, with no keyset),
-- each row with the user's unread count and its snapshot's xmin (see
-- NotificationSyncState), so that a catch-up of one page is one round trip.
WITH s AS MATERIALIZED (
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin,
           (SELECT count(*) FROM notifications u
            WHERE u.user_id = @user_id AND u.read_at IS NULL)::bigint AS unread
)
SELECT sqlc.embed(n),
       (n.created_xid >= (@since::bigint)::text::xid8) AS created,
       s.xmin, s.unread
FROM notifications n CROSS JOIN s
WHERE n.user_id = @user_id
  AND n.changed_xid >= (@since::bigint)::text::xid8
ORDER BY n.changed_xid, n.id
LIMIT @row_limit;

-- name: NotificationMarkRead :one
-- Marks the user's listed rows read. The unread count is computed from the
-- same snapshot as the update, so it is the count right after it.
WITH marked AS (
    UPDATE notifications SET read_at = now()
    WHERE user_id = @user_id AND id = ANY(@ids::bigint[]) AND read_at IS NULL
    RETURNING id
)
SELECT (SELECT count(*) FROM marked)::bigint AS updated,
       ((SELECT count(*) FROM notifications n WHERE n.user_id = @user_id::text AND n.read_at IS NULL)
        - (SELECT count(*) FROM marked))::bigint AS unread;

-- name: NotificationMarkAllRead :one
WITH marked AS (
    UPDATE notifications SET read_at = now()
    WHERE user_id = @user_id AND read_at IS NULL
    RETURNING id
)
SELECT (SELECT count(*) FROM marked)::bigint AS updated,
       ((SELECT count(*) FROM notifications n WHERE n.user_id = @user_id::text AND n.read_at IS NULL)
        - (SELECT count(*) FROM marked))::bigint AS unread;

-- name: NotificationInsert :one
-- Used by `pgpush dev`'s demo form and by tests; applications insert with any SQL.
INSERT INTO notifications (user_id, kind, title, body, url, data)
VALUES (@user_id, @kind, @title, @body, sqlc.narg(url), @data)
RETURNING id;

-- name: NotificationHeartbeat :exec
-- A node's heartbeat through its own channel: proves that the node's LISTEN
-- connection still receives, and advances every node's resume watermark while
-- no rows are written.
SELECT pg_notify(@channel::text,
    '{"v":1,"op":"h","xmin":' || pg_snapshot_xmin(pg_current_snapshot())::text
    || ',"node":' || to_json(@node::text)::text || '}');

-- name: NotificationReplayCount :one
-- How many rows a resume from since would replay, counting at most row_limit.
SELECT count(*)::bigint AS rows
FROM (SELECT 1 FROM notifications
      WHERE user_id = @user_id AND changed_xid >= (@since::bigint)::text::xid8
      LIMIT @row_limit) r;

-- name: CurrentSchema :one
SELECT current_schema()::text AS schema;

-- name: ListenerBackend :one
-- Identifies the listener's own session, so that the next one can end it if
-- it lingers (see ListenerTerminate).
SELECT pid, backend_start
FROM pg_catalog.pg_stat_activity
WHERE pid = pg_backend_pid();

-- name: ListenerTerminate :one
-- Ends a listener session that this node abandoned (its network path died
-- silently) but that the server still keeps: until it ends, it holds back the
-- NOTIFY queue that every database of the cluster shares. pid and
-- backend_start together name one session; a reused pid does not match.
SELECT coalesce(bool_or(pg_terminate_backend(pid)), false)::bool AS terminated
FROM pg_catalog.pg_stat_activity
WHERE pid = @pid::int AND backend_start = @backend_start::timestamptz;
