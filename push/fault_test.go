package push_test

// Fault tests: each injects a real fault (a killed backend, a silent network,
// a restarted or partitioned database, a client that stops reading, a burst,
// a long transaction) and asserts that nothing is lost and nobody else is
// held up. Helpers are at the end of the file.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgpush/pgpush/db/dbtest"
	"github.com/pgpush/pgpush/push"
)

// fastFaults makes the listener notice faults and reconnect quickly.
func fastFaults(c *push.Config) {
	c.HeartbeatInterval = 200 * time.Millisecond
	c.ReconnectMin = 20 * time.Millisecond
	c.ReconnectMax = 200 * time.Millisecond
}

// Item 1: the listener's backend is killed (pg_terminate_backend) and, to make
// the gap real, cannot come back for a while. Rows committed in the gap,
// a 1 MiB one among them, reach every connected client from the table; the
// clients stay connected; /readyz is 503 while the listener is down.
func TestListenerKilledRowsOfTheGapAreReplayed(t *testing.T) {
	t.Parallel()
	dbURL := dbtest.NewDB(t)
	proxy := newPGProxy(t, dbURL)
	e := newFaultEnv(t, dbURL, proxy.url(dbURL), fastFaults)

	phone, _ := e.dial("alice", "")
	laptop, _ := e.dial("alice", "")
	bob, _ := e.dial("bob", "")
	seen := e.insert("alice", "before")
	for _, c := range []*client{phone, laptop} {
		c.next("created")
	}
	oldPID := e.listenerPID()

	proxy.refuse(listenerApp, true)
	e.exec(`SELECT pg_terminate_backend($1)`, oldPID)
	start := time.Now()
	e.waitReady(false, 5*time.Second)
	t.Logf("listener loss seen by /readyz after %v", time.Since(start).Round(time.Millisecond))

	// The gap: rows for both users, a change to a row seen before, a big row.
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	var gap []int64
	for i := range 5 {
		gap = append(gap, e.insert("alice", fmt.Sprintf("gap %d", i)))
	}
	var bigID int64
	if err := e.pool.QueryRow(context.Background(),
		`INSERT INTO notifications (user_id, title, body) VALUES ('alice', 'big', $1) RETURNING id`, big).Scan(&bigID); err != nil {
		t.Fatal(err)
	}
	gap = append(gap, bigID)
	bobGap := e.insert("bob", "gap for bob")
	e.exec(`UPDATE notifications SET read_at = now() WHERE id = $1`, seen)
	if e.get("/readyz", "").StatusCode != http.StatusServiceUnavailable {
		t.Fatal("/readyz is not 503 while the listener is kept out")
	}

	proxy.refuse(listenerApp, false)
	start = time.Now()
	e.waitReady(true, 10*time.Second)
	t.Logf("listener back %v after it was let in", time.Since(start).Round(time.Millisecond))
	if pid := e.listenerPID(); pid == oldPID {
		t.Fatal("the listener still has its killed backend")
	}

	for _, c := range []*client{phone, laptop} {
		got := c.collect(len(gap)+1, func(m msg) (string, bool) {
			switch {
			case m.Type == "created" && m.Notification.Title != "before":
				if m.Notification.ID == bigID && m.Notification.Body != big {
					t.Fatalf("the 1 MiB row arrived with a %d-byte body", len(m.Notification.Body))
				}
				return "c" + strconv.FormatInt(m.Notification.ID, 10), true
			case m.Notification != nil && m.Notification.ID == seen && m.Notification.ReadAt != nil:
				return "read", true
			}
			return "", false
		})
		for _, id := range gap {
			if !got["c"+strconv.FormatInt(id, 10)] {
				t.Fatalf("row %d of the gap never arrived", id)
			}
		}
	}
	bob.nextMatching("bob's gap row", func(m msg) bool { return m.Type == "created" && m.Notification.ID == bobGap })

	// Live again, on the same sockets: a deletion arrives as one.
	e.exec(`DELETE FROM notifications WHERE id = $1`, gap[0])
	for _, c := range []*client{phone, laptop} {
		c.nextMatching("the live deletion", func(m msg) bool { return m.Type == "deleted" && m.ID == gap[0] })
	}
	if n := e.listenerSessions(); n != 1 {
		t.Fatalf("%d listener sessions, want 1", n)
	}
}

// Item 1: the listener's network path goes silent (a proxy that stops
// forwarding without closing anything) while no notifications flow. The
// heartbeat on the listen connection finds it within seconds; the rows of the
// gap are replayed; the abandoned backend, which would hold back the
// cluster's NOTIFY queue, is ended by the next session.
func TestListenerSilentNetworkIsDetectedAndReplaced(t *testing.T) {
	t.Parallel()
	dbURL := dbtest.NewDB(t)
	proxy := newPGProxy(t, dbURL)
	e := newFaultEnv(t, dbURL, proxy.url(dbURL), fastFaults)
	c, _ := e.dial("alice", "")
	e.insert("alice", "before")
	c.next("created")
	oldPID := e.listenerPID()

	proxy.refuse(listenerApp, true)
	start := time.Now()
	proxy.freeze(listenerApp)
	e.waitReady(false, 5*time.Second)
	detected := time.Since(start)
	t.Logf("silent listener connection detected after %v (heartbeat interval 200ms)", detected.Round(time.Millisecond))

	id := e.insert("alice", "in the silence")
	proxy.refuse(listenerApp, false)
	e.waitReady(true, 10*time.Second)
	c.nextMatching("the row sent into the silence", func(m msg) bool { return m.Type == "created" && m.Notification.ID == id })

	waitUntil(t, 10*time.Second, "the abandoned listener backend to be ended", func() bool {
		var n int
		if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, oldPID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
	if n := e.listenerSessions(); n != 1 {
		t.Fatalf("%d listener sessions, want 1", n)
	}
	if u := e.queueUsage(); u > 0.001 {
		t.Fatalf("pg_notification_queue_usage() = %v", u)
	}
	id = e.insert("alice", "live again")
	c.nextMatching("a live row", func(m msg) bool { return m.Type == "created" && m.Notification.ID == id })
}

// Item 2: the database restarts under open WebSockets, and then pgpush is cut
// off from a running database (a partition) while rows are committed. The
// sockets stay open, the pool and the listener recover on their own, the rows
// of the partition are replayed and later ones arrive live, and the outage
// is logged in a line or two, not a flood.
func TestDatabaseRestartAndPartition(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster of its own")
	}
	t.Parallel()
	cluster := dbtest.NewCluster(t)
	dbURL := cluster.URL("pgpush")
	proxy := newPGProxy(t, dbURL)
	logs := &logRecorder{}
	e := newFaultEnv(t, dbURL, proxy.url(dbURL), func(c *push.Config) {
		fastFaults(c)
		c.Logger = slog.New(logs)
	})
	alice, _ := e.dial("alice", "")
	bob, _ := e.dial("bob", "")
	e.insert("alice", "before")
	alice.next("created")

	// Restart.
	ctx := t.Context()
	mark := logs.count(slog.LevelWarn)
	if err := cluster.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitReady(false, 5*time.Second)
	alice.send(map[string]any{"type": "ping"})
	alice.next("pong") // the socket lives on without its database
	if err := cluster.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e.pool.Reset() // the test's own connections died with the server
	start := time.Now()
	e.waitReady(true, 15*time.Second)
	t.Logf("ready %v after the database came back", time.Since(start).Round(time.Millisecond))
	id := e.insert("alice", "after the restart")
	isRow := func(m msg) bool { return m.Notification != nil && m.Notification.ID == id }
	alice.nextMatching("the row written after the restart", isRow)
	// The pool works again: mark read over the socket, list over HTTP. (The
	// change may come as "updated", or, if the catch-up that follows the
	// reconnect reads the row after it, as the row replayed in its new
	// state.)
	alice.send(map[string]any{"type": "read", "ids": []int64{id}})
	alice.nextMatching("the row marked read", func(m msg) bool {
		if m.Type == "error" {
			t.Fatalf("mark read after the restart: %s", m.Raw)
		}
		return isRow(m) && m.Notification.ReadAt != nil
	})
	if res := e.get("/v1/notifications", token(t, "alice")); res.StatusCode != http.StatusOK {
		t.Fatalf("list after the restart: %d %s", res.StatusCode, res.Body)
	}
	if n := logs.count(slog.LevelWarn) - mark; n < 1 || n > 2 {
		t.Fatalf("the restart logged %d warnings, want 1 or 2:\n%s", n, logs.dump())
	}

	// Partition: pgpush loses every connection and cannot make new ones,
	// while the database takes writes.
	mark = logs.count(slog.LevelWarn)
	proxy.refuse("", true)
	proxy.cut("")
	e.waitReady(false, 5*time.Second)
	var lost []int64
	for i := range 20 {
		lost = append(lost, e.insert("bob", fmt.Sprintf("during the partition %d", i)))
	}
	proxy.refuse("", false)
	e.waitReady(true, 15*time.Second)
	got := bob.collect(len(lost), func(m msg) (string, bool) {
		if m.Type == "created" {
			return strconv.FormatInt(m.Notification.ID, 10), true
		}
		return "", false
	})
	for _, id := range lost {
		if !got[strconv.FormatInt(id, 10)] {
			t.Fatalf("row %d committed during the partition never arrived", id)
		}
	}
	id = e.insert("bob", "after the partition")
	bob.nextMatching("a live row after the partition", func(m msg) bool { return m.Type == "created" && m.Notification.ID == id })
	if n := logs.count(slog.LevelWarn) - mark; n < 1 || n > 2 {
		t.Fatalf("the partition logged %d warnings, want 1 or 2:\n%s", n, logs.dump())
	}
}

// Item 2: the database stops while a connection is being caught up from the
// table (a slow client behind a burst). The socket stays open, and once the
// database is back the catch-up resumes and delivers every row.
func TestDatabaseStopDuringACatchUpKeepsTheSocket(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster of its own")
	}
	t.Parallel()
	cluster := dbtest.NewCluster(t)
	e := newFaultEnv(t, cluster.URL("pgpush"), cluster.URL("pgpush"), func(c *push.Config) {
		fastFaults(c)
		c.QueueMessages = 8
	})
	const rows = 1500
	slow := e.dialCounter("alice", 2*time.Millisecond)
	e.exec(`INSERT INTO notifications (user_id, title, body)
		SELECT 'alice', 'n' || g, repeat('x', 8000) FROM generate_series(1, $1) g`, rows)
	waitUntil(t, 20*time.Second, "the catch-up to be under way", func() bool { return slow.count() >= 100 })
	if err := cluster.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if slow.count() >= rows {
		t.Fatal("the catch-up finished before the database stopped; the test proves nothing")
	}
	e.waitReady(false, 5*time.Second)
	if err := cluster.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.pool.Reset()
	slow.waitFor(rows, 60*time.Second)
	if !slow.inOrder() {
		t.Fatal("rows out of order")
	}
}

// Item 2: failover to a new primary that lost the last transactions (or a
// restore): the server at the database's address now has lower transaction
// ids than the cursors handed out. pgpush notices on reconnect and closes
// the sockets with 1013; a client that resumes with its (future) cursor gets
// a fresh snapshot marked resync, then live rows again.
func TestFailoverToADatabaseThatLostTransactions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two clusters of its own")
	}
	t.Parallel()
	oldPrimary, newPrimary := dbtest.NewCluster(t), dbtest.NewCluster(t)
	ctx := t.Context()
	// The old primary has run many more transactions than the new one.
	old := dbtest.Pool(t, oldPrimary.URL("pgpush"))
	if _, err := old.Exec(ctx, `DO $$ BEGIN FOR i IN 1..2000 LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$`); err != nil {
		t.Fatal(err)
	}
	proxy := newPGProxy(t, oldPrimary.URL("pgpush"))
	e := newFaultEnv(t, oldPrimary.URL("pgpush"), proxy.url(oldPrimary.URL("pgpush")), fastFaults)
	c, _ := e.dial("alice", "")
	e.insert("alice", "on the old primary")
	cursor := c.next("created").Cursor

	proxy.retarget(newPrimary.URL("pgpush"))
	proxy.cut("")
	if code := c.closed(); code != websocket.StatusTryAgainLater {
		t.Fatalf("close code %d, want 1013", code)
	}
	e.pool = dbtest.Pool(t, newPrimary.URL("pgpush"))
	e.waitReady(true, 10*time.Second)
	c2 := e.dialRaw(e.wsURL(token(t, "alice"), cursor), nil)
	if m := c2.next("ready"); !m.Resync {
		t.Fatalf("resume with a cursor from the lost timeline: %s", m.Raw)
	}
	id := e.insert("alice", "on the new primary")
	c2.nextMatching("a live row on the new primary", func(m msg) bool { return m.Type == "created" && m.Notification.ID == id })
}

// Item 4: a client that stops reading. Rows aimed at it (30,000 of 10 KB)
// neither block the listener, nor another user, nor another connection of the
// same user; the server's memory grows by a bounded amount; the NOTIFY queue
// stays empty; no pgpush session sits in a transaction while writing; and
// the stuck connection is closed once a write times out.
//
// Not parallel: it measures this process's heap, which the other tests
// would disturb (parallel tests wait while it runs).
func TestAClientThatStopsReadingCostsBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 300 MB of rows")
	}
	dbURL := dbtest.NewDB(t)
	e := newFaultEnv(t, dbURL, dbURL, func(c *push.Config) {
		c.WriteTimeout = 4 * time.Second
	})
	stuck := e.dialStuck("alice")
	reader := e.dialCounter("alice", 0)
	bob, _ := e.dial("bob", "")

	const rows, size = 30_000, 10 << 10
	base := heapAfterGC()
	var peak atomic.Uint64
	var maxQueue atomic.Value
	maxQueue.Store(0.0)
	var idleInTx atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		// The live heap as of each GC: what the server holds, without
		// the garbage a collection would free.
		sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			metrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > peak.Load() {
				peak.Store(v)
			}
		}
	})
	wg.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			var u float64
			var n int64
			err := e.pool.QueryRow(context.Background(), `SELECT pg_notification_queue_usage(),
				(SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgpush%' AND state LIKE 'idle in transaction%')`).Scan(&u, &n)
			if err != nil {
				continue
			}
			if u > maxQueue.Load().(float64) {
				maxQueue.Store(u)
			}
			idleInTx.Add(n)
		}
	})

	started := time.Now()
	e.exec(`INSERT INTO notifications (user_id, title, body)
		SELECT 'alice', 'row ' || g, repeat(md5(g::text), $1 / 32) FROM generate_series(1, $2) g`, size, rows)
	inserted := time.Since(started)
	marker := e.insert("bob", "not held up")
	bob.nextMatching("bob's row", func(m msg) bool { return m.Type == "created" && m.Notification.ID == marker })
	bobLatency := time.Since(started) - inserted
	reader.waitFor(rows, 60*time.Second)
	readerDone := time.Since(started)
	after := heapAfterGC()
	close(stop)
	wg.Wait()

	growth := int64(after) - int64(base)
	peakGrowth := int64(peak.Load()) - int64(base)
	t.Logf("insert %v; bob's row %v after it; the reading connection had all %d rows after %v",
		inserted.Round(time.Millisecond), bobLatency.Round(time.Millisecond), rows, readerDone.Round(time.Millisecond))
	t.Logf("heap in use: base %d MiB, after GC %+d MiB; live heap peaked %+d MiB; max NOTIFY queue usage %v",
		base>>20, growth>>20, peakGrowth>>20, maxQueue.Load())
	if growth > 48<<20 {
		t.Errorf("heap grew by %d MiB with a stuck client", growth>>20)
	}
	if peakGrowth > 64<<20 {
		t.Errorf("the live heap peaked %d MiB above the base with a stuck client", peakGrowth>>20)
	}
	if u := maxQueue.Load().(float64); u > 0.001 {
		t.Errorf("pg_notification_queue_usage() reached %v", u)
	}
	if n := idleInTx.Load(); n != 0 {
		t.Errorf("saw a pgpush session idle in a transaction %d times", n)
	}
	if !reader.inOrder() {
		t.Error("the reading connection got rows out of order")
	}
	stuck.waitClosedByServer(e, 30*time.Second)
}

// Item 4: a client that reads, but slower than rows come, falls behind its
// small queue and is caught up from the table: it gets every row, in order,
// and stays connected.
func TestASlowClientIsCaughtUpFromTheTable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *push.Config) { c.QueueMessages = 8 })
	slow := e.dialCounter("alice", time.Millisecond)
	fast, _ := e.dial("alice", "")
	const n = 400
	for i := range 40 {
		e.exec(`INSERT INTO notifications (user_id, title) SELECT 'alice', 'n' || g FROM generate_series($1::int, $1::int + 9) g`, i*10)
	}
	fast.collect(n, func(m msg) (string, bool) {
		if m.Type == "created" {
			return strconv.FormatInt(m.Notification.ID, 10), true
		}
		return "", false
	})
	slow.waitFor(n, 30*time.Second)
	if !slow.inOrder() {
		t.Fatal("the slow connection got rows out of order")
	}
	if slow.closedErr() != nil {
		t.Fatalf("the slow connection was closed: %v", slow.closedErr())
	}
	if v := e.metric("pgpush_catchups_total"); v == 0 {
		t.Fatal("the slow connection never fell behind; the test proves nothing")
	}
}

// Item 5: one statement inserts 100,000 rows for 100 connected users; each
// gets its 1,000, in order, and a user outside the burst is not held up for
// long.
//
// Not parallel: it measures a latency, and its 100 clients and the race
// detector would otherwise compete with the other tests for the CPU.
func TestABurstFor100UsersIsDeliveredInFull(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	e := newEnv(t, nil)
	const users, each = 100, 1000
	readers := make([]*counter, users)
	for i := range readers {
		readers[i] = e.dialCounter(fmt.Sprintf("u%d", i), 0)
	}
	carol, _ := e.dial("carol", "")
	started := time.Now()
	e.exec(`INSERT INTO notifications (user_id, title) SELECT 'u' || (g % $1), 'n' || g FROM generate_series(1, $2) g`, users, users*each)
	inserted := time.Since(started)
	id := e.insert("carol", "outside the burst")
	carol.nextMatching("carol's row", func(m msg) bool { return m.Type == "created" && m.Notification.ID == id })
	carolAfter := time.Since(started) - inserted
	for i, r := range readers {
		r.waitFor(each, 60*time.Second)
		if !r.inOrder() {
			t.Fatalf("user u%d got rows out of order", i)
		}
	}
	t.Logf("insert %v; carol's row %v after it; all 100,000 delivered %v after the insert",
		inserted.Round(time.Millisecond), carolAfter.Round(time.Millisecond), (time.Since(started) - inserted).Round(time.Millisecond))
	if carolAfter > 20*time.Second { // loose: -race on a loaded 2-core machine
		t.Fatalf("carol waited %v behind the burst", carolAfter)
	}
}

// Item 5: a resume with up to ReplayLimit rows missed replays them one per
// frame before "ready"; one with more gets a fresh snapshot marked resync.
func TestAResumeReplaysAtMostReplayLimitRows(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	c, ready := e.dial("alice", "")
	cursor := ready.Cursor
	c.ws.CloseNow()
	e.exec(`INSERT INTO notifications (user_id, title) SELECT 'alice', 'n' || g FROM generate_series(1, 1000) g`)

	frames, ready := resume(e, "alice", cursor)
	if frames != 1000 || ready.Resync {
		t.Fatalf("resume over 1,000 rows: %d frames, ready %s", frames, ready.Raw)
	}
	e.insert("alice", "one too many")
	frames, ready = resume(e, "alice", cursor)
	if frames != 0 || !ready.Resync || len(ready.Notifications) != 20 || *ready.Unread != 1001 {
		t.Fatalf("resume over 1,001 rows: %d frames, ready resync=%v with %d notifications, unread %d",
			frames, ready.Resync, len(ready.Notifications), *ready.Unread)
	}
}

// Item 7: a transaction left open elsewhere holds every watermark back. A
// resume then replays at most ReplayLimit rows (past that, a fresh
// snapshot), never the whole history since the transaction began.
func TestALongTransactionCannotMakeAResumeUnbounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *push.Config) { c.ReplayLimit = 50 })
	ctx := context.Background()
	e.exec(`CREATE TABLE elsewhere (x int)`)
	long, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Rollback(ctx)
	if _, err := long.Exec(ctx, `INSERT INTO elsewhere VALUES (1)`); err != nil {
		t.Fatal(err)
	}

	c, _ := e.dial("alice", "")
	for range 3 {
		e.exec(`INSERT INTO notifications (user_id, title) SELECT 'alice', 'n' || g FROM generate_series(1, 30) g`)
	}
	var last msg
	for range 90 {
		last = c.next("created")
	}
	c.ws.CloseNow()

	// The client saw everything, but its cursor cannot pass the open
	// transaction: a resume would cover all 90 rows.
	frames, ready := resume(e, "alice", last.Cursor)
	if frames > 50 || !ready.Resync {
		t.Fatalf("resume behind a long transaction: %d frames, ready %s", frames, ready.Raw)
	}
	// The database holds no pgpush transaction meanwhile.
	var n int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND state LIKE 'idle in transaction%' AND pid <> $1`, long.Conn().PgConn().PID()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d other sessions idle in a transaction", n)
	}
}

// resume connects as user with cursor and counts the frames before "ready".
func resume(e *env, user, cursor string) (int, msg) {
	e.t.Helper()
	c := e.dialRaw(e.wsURL(token(e.t, user), cursor), nil)
	defer c.ws.CloseNow()
	frames := 0
	for {
		m := c.next("")
		if m.Type == "ready" {
			return frames, m
		}
		if m.Notification == nil {
			e.t.Fatalf("replay frame without a row: %s", m.Raw)
		}
		frames++
	}
}

// ---- helpers ----

const listenerApp = "pgpush-listener"

// newFaultEnv starts a server whose pool connects to serverURL (a proxy, or
// the database itself) with application_name "pgpush", while the test's own
// pool connects to dbURL directly.
func newFaultEnv(t testing.TB, dbURL, serverURL string, tweak func(*push.Config)) *env {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(serverURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "pgpush"
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e := startEnv(t, dbURL, pool, testVerifier(t), tweak)
	e.pool = dbtest.Pool(t, dbURL)
	return e
}

// listenerPID returns the backend pid of the server's LISTEN session.
func (e *env) listenerPID() int32 {
	e.t.Helper()
	var pid int32
	waitUntil(e.t, 10*time.Second, "one listener session", func() bool {
		err := e.pool.QueryRow(context.Background(), `SELECT pid FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = $1 AND state = 'idle'`, listenerApp).Scan(&pid)
		return err == nil
	})
	return pid
}

func (e *env) listenerSessions() int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $1`, listenerApp).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *env) queueUsage() float64 {
	e.t.Helper()
	var u float64
	if err := e.pool.QueryRow(context.Background(), `SELECT pg_notification_queue_usage()`).Scan(&u); err != nil {
		e.t.Fatal(err)
	}
	return u
}

// metric returns the value of an unlabelled metric from /metrics.
func (e *env) metric(name string) float64 {
	e.t.Helper()
	for line := range strings.SplitSeq(string(e.get("/metrics", "").Body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				e.t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	e.t.Fatalf("no metric %s", name)
	return 0
}

// collect reads frames until key has reported n distinct keys, and returns
// them. Frames for which key says false are skipped.
func (c *client) collect(n int, key func(msg) (string, bool)) map[string]bool {
	c.t.Helper()
	got := map[string]bool{}
	for len(got) < n {
		m := c.nextMatching(fmt.Sprintf("%d more frames", n-len(got)), func(m msg) bool {
			_, ok := key(m)
			return ok
		})
		k, _ := key(m)
		got[k] = true
	}
	return got
}

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// counter is a client that keeps no frames: it counts the distinct rows
// created for it and checks their order, so that tests can push hundreds of
// megabytes through it without the test's memory growing.
type counter struct {
	t     testing.TB
	ws    *websocket.Conn
	delay time.Duration // per frame, for a slow reader

	mu      sync.Mutex
	seen    map[int64]bool
	maxID   int64
	ordered bool
	err     error
	done    chan struct{}
}

// dialCounter connects as user; the counter sleeps delay after each frame.
func (e *env) dialCounter(user string, delay time.Duration) *counter {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, e.wsURL(token(e.t, user), ""), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	ws.SetReadLimit(32 << 20)
	k := &counter{t: e.t, ws: ws, delay: delay, seen: map[int64]bool{}, ordered: true, done: make(chan struct{})}
	ready := make(chan struct{})
	go k.read(ready)
	e.t.Cleanup(func() { ws.CloseNow(); <-k.done })
	select {
	case <-ready:
	case <-time.After(15 * time.Second):
		e.t.Fatal("no ready frame")
	}
	return k
}

var createdPrefix = []byte(`{"type":"created","notification":{"id":`)

func (k *counter) read(ready chan struct{}) {
	defer close(k.done)
	first := true
	for {
		_, b, err := k.ws.Read(context.Background())
		if err != nil {
			k.mu.Lock()
			k.err = err
			k.mu.Unlock()
			return
		}
		if first {
			first = false
			close(ready)
			continue
		}
		if k.delay > 0 {
			time.Sleep(k.delay) // a slow reader, not a synchronisation
		}
		rest, ok := bytes.CutPrefix(b, createdPrefix)
		if !ok {
			continue
		}
		end := bytes.IndexByte(rest, ',')
		id, err := strconv.ParseInt(string(rest[:end]), 10, 64)
		if err != nil {
			continue
		}
		k.mu.Lock()
		if !k.seen[id] {
			if id < k.maxID {
				k.ordered = false
			}
			k.seen[id] = true
			k.maxID = max(k.maxID, id)
		}
		k.mu.Unlock()
	}
}

func (k *counter) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.seen)
}

func (k *counter) inOrder() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.ordered
}

func (k *counter) closedErr() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.err
}

func (k *counter) waitFor(n int, timeout time.Duration) {
	k.t.Helper()
	waitUntil(k.t, timeout, fmt.Sprintf("%d rows (have %d)", n, k.count()), func() bool {
		if err := k.closedErr(); err != nil {
			k.t.Fatalf("connection closed after %d rows: %v", k.count(), err)
		}
		return k.count() >= n
	})
}

// stuckClient is a WebSocket that never reads, over a socket with a small
// receive buffer, so that the server's writes soon block.
type stuckClient struct {
	t  testing.TB
	ws *websocket.Conn
}

func (e *env) dialStuck(user string) *stuckClient {
	e.t.Helper()
	dialer := &net.Dialer{}
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err == nil {
				c.(*net.TCPConn).SetReadBuffer(4 << 10)
			}
			return c, err
		},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, e.wsURL(token(e.t, user), ""), &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { ws.CloseNow() })
	return &stuckClient{t: e.t, ws: ws}
}

// waitClosedByServer waits until the server has dropped the stuck
// connection (its count of slow-consumer closes goes up).
func (s *stuckClient) waitClosedByServer(e *env, timeout time.Duration) {
	s.t.Helper()
	waitUntil(s.t, timeout, "the stuck connection to be closed", func() bool {
		return e.metric("pgpush_slow_consumer_closes_total") >= 1
	})
}

// logRecorder is a slog.Handler that keeps every record's level and message.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
	warns int
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, b.String())
	if r.Level >= slog.LevelWarn {
		l.warns++
	}
	return nil
}

// count returns how many records at level or above were logged.
func (l *logRecorder) count(level slog.Level) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if level != slog.LevelWarn {
		panic("only warnings are counted")
	}
	return l.warns
}

func (l *logRecorder) dump() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// pgProxy forwards TCP connections to a PostgreSQL server and breaks them
// the ways networks and proxies do. It reads each connection's startup
// message to learn its application_name, so a fault can hit the listener
// alone. It is safe for concurrent use.
type pgProxy struct {
	t  testing.TB
	ln net.Listener

	mu      sync.Mutex
	target  string
	conns   map[*proxyConn]struct{}
	refused map[string]bool // application_name ("" = all) -> refuse new connections
	wg      sync.WaitGroup
}

type proxyConn struct {
	app            string
	client, server net.Conn
	frozen         chan struct{} // closed when frozen
	freezeOnce     sync.Once
	closed         chan struct{} // closed when cut
	closeOnce      sync.Once
}

func newPGProxy(t testing.TB, dbURL string) *pgProxy {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pgProxy{
		t: t, ln: ln,
		target:  net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))),
		conns:   map[*proxyConn]struct{}{},
		refused: map[string]bool{},
	}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.cut("")
		p.wg.Wait()
	})
	return p
}

// url returns dbURL with the proxy's address in place of the server's.
func (p *pgProxy) url(dbURL string) string {
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		p.t.Fatal(err)
	}
	return strings.Replace(dbURL, net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))), p.ln.Addr().String(), 1)
}

// refuse makes new connections of application app ("" for all) fail, or
// lets them in again.
func (p *pgProxy) refuse(app string, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refused[app] = on
}

// retarget makes new connections go to the server of dbURL (a failover).
func (p *pgProxy) retarget(dbURL string) {
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port)))
}

// cut closes the open connections of app ("" for all), as a network drop
// or a proxy's idle timeout does.
func (p *pgProxy) cut(app string) {
	for _, c := range p.matching(app) {
		c.close()
	}
}

// freeze makes the open connections of app stop forwarding in both
// directions without closing: the peers see a silent network.
func (p *pgProxy) freeze(app string) {
	cs := p.matching(app)
	if len(cs) == 0 {
		p.t.Fatalf("no open connection of %q to freeze", app)
	}
	for _, c := range cs {
		c.freezeOnce.Do(func() { close(c.frozen) })
	}
}

func (p *pgProxy) matching(app string) []*proxyConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*proxyConn
	for c := range p.conns {
		if app == "" || c.app == app {
			out = append(out, c)
		}
	}
	return out
}

func (p *pgProxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() { p.serve(client) })
	}
}

func (p *pgProxy) serve(client net.Conn) {
	defer client.Close()
	client.SetDeadline(time.Now().Add(10 * time.Second))
	startup, app, err := readStartup(client)
	if err != nil {
		return
	}
	client.SetDeadline(time.Time{})
	p.mu.Lock()
	refused := p.refused[""] || p.refused[app]
	target := p.target
	p.mu.Unlock()
	if refused {
		return
	}
	server, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		return
	}
	defer server.Close()
	if _, err := server.Write(startup); err != nil {
		return
	}
	c := &proxyConn{app: app, client: client, server: server, frozen: make(chan struct{}), closed: make(chan struct{})}
	p.mu.Lock()
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		c.close()
	}()
	var wg sync.WaitGroup
	wg.Go(func() { c.pipe(server, client) })
	wg.Go(func() { c.pipe(client, server) })
	wg.Wait()
}

// pipe copies from src to dst until either fails. Once frozen it stops
// forwarding and reading, so data piles up as on a silent network, but keeps
// both sockets open until they are cut.
func (c *proxyConn) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-c.frozen:
			<-c.closed
			return
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (c *proxyConn) close() {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.client.Close()
		c.server.Close()
	})
}

// readStartup reads a client's startup message (answering "no" to SSL and
// GSS encryption requests) and returns it with its application_name.
func readStartup(c net.Conn) ([]byte, string, error) {
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return nil, "", err
		}
		n := binary.BigEndian.Uint32(hdr[:4])
		code := binary.BigEndian.Uint32(hdr[4:])
		if n < 8 || n > 1<<16 {
			return nil, "", errors.New("bad startup length")
		}
		if code == 80877103 || code == 80877104 { // SSLRequest, GSSENCRequest
			if _, err := c.Write([]byte{'N'}); err != nil {
				return nil, "", err
			}
			continue
		}
		body := make([]byte, n-8)
		if _, err := io.ReadFull(c, body); err != nil {
			return nil, "", err
		}
		parts := bytes.Split(body, []byte{0})
		app := ""
		for i := 0; i+1 < len(parts); i += 2 {
			if string(parts[i]) == "application_name" {
				app = string(parts[i+1])
			}
		}
		return slices.Concat(hdr[:], body), app, nil
	}
}
