package push_test

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/pgpush/pgpush/db/dbtest"
	"github.com/pgpush/pgpush/push"
)

// view is what a client holds, built only from the frames it received:
// rows by id and the unread count of the last frame that carried one.
type view struct {
	rows   map[int64]notification
	unread int64
}

func newView() *view { return &view{rows: make(map[int64]notification)} }

// apply applies one frame the way a client must (SPEC §4).
func (v *view) apply(m msg) {
	switch m.Type {
	case "ready":
		if m.Notifications != nil || m.Resync {
			clear(v.rows)
			for _, n := range m.Notifications {
				v.rows[n.ID] = n
			}
		}
	case "created", "updated":
		v.rows[m.Notification.ID] = *m.Notification
	case "deleted":
		delete(v.rows, m.ID)
	}
	if m.Unread != nil {
		v.unread = *m.Unread
	}
}

// tableView reads what user's view must be: every row of the user and the
// unread count.
func (e *env) tableView(user string) *view {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := e.pool.Query(ctx, `SELECT id, user_id, kind, title, body, url, data::text,
			to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
			to_char(read_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
		FROM notifications WHERE user_id = $1`, user)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	v := newView()
	for rows.Next() {
		var n notification
		var data string
		if err := rows.Scan(&n.ID, &n.UserID, &n.Kind, &n.Title, &n.Body, &n.URL, &data, &n.CreatedAt, &n.ReadAt); err != nil {
			e.t.Fatal(err)
		}
		n.Data = []byte(data)
		v.rows[n.ID] = n
		if n.ReadAt == nil {
			v.unread++
		}
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
	return v
}

// matches reports whether v equals want (diff says how it does not).
func (v *view) matches(want *view) bool {
	if v.unread != want.unread || len(v.rows) != len(want.rows) {
		return false
	}
	for id, w := range want.rows {
		if got, ok := v.rows[id]; !ok || !sameRow(got, w) {
			return false
		}
	}
	return true
}

// diff describes how v differs from want (empty: not at all). Timestamps are
// compared as instants, JSON data as text without spaces.
func (v *view) diff(want *view) string {
	var out []string
	if v.unread != want.unread {
		out = append(out, fmt.Sprintf("unread %d, table %d", v.unread, want.unread))
	}
	ids := slices.Sorted(maps.Keys(want.rows))
	for _, id := range ids {
		got, ok := v.rows[id]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("row %d missing", id))
		case !sameRow(got, want.rows[id]):
			out = append(out, fmt.Sprintf("row %d: holds %s, table %s", id, rowString(got), rowString(want.rows[id])))
		}
	}
	for _, id := range slices.Sorted(maps.Keys(v.rows)) {
		if _, ok := want.rows[id]; !ok {
			out = append(out, fmt.Sprintf("row %d held but not in the table", id))
		}
	}
	if len(out) > 8 {
		out = append(out[:8], fmt.Sprintf("… %d more", len(out)-8))
	}
	return strings.Join(out, "; ")
}

func sameRow(a, b notification) bool {
	return a.ID == b.ID && a.UserID == b.UserID && a.Kind == b.Kind && a.Title == b.Title &&
		a.Body == b.Body && ptrEq(a.URL, b.URL) && sameInstant(&a.CreatedAt, &b.CreatedAt) &&
		sameInstant(a.ReadAt, b.ReadAt) && compactJSON(a.Data) == compactJSON(b.Data)
}

func ptrEq(a, b *string) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

func sameInstant(a, b *string) bool {
	if (a == nil) != (b == nil) {
		return false
	}
	if a == nil {
		return true
	}
	ta, err1 := time.Parse(time.RFC3339Nano, *a)
	tb, err2 := time.Parse(time.RFC3339Nano, *b)
	return err1 == nil && err2 == nil && ta.Equal(tb)
}

func compactJSON(b []byte) string { return strings.ReplaceAll(string(b), " ", "") }

func rowString(n notification) string {
	read := "unread"
	if n.ReadAt != nil {
		read = "read " + *n.ReadAt
	}
	return fmt.Sprintf("{%s %q %s}", n.UserID, n.Title, read)
}

// converge applies c's frames to v until v equals user's table view, and
// fails with the difference if it does not within timeout.
func (e *env) converge(c *client, v *view, user string, timeout time.Duration) {
	e.t.Helper()
	want := e.tableView(user)
	deadline := time.After(timeout)
	for !v.matches(want) {
		select {
		case m, ok := <-c.frames:
			if !ok {
				e.t.Fatalf("connection closed before the view matched the table (%s): %v", v.diff(want), c.closeErr())
			}
			if m.Cursor != "" {
				c.last = m.Cursor
			}
			v.apply(m)
		case <-deadline:
			e.t.Fatalf("the client's view does not match the table after %v: %s", timeout, v.diff(want))
		}
	}
}

// Regression test: one transaction updates two rows of a user in one
// statement and the rows between them in a second one (a bulk hint). The
// dispatcher takes one notification per batch, so the two hints reach the
// connection separately, the second as a catch-up from the table: every row
// must arrive. (The writer once took every id between the live frames'
// lowest and highest of one transaction as sent, and lost the 58 rows.)
func TestMultiStatementTransactionReachesTheOpenSocket(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *push.Config) { push.SetBatchItems(c, 1) })
	c, ready := e.dial("alice", "")
	v := newView()
	v.apply(ready)

	// Other users' single-row inserts run meanwhile.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			if _, err := e.pool.Exec(ctx, `INSERT INTO notifications (user_id, title) VALUES ($1, 'noise')`,
				fmt.Sprintf("other-%d", i%50)); err != nil && ctx.Err() == nil {
				t.Errorf("noise insert: %v", err)
				return
			}
		}
	})
	defer func() { cancel(); wg.Wait() }()

	for round := range 8 {
		var lo, hi int64
		err := e.pool.QueryRow(ctx, `WITH r AS (
				INSERT INTO notifications (user_id, title) SELECT 'alice', 'row ' || g FROM generate_series(1, 60) g
				RETURNING id)
			SELECT min(id), max(id) FROM r`).Scan(&lo, &hi)
		if err != nil {
			t.Fatal(err)
		}
		e.converge(c, v, "alice", 60*time.Second)

		tx, err := e.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `UPDATE notifications SET title = 'edge' WHERE id IN ($1, $2)`, lo, hi); err != nil {
			t.Fatal(err)
		}
		tag, err := tx.Exec(ctx, `UPDATE notifications SET read_at = now()
			WHERE user_id = 'alice' AND id > $1 AND id < $2`, lo, hi)
		if err != nil {
			t.Fatal(err)
		}
		if tag.RowsAffected() != 58 {
			t.Fatalf("round %d: the second statement updated %d rows, want 58", round, tag.RowsAffected())
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		e.converge(c, v, "alice", 60*time.Second)
	}
}

// A client that was offline while rows were inserted, updated, moved to
// another user and deleted (one by one and in bulk) resumes with its cursor
// and ends up holding exactly the table: deletions included.
func TestOfflineDeletionsAreReplayed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	c, ready := e.dial("alice", "")
	v := newView()
	v.apply(ready)
	e.exec(`INSERT INTO notifications (user_id, title) SELECT 'alice', 'old ' || g FROM generate_series(1, 10) g`)
	e.converge(c, v, "alice", 30*time.Second)
	cursor := c.last
	c.ws.CloseNow()
	<-c.done

	var first int64
	if err := e.pool.QueryRow(context.Background(), `SELECT min(id) FROM notifications WHERE user_id = 'alice'`).Scan(&first); err != nil {
		t.Fatal(err)
	}
	e.exec(`DELETE FROM notifications WHERE id = $1`, first)                                                       // one row
	e.exec(`UPDATE notifications SET user_id = 'bob' WHERE id = $1`, first+1)                                      // moved away
	e.exec(`UPDATE notifications SET read_at = now() WHERE id = $1`, first+2)                                      // updated
	e.exec(`INSERT INTO notifications (user_id, title) SELECT 'alice', 'new ' || g FROM generate_series(1, 40) g`) // bulk
	e.exec(`DELETE FROM notifications WHERE user_id = 'alice' AND title LIKE 'new %' AND id % 4 <> 0`)             // bulk deletion
	e.exec(`DELETE FROM notifications WHERE id = $1`, first+3)

	r := e.dialRaw(e.wsURL(token(t, "alice"), cursor), nil)
	var frames []msg
	for {
		m := r.next("")
		frames = append(frames, m)
		if m.Type == "ready" {
			break
		}
	}
	if frames[len(frames)-1].Resync {
		t.Fatal("the resume got a fresh snapshot; this test is about replaying")
	}
	deleted := 0
	for _, m := range frames {
		v.apply(m)
		if m.Type == "deleted" {
			deleted++
		}
	}
	if d := v.diff(e.tableView("alice")); d != "" {
		t.Fatalf("after the resume's replay the client differs from the table: %s", d)
	}
	// 3 rows deleted or moved away from the old ones, 30 of the new ones
	// (ids not divisible by 4 of 40 consecutive ids).
	if deleted != 33 {
		t.Fatalf("%d deleted frames, want 33", deleted)
	}
}

// A DBA deletes every row of many connected users in one statement: each
// client ends up with an empty list and a zero count.
func TestABigDeleteReachesEveryConnectedClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	const users, rows = 40, 1000
	cs := make([]*client, users)
	vs := make([]*view, users)
	for i := range cs {
		var ready msg
		cs[i], ready = e.dial(fmt.Sprintf("u%d", i), "")
		vs[i] = newView()
		vs[i].apply(ready)
	}
	e.exec(`INSERT INTO notifications (user_id, title) SELECT 'u' || (g % $1), 'n' || g FROM generate_series(1, $2) g`, users, users*rows)
	for i := range cs {
		e.converge(cs[i], vs[i], fmt.Sprintf("u%d", i), 60*time.Second)
	}
	e.exec(`DELETE FROM notifications WHERE user_id LIKE 'u%'`)
	for i := range cs {
		e.converge(cs[i], vs[i], fmt.Sprintf("u%d", i), 60*time.Second)
		if len(vs[i].rows) != 0 {
			t.Fatalf("u%d holds %d rows", i, len(vs[i].rows))
		}
	}
}

// The listener must drop notifications when the dispatcher's queue is full
// (here it holds one): the deletions among them reach the client through
// the catch-up that follows.
func TestDeletionsWhoseHintsWereDroppedAreCaughtUp(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *push.Config) { push.SetDispatchQueue(c, 1) })
	c, ready := e.dial("alice", "")
	v := newView()
	v.apply(ready)
	e.exec(`INSERT INTO notifications (user_id, title) SELECT 'alice', 'n' || g FROM generate_series(1, 300) g`)
	e.converge(c, v, "alice", 60*time.Second)

	// 300 single-row deletions, each its own notification, committed at
	// once: far more than the queue holds.
	ctx := context.Background()
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range slices.Sorted(maps.Keys(v.rows)) {
		if _, err := tx.Exec(ctx, `DELETE FROM notifications WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	e.converge(c, v, "alice", 60*time.Second)
	if e.metric("pgpush_notifications_dropped_total") == 0 {
		t.Fatal("no notification was dropped; the test proves nothing")
	}
}

// Marking all read can deadlock with a writer that updates the same rows in
// the opposite order; PostgreSQL aborts one of them, and pgpush retries its
// statement instead of failing the request.
//
// PostgreSQL looks for a deadlock once per wait, deadlock_timeout after the
// wait began, and aborts the one that looks. So that pgpush's statement is
// the one, whatever the machine's load, the server's sessions look after 20 s
// (time for the writer to close the cycle; 5 s was too short under -race on
// a busy machine) and the writer's after a minute; and the server's
// statements may take a minute, since its request's budget
// (StatementTimeout) covers the wait, the deadlock and the retry.
func TestMarkReadSurvivesADeadlock(t *testing.T) {
	t.Parallel()
	url := dbtest.NewDB(t)
	if strings.Contains(url, "?") {
		url += "&deadlock_timeout=20s"
	} else {
		url += "?deadlock_timeout=20s"
	}
	e := newEnvOn(t, url, func(c *push.Config) { c.StatementTimeout = time.Minute })
	ctx := context.Background()
	first := e.insert("alice", "one")
	second := e.insert("alice", "two")
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SET LOCAL deadlock_timeout = '60s'`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE notifications SET title = 'held' WHERE id = $1`, second); err != nil {
		t.Fatal(err)
	}
	done := make(chan response, 1)
	go func() { done <- e.do("POST", "/v1/notifications/read", token(t, "alice"), `{"all":true}`, nil) }()
	// pgpush's UPDATE has taken the first row and waits for the second.
	waitUntil(t, 15*time.Second, "mark read to wait for the held row", func() bool {
		var n int
		err := e.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%read_at = now()%'`).Scan(&n)
		return err == nil && n == 1
	})
	// Now the writer wants the first: a deadlock, which pgpush's statement
	// detects (the writer would only in a minute) and loses.
	if _, err := tx.Exec(ctx, `UPDATE notifications SET title = 'held too' WHERE id = $1`, first); err != nil {
		t.Fatalf("the writer lost the deadlock instead: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.StatusCode != 200 {
		t.Fatalf("mark all read after a deadlock: %d %s", res.StatusCode, res.Body)
	}
	if v := e.tableView("alice"); v.unread != 0 {
		t.Fatalf("%d rows still unread", v.unread)
	}
}

// Recorded deletions are pruned after DeletionsRetention, and a client that
// resumes from before the pruned ones gets a fresh snapshot, not a replay
// that would miss them.
func TestPrunedDeletionsMakeAnOldCursorResync(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *push.Config) {
		c.DeletionsRetention = time.Millisecond
		c.PruneInterval = 20 * time.Millisecond
	})
	c, ready := e.dial("alice", "")
	v := newView()
	v.apply(ready)
	gone := e.insert("alice", "to be deleted")
	e.insert("alice", "stays")
	e.converge(c, v, "alice", 30*time.Second)
	cursor := c.last
	c.ws.CloseNow()
	<-c.done

	e.exec(`DELETE FROM notifications WHERE id = $1`, gone)
	waitUntil(t, 30*time.Second, "the deletion to be recorded and pruned", func() bool {
		var rows int
		var horizon int64
		err := e.pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM notifications_deleted),
			(SELECT horizon::text::bigint FROM notifications_deleted_horizon)`).Scan(&rows, &horizon)
		return err == nil && rows == 0 && horizon > 0
	})
	r := e.dialRaw(e.wsURL(token(t, "alice"), cursor), nil)
	m := r.next("ready")
	if !m.Resync {
		t.Fatalf("a resume from before pruned deletions was replayed: %s", m.Raw)
	}
	v.apply(m)
	if d := v.diff(e.tableView("alice")); d != "" {
		t.Fatalf("after the resync: %s", d)
	}
}

// TestInsertedRowsTravelInTheirHints: a small row an INSERT created reaches
// its user from the signed hint, with no fetch, and the unread count the
// dispatcher keeps from the hints' deltas is the table's after every frame,
// also across a transaction of several statements and a mark-read.
func TestInsertedRowsTravelInTheirHints(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	c, _ := e.dial("alice", "")
	v := newView()
	e.insert("alice", "first") // the count is read once
	v.apply(c.next("created"))
	fetches := e.metric("pgpush_fetch_duration_seconds_count")
	for i := range 10 {
		if i%3 == 0 {
			e.exec(`INSERT INTO notifications (user_id, title, read_at) VALUES ('alice', 'read', now())`)
		} else {
			e.insert("alice", fmt.Sprintf("n%d", i))
		}
		v.apply(c.next("created"))
		if want := e.tableView("alice"); v.unread != want.unread {
			t.Fatalf("after insert %d: unread %d, table %d", i, v.unread, want.unread)
		}
	}
	if got := e.metric("pgpush_fetch_duration_seconds_count"); got != fetches {
		t.Errorf("10 one-row INSERTs took %v fetches, want none", got-fetches)
	}
	// One transaction: an INSERT, then an UPDATE of the same row and a
	// DELETE of another. The row's frame from the INSERT's hint is
	// followed by one from the table with its final fields.
	var first int64
	if err := e.pool.QueryRow(context.Background(), `SELECT min(id) FROM notifications WHERE user_id = 'alice'`).Scan(&first); err != nil {
		t.Fatal(err)
	}
	e.exec(`DO $$
	DECLARE i bigint;
	BEGIN
		INSERT INTO notifications (user_id, title) VALUES ('alice', 'draft') RETURNING id INTO i;
		UPDATE notifications SET title = 'final', read_at = now() WHERE id = i;
		DELETE FROM notifications WHERE id = ` + fmt.Sprint(first) + `;
	END $$`)
	want := e.tableView("alice")
	for !reflect.DeepEqual(v.rows, want.rows) || v.unread != want.unread {
		v.apply(c.next(""))
	}
	e.exec(`UPDATE notifications SET read_at = now() WHERE user_id = 'alice' AND read_at IS NULL`)
	want = e.tableView("alice")
	for !reflect.DeepEqual(v.rows, want.rows) || v.unread != want.unread {
		v.apply(c.next(""))
	}
	if want.unread != 0 {
		t.Fatalf("the table still has %d unread rows", want.unread)
	}
}

// TestTruncateMakesClientsStartAfresh: a TRUNCATE removes rows without row
// hints. A connected client that held rows from before it is closed with
// 1013 and, resuming with its cursor, gets a fresh snapshot that equals the
// table (also the rows the TRUNCATE's own transaction inserted afterwards);
// so does a client that was offline meanwhile. A connection opened after the
// TRUNCATE stays open, and a recount, which removes no rows, closes nothing.
// With one replay page for the whole server, a replay that ends at the
// horizon must give its page back, or the next one waits forever.
func TestTruncateMakesClientsStartAfresh(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *push.Config) { c.ReplayPages = 1 })
	e.insert("alice", "old 1")
	e.insert("alice", "old 2")
	e.insert("bob", "old 3")

	views := map[string]*view{}
	conns := map[string]*client{}
	for _, user := range []string{"alice", "bob"} {
		c, ready := e.dial(user, "")
		views[user] = newView()
		views[user].apply(ready)
		if len(ready.Notifications) == 0 {
			t.Fatalf("%s's ready frame lists no rows: %s", user, ready.Raw)
		}
		conns[user] = c
	}
	off, offReady := e.dial("alice", "")
	offline := offReady.Cursor
	off.ws.CloseNow()
	<-off.done

	e.exec(`TRUNCATE notifications; INSERT INTO notifications (user_id, title) VALUES ('alice', 'after the truncate')`)

	for user, c := range conns {
		if code := c.closed(); code != websocket.StatusTryAgainLater {
			t.Fatalf("%s's connection closed with %d, want 1013", user, code)
		}
		r := e.dialRaw(e.wsURL(token(t, user), c.last), nil)
		m := r.next("ready")
		if !m.Resync {
			t.Fatalf("%s resumed from before the TRUNCATE without a resync: %s", user, m.Raw)
		}
		views[user].apply(m)
		if d := views[user].diff(e.tableView(user)); d != "" {
			t.Fatalf("%s after the resync: %s", user, d)
		}
	}
	if got := e.metric("pgpush_too_far_behind_closes_total"); got != 2 {
		t.Errorf("pgpush_too_far_behind_closes_total is %v after closing alice and bob, want 2", got)
	}
	r := e.dialRaw(e.wsURL(token(t, "alice"), offline), nil)
	if m := r.next("ready"); !m.Resync || len(m.Notifications) != 1 || m.Notifications[0].Title != "after the truncate" {
		t.Fatalf("an offline client resumed from before the TRUNCATE with %s; want a resync with the one new row", m.Raw)
	}

	// After the TRUNCATE: live frames, and a recount (an "r" hint without
	// "truncated") makes no connection replay.
	later, ready := e.dial("carol", "")
	v := newView()
	v.apply(ready)
	catchUps := e.metric("pgpush_catchups_total")
	e.exec(`SELECT notifications_unread_recount()`)
	e.insert("carol", "live")
	v.apply(later.next("created"))
	if d := v.diff(e.tableView("carol")); d != "" {
		t.Fatalf("carol after the TRUNCATE and a recount: %s", d)
	}
	if got := e.metric("pgpush_catchups_total"); got != catchUps {
		t.Errorf("a recount made connections replay: catch-ups %v → %v", catchUps, got)
	}
}
