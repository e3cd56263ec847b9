-- name: NotificationListBefore :many
-- A user's rows newest first, older than before (keyset pagination).
SELECT sqlc.embed(notifications)
FROM notifications
WHERE user_id = @user_id AND id < @before
ORDER BY id DESC
LIMIT @row_limit;

-- name: NotificationUnreadCount :one
-- Unread counts come from view notifications_unread_counts (kept by trigger
-- notifications_count, see migrations/00006): a few index lookups per user,
-- however many unread rows they have.
SELECT coalesce((SELECT c.unread FROM notifications_unread_counts c WHERE c.user_id = @user_id), 0)::bigint AS unread;

-- name: NotificationUnreadFold :one
-- Folds the unread counts' ledger into the per-user totals: the rows of every
-- transaction below this statement's snapshot xmin (all finished, so every
-- committed one is visible here) are deleted, added to their users' totals,
-- and notifications_unread_folded is raised to that xmin, so the view, which
-- counts only ledger rows at or above it, gives the same sums in every
-- snapshot (see migrations/00006). One node folds at a time (the others find
-- the lock taken and fold nothing); totals are updated in user order.
WITH turn AS MATERIALIZED (
    SELECT pg_try_advisory_xact_lock(hashtext('pgpush.unread_fold.' || current_schema())) AS mine,
           pg_snapshot_xmin(pg_current_snapshot()) AS below
), folded AS (
    DELETE FROM notifications_unread_delta d
    WHERE (SELECT turn.mine FROM turn) AND d.delta_xid < (SELECT turn.below FROM turn)
    RETURNING d.user_id, d.delta
), added AS (
    INSERT INTO notifications_unread AS u (user_id, unread)
    SELECT f.user_id, sum(f.delta) FROM folded f GROUP BY f.user_id ORDER BY f.user_id
    ON CONFLICT (user_id) DO UPDATE SET unread = u.unread + excluded.unread
), raised AS (
    UPDATE notifications_unread_folded
    SET below = greatest(below, (SELECT turn.below FROM turn))
    WHERE (SELECT turn.mine FROM turn)
)
SELECT (SELECT count(*) FROM folded)::bigint AS folded;

-- name: NotificationSyncState :one
-- The state a new connection starts from. xmin is a watermark: every
-- transaction below it had finished when this statement ran, so its rows are
-- visible to this and every later query. xmax is the next transaction id to be
-- assigned; a cursor above it comes from another database (or a restored
-- backup) and cannot be trusted.
-- horizon: a cursor below it may have missed deletions that were pruned
-- since, so it cannot be replayed exactly.
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax,
       (SELECT h.horizon::text::bigint FROM notifications_deleted_horizon h)::bigint AS horizon;

-- name: NotificationSnapshot :many
-- The newest rows of a user for a fresh connection's ready frame, each with
-- the user's unread count, read in one snapshot with them (a user without
-- rows has no unread ones).
WITH c AS MATERIALIZED (
    SELECT coalesce(sum(u.unread), 0)::bigint AS unread
    FROM notifications_unread_counts u
    WHERE u.user_id = @user_id
)
SELECT sqlc.embed(n), c.unread
FROM notifications n CROSS JOIN c
WHERE n.user_id = @user_id
ORDER BY n.id DESC
LIMIT @row_limit;

-- name: NotificationWatermark :one
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin;

-- name: NotificationRowsByIDs :many
-- The rows behind a batch of NOTIFY hints, only for users connected here.
-- Their unread counts are kept by the dispatcher (see push/counts.go).
SELECT sqlc.embed(n)
FROM notifications n
WHERE n.id = ANY(@ids::bigint[]) AND n.user_id = ANY(@user_ids::text[])
ORDER BY n.id;

-- name: NotificationUnreadCountsSeen :one
-- Unread counts of several users (a jsonb object of user id -> count; users
-- without unread rows may be absent) and the snapshot they were read in, so
-- that the dispatcher can tell which later hints' deltas they include.
SELECT pg_current_snapshot()::text AS snapshot,
       (SELECT coalesce(jsonb_object_agg(x.user_id, x.unread), '{}')
        FROM notifications_unread_counts x
        WHERE x.user_id = ANY(@user_ids::text[]))::jsonb AS unread;

-- name: NotificationHintKey :one
-- The key the triggers sign hints with (migrations/00007).
SELECT k.key FROM notifications_hint_key k;

-- name: NotificationReplay :many
-- A page of one user's rows written by transactions at or above since, in
-- (changed_xid, id) order after the keyset (after_xid, after_id), each with
-- the user's unread count read in the same snapshot (a frame's count must
-- match the row it carries; see push/delivered.go). created is true when the
-- row was inserted at or after since, i.e. the client never saw it.
WITH c AS MATERIALIZED (
    SELECT coalesce(sum(u.unread), 0)::bigint AS unread
    FROM notifications_unread_counts u
    WHERE u.user_id = @user_id
)
SELECT sqlc.embed(n),
       (n.created_xid >= (@since::bigint)::text::xid8) AS created,
       c.unread
FROM notifications n CROSS JOIN c
WHERE n.user_id = @user_id
  AND (n.changed_xid, n.id) > ((@after_xid::bigint)::text::xid8, @after_id::bigint)
  AND n.changed_xid >= (@since::bigint)::text::xid8
ORDER BY n.changed_xid, n.id
LIMIT @row_limit;

-- name: NotificationDeletedSince :many
-- The start of a replay: the ids of the user's rows deleted (or moved to
-- another user) by transactions at or above since that are not the user's
-- again, at most row_limit of them, after the keyset after_id; with the
-- user's unread count and the deletions' horizon (see NotificationSyncState),
-- all from one snapshot. When there are none, one row that found nothing.
WITH s AS MATERIALIZED (
    SELECT (SELECT coalesce(sum(u.unread), 0) FROM notifications_unread_counts u
            WHERE u.user_id = @user_id)::bigint AS unread,
           (SELECT h.horizon::text::bigint FROM notifications_deleted_horizon h)::bigint AS horizon
)
SELECT s.unread, s.horizon, (d.id IS NOT NULL)::bool AS found, coalesce(d.id, 0)::bigint AS id
FROM s LEFT JOIN LATERAL (
    SELECT DISTINCT x.id
    FROM notifications_deleted t CROSS JOIN LATERAL unnest(t.ids) AS x(id)
    WHERE t.user_id = @user_id
      AND t.deleted_xid >= (@since::bigint)::text::xid8
      AND x.id > @after_id::bigint
      AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.id = x.id AND n.user_id = @user_id)
    ORDER BY x.id
    LIMIT @row_limit
) d ON true
ORDER BY d.id;

-- name: NotificationDeletedPrune :one
-- Forgets deletions recorded more than retention_seconds ago (by the
-- database's clock) and moves the horizon above every one it forgot (see
-- NotificationSyncState).
WITH gone AS (
    DELETE FROM notifications_deleted
    WHERE deleted_at < now() - make_interval(secs => @retention_seconds::float8)
    RETURNING deleted_xid::text::bigint AS xid
), moved AS (
    UPDATE notifications_deleted_horizon
    SET horizon = greatest(horizon, ((SELECT max(gone.xid) FROM gone) + 1)::text::xid8)
    WHERE EXISTS (SELECT 1 FROM gone)
    RETURNING horizon
)
SELECT (SELECT count(*) FROM gone)::bigint AS pruned;

-- name: NotificationMarkRead :one
-- Marks the user's listed rows read. The unread count is read in the same
-- snapshot as the update (which does not see its own trigger's ledger rows),
-- less the rows it marked: the count right after it.
WITH marked AS (
    UPDATE notifications SET read_at = now()
    WHERE user_id = @user_id AND id = ANY(@ids::bigint[]) AND read_at IS NULL
    RETURNING id
)
SELECT (SELECT count(*) FROM marked)::bigint AS updated,
       ((SELECT coalesce(sum(c.unread), 0) FROM notifications_unread_counts c WHERE c.user_id = @user_id::text)
        - (SELECT count(*) FROM marked))::bigint AS unread;

-- name: NotificationMarkAllRead :one
WITH marked AS (
    UPDATE notifications SET read_at = now()
    WHERE user_id = @user_id AND read_at IS NULL
    RETURNING id
)
SELECT (SELECT count(*) FROM marked)::bigint AS updated,
       ((SELECT coalesce(sum(c.unread), 0) FROM notifications_unread_counts c WHERE c.user_id = @user_id::text)
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
-- How many frames a resume from since would replay (changed rows and
-- deletions), counting at most row_limit of each.
SELECT ((SELECT count(*)
        FROM (SELECT 1 FROM notifications n
              WHERE n.user_id = @user_id AND n.changed_xid >= (@since::bigint)::text::xid8
              LIMIT @row_limit) r)
     + (SELECT count(*)
        FROM (SELECT 1
              FROM notifications_deleted t CROSS JOIN LATERAL unnest(t.ids) AS x(id)
              WHERE t.user_id = @user_id AND t.deleted_xid >= (@since::bigint)::text::xid8
              LIMIT @row_limit) d))::bigint AS frames;

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
