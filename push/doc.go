// Package push is the pgpush service: it turns committed changes to the
// notifications table into WebSocket frames for the users they concern.
//
// The data flow: a statement-level trigger on notifications sends pg_notify
// hints on channel "pgpush.<schema>" (row ids, user ids, each row's change to
// its user's unread count, the writing transaction and statement's snapshot
// xmin, and an inserted row itself when it is small; signed, see hints.go) →
// the listener (one LISTEN connection per node, proved alive by a heartbeat
// on that connection) parses and checks each payload and hands it to the
// dispatcher without ever waiting → the dispatcher keeps the hints of users
// connected to this node, takes inserted rows from their hints and fetches
// the others in windows of a few MiB, keeps each connected user's unread count
// from the hints' deltas (counts.go), encodes each frame once and advances
// the resume watermark → the hub appends the frame to the bounded queue of
// every connection of the user → each connection's writer drains its queue
// to the WebSocket.
//
// Nothing is lost when a stage cannot keep up: a connection whose queue is
// full falls behind and its writer replays the user's changes from the table
// (rows by changed_xid, deletions from notifications_deleted, which the
// trigger fills);
// notifications the listener could not queue, or that were sent while it was
// disconnected, make every connection replay from the watermark; a user with
// a burst of rows in one batch is caught up the same way, by its
// connections' writers, so that the burst does not hold up others. Resume
// cursors are transaction-id watermarks; dispatcher's comment argues why
// they are correct when transactions commit out of id order. Every frame a
// connection writes passes through one rule, delivered.redundant, which skips
// only what would change nothing the client holds.
//
// Unread counts are not counted from the table: the trigger appends each
// statement's change per user to a ledger, which every node
// folds into per-user totals every second (foldUnread, one node at a time);
// view notifications_unread_counts sums both, exact in every snapshot and a
// few index lookups per user however many rows the user has.
//
// A Server is safe for concurrent use. Create it with New, Start it, serve
// its Handler, and Shutdown or Close it.
package push
