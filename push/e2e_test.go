package push_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pgpush/pgpush/push"
)

func TestCreatedUpdatedDeletedReachTheUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	c, ready := e.dial("alice", "")
	if ready.UserID != "alice" || *ready.Unread != 0 || ready.Cursor == "" || ready.Notifications == nil {
		t.Fatalf("ready = %s", ready.Raw)
	}

	e.exec(`INSERT INTO notifications (user_id, kind, title, body, url, data)
		VALUES ('alice', 'order.shipped', 'Order shipped', 'Your order #42', 'https://shop.example/o/42', '{"order":42}')`)
	m := c.next("created")
	n := m.Notification
	if n.Title != "Order shipped" || n.Kind != "order.shipped" || n.Body != "Your order #42" ||
		n.URL == nil || *n.URL != "https://shop.example/o/42" || string(n.Data) != `{"order": 42}` ||
		n.ReadAt != nil || n.UserID != "alice" || *m.Unread != 1 || m.Cursor == "" {
		t.Fatalf("created = %s", m.Raw)
	}
	if _, err := time.Parse(time.RFC3339Nano, n.CreatedAt); err != nil {
		t.Fatalf("created_at %q: %v", n.CreatedAt, err)
	}

	e.exec(`UPDATE notifications SET read_at = now() WHERE id = $1`, n.ID)
	m = c.next("updated")
	if m.Notification.ID != n.ID || m.Notification.ReadAt == nil || *m.Unread != 0 {
		t.Fatalf("updated = %s", m.Raw)
	}

	e.exec(`DELETE FROM notifications WHERE id = $1`, n.ID)
	m = c.next("deleted")
	if m.ID != n.ID || *m.Unread != 0 || m.Cursor == "" {
		t.Fatalf("deleted = %s", m.Raw)
	}
}

func TestUsersSeeOnlyTheirOwnRows(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	alice, _ := e.dial("alice", "")
	bob, _ := e.dial("bob", "")

	e.exec(`INSERT INTO notifications (user_id, title) VALUES ('bob', 'for bob'), ('alice', 'for alice')`)
	if m := alice.next("created"); m.Notification.Title != "for alice" {
		t.Fatalf("alice got %s", m.Raw)
	}
	if m := bob.next("created"); m.Notification.Title != "for bob" {
		t.Fatalf("bob got %s", m.Raw)
	}
	// Bob's row changes; Alice must hear nothing of it. A marker row for
	// Alice, written after, proves her stream moved past those changes.
	e.exec(`UPDATE notifications SET read_at = now() WHERE user_id = 'bob'`)
	e.exec(`DELETE FROM notifications WHERE user_id = 'bob'`)
	e.insert("alice", "marker")
	if m := alice.next("created"); m.Notification.Title != "marker" {
		t.Fatalf("alice got %s, want her marker", m.Raw)
	}

	// (Bob may not see the update: by the time it is fetched the row is
	// gone, and a frame for a state that no longer exists is skipped.)
	bob.nextMatching("the deletion", func(m msg) bool { return m.Type == "deleted" })

	// Alice cannot mark Bob's rows read, over the socket or over HTTP.
	bobID := e.insert("bob", "bob's secret")
	bob.next("created")
	alice.send(map[string]any{"type": "read", "ids": []int64{bobID}})
	res := e.do(http.MethodPost, "/v1/notifications/read", token(t, "alice"), fmt.Sprintf(`{"ids":[%d]}`, bobID), nil)
	if res.StatusCode != 200 || res.json(t)["updated"].(float64) != 0 {
		t.Fatalf("alice marking bob's row: %d %s", res.StatusCode, res.Body)
	}
	var readAt *time.Time
	if err := e.pool.QueryRow(context.Background(), `SELECT read_at FROM notifications WHERE id = $1`, bobID).Scan(&readAt); err != nil {
		t.Fatal(err)
	}
	if readAt != nil {
		t.Fatal("alice marked bob's row read")
	}
	// Nor list them.
	res = e.get("/v1/notifications", token(t, "alice"))
	if strings.Contains(string(res.Body), "bob") {
		t.Fatalf("alice's list shows bob's rows: %s", res.Body)
	}
}

func TestMarkReadReachesEveryConnectionOfTheUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	phone, _ := e.dial("alice", "")
	laptop, _ := e.dial("alice", "")
	id1 := e.insert("alice", "one")
	id2 := e.insert("alice", "two")
	for _, c := range []*client{phone, laptop} {
		c.next("created")
		if m := c.next("created"); *m.Unread != 2 {
			t.Fatalf("unread = %d, want 2", *m.Unread)
		}
	}

	phone.send(map[string]any{"type": "read", "ids": []int64{id1}})
	for _, c := range []*client{phone, laptop} {
		m := c.next("updated")
		if m.Notification.ID != id1 || m.Notification.ReadAt == nil || *m.Unread != 1 {
			t.Fatalf("after read: %s", m.Raw)
		}
	}

	laptop.send(map[string]any{"type": "read_all"})
	for _, c := range []*client{phone, laptop} {
		m := c.next("updated")
		if m.Notification.ID != id2 || *m.Unread != 0 {
			t.Fatalf("after read_all: %s", m.Raw)
		}
	}

	phone.send(map[string]any{"type": "ping"})
	phone.next("pong")
}

func TestHTTPListAndMarkRead(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.exec(`INSERT INTO notifications (user_id, title) SELECT 'alice', 'n' || g FROM generate_series(1, 45) g`)
	e.insert("bob", "not alice's")
	tok := token(t, "alice")

	var ids []int64
	path := "/v1/notifications?limit=20"
	for page := 0; ; page++ {
		res := e.get(path, tok)
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s: %d %s", path, res.StatusCode, res.Body)
		}
		body := res.json(t)
		if body["unread"].(float64) != 45 {
			t.Fatalf("unread = %v", body["unread"])
		}
		for _, n := range body["notifications"].([]any) {
			ids = append(ids, int64(n.(map[string]any)["id"].(float64)))
		}
		if body["next"] == nil {
			if page != 2 {
				t.Fatalf("pages = %d, want 3", page+1)
			}
			break
		}
		path = fmt.Sprintf("/v1/notifications?limit=20&before=%d", int64(body["next"].(float64)))
	}
	if len(ids) != 45 {
		t.Fatalf("listed %d rows, want 45", len(ids))
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] >= ids[i-1] {
			t.Fatalf("not newest first: %v", ids)
		}
	}

	res := e.do(http.MethodPost, "/v1/notifications/read", tok, fmt.Sprintf(`{"ids":[%d,%d]}`, ids[0], ids[1]), nil)
	if body := res.json(t); res.StatusCode != 200 || body["updated"].(float64) != 2 || body["unread"].(float64) != 43 {
		t.Fatalf("read ids: %d %s", res.StatusCode, res.Body)
	}
	res = e.do(http.MethodPost, "/v1/notifications/read", tok, `{"all":true}`, nil)
	if body := res.json(t); res.StatusCode != 200 || body["updated"].(float64) != 43 || body["unread"].(float64) != 0 {
		t.Fatalf("read all: %d %s", res.StatusCode, res.Body)
	}

	for _, bad := range []struct{ method, path, body string }{
		{"GET", "/v1/notifications?limit=0", ""},
		{"GET", "/v1/notifications?limit=101", ""},
		{"GET", "/v1/notifications?limit=x", ""},
		{"GET", "/v1/notifications?before=-1", ""},
		{"POST", "/v1/notifications/read", `not json`},
		{"POST", "/v1/notifications/read", `{"ids":[]}`},
		{"POST", "/v1/notifications/read", `{"ids":["1"]}`},
		{"POST", "/v1/notifications/read", `{"ids":[1],"all":true}`},
		{"POST", "/v1/notifications/read", `{"what":1}`},
		{"POST", "/v1/notifications/read", `{}`},
	} {
		res := e.do(bad.method, bad.path, tok, bad.body, nil)
		if res.StatusCode != 400 || res.json(t)["error"] == nil || res.json(t)["message"] == nil {
			t.Errorf("%s %s %s: %d %s, want 400 with the error body", bad.method, bad.path, bad.body, res.StatusCode, res.Body)
		}
	}
	if res := e.get("/v1/nope", tok); res.StatusCode != 404 || res.json(t)["error"] != "not_found" {
		t.Errorf("unknown route: %d %s", res.StatusCode, res.Body)
	}
	if res := e.do("DELETE", "/v1/notifications", tok, "", nil); res.StatusCode != 405 {
		t.Errorf("DELETE list: %d %s", res.StatusCode, res.Body)
	}
	if res := e.get("/healthz", ""); res.StatusCode != 200 {
		t.Errorf("healthz: %d", res.StatusCode)
	}
	if res := e.get("/metrics", ""); res.StatusCode != 200 || !strings.Contains(string(res.Body), "pgpush_connections") {
		t.Errorf("metrics: %d", res.StatusCode)
	}
}

// The ready frame encodes its rows as they arrive from the database, not
// through sqlc's row slice (see push's snapshotFrame): it must list what the
// HTTP list, which goes through sqlc's code, lists, byte for byte, with
// every column in its place.
func TestReadyFrameListsWhatTheHTTPListDoes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.exec(`INSERT INTO notifications (user_id, kind, title, body, url, data)
		SELECT 'alice', 'kind' || g, 'title "' || g || '" é', 'body' || repeat('x', g),
		       CASE WHEN g % 2 = 0 THEN 'https://example.com/' || g END,
		       CASE WHEN g % 3 = 0 THEN jsonb_build_object('g', g) ELSE '{}' END
		FROM generate_series(1, 25) g`)
	e.exec(`UPDATE notifications SET read_at = now() WHERE user_id = 'alice' AND id % 4 = 0`)
	_, ready := e.dial("alice", "")

	res := e.get("/v1/notifications?limit=20", token(t, "alice"))
	if res.StatusCode != 200 {
		t.Fatalf("list: %d %s", res.StatusCode, res.Body)
	}
	var list struct {
		Notifications []json.RawMessage `json:"notifications"`
		Unread        int64             `json:"unread"`
	}
	if err := json.Unmarshal(res.Body, &list); err != nil {
		t.Fatal(err)
	}
	var frame struct {
		Notifications []json.RawMessage `json:"notifications"`
	}
	if err := json.Unmarshal(ready.Raw, &frame); err != nil {
		t.Fatal(err)
	}
	if len(frame.Notifications) != 20 || len(list.Notifications) != 20 {
		t.Fatalf("ready lists %d rows, the list %d; want 20", len(frame.Notifications), len(list.Notifications))
	}
	for i := range frame.Notifications {
		if !bytes.Equal(frame.Notifications[i], list.Notifications[i]) {
			t.Errorf("row %d:\nready %s\nlist  %s", i, frame.Notifications[i], list.Notifications[i])
		}
	}
	if *ready.Unread != list.Unread || list.Unread == 0 || list.Unread == 25 {
		t.Errorf("unread: ready %d, list %d", *ready.Unread, list.Unread)
	}

	// A user without rows gets an empty list.
	_, ready = e.dial("nobody", "")
	if ready.Notifications == nil || len(ready.Notifications) != 0 || *ready.Unread != 0 {
		t.Errorf("ready of a user without rows: %s", ready.Raw)
	}
}

func TestResumeReplaysWhatWasMissed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	c, _ := e.dial("alice", "")
	kept := e.insert("alice", "seen")
	c.next("created")
	cursor := c.last
	c.ws.CloseNow()

	// While the client is away: a new row, a change to the seen one, a row
	// for someone else.
	missed := e.insert("alice", "missed")
	e.exec(`UPDATE notifications SET read_at = now() WHERE id = $1`, kept)
	e.insert("bob", "not for alice")

	c2 := e.dialRaw(e.wsURL(token(t, "alice"), cursor), nil)
	got := map[int64]string{}
	for {
		m := c2.next("")
		if m.Type == "ready" {
			if *m.Unread != 1 || m.Notifications != nil {
				t.Fatalf("ready after a resume: %s", m.Raw)
			}
			break
		}
		if m.Notification.UserID != "alice" {
			t.Fatalf("replayed another user's row: %s", m.Raw)
		}
		got[m.Notification.ID] = m.Type
		if m.Notification.ID == kept && m.Notification.ReadAt == nil {
			t.Fatalf("the seen row was replayed without its change: %s", m.Raw)
		}
	}
	// The seen row comes back with its new content; as the cursor cannot
	// rule out the transaction that wrote it, it may come as "created"
	// again, which a client treats as a replacement by id.
	if got[missed] != "created" || got[kept] == "" {
		t.Fatalf("replay = %v, want %d created and %d replayed", got, missed, kept)
	}
}

// The case a "last id seen" cursor gets wrong: a transaction that took a
// smaller id commits after one with a larger id was delivered.
func TestResumeReplaysARowThatCommittedOutOfOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	c, _ := e.dial("alice", "")

	slow, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Rollback(ctx)
	var slowID int64
	if err := slow.QueryRow(ctx, `INSERT INTO notifications (user_id, title) VALUES ('alice', 'slow') RETURNING id`).Scan(&slowID); err != nil {
		t.Fatal(err)
	}
	fastID := e.insert("alice", "fast")
	if fastID <= slowID {
		t.Fatalf("ids %d, %d: the test needs the slow row's id to be smaller", slowID, fastID)
	}
	m := c.next("created")
	if m.Notification.ID != fastID {
		t.Fatalf("got %s, want the fast row", m.Raw)
	}
	cursor := m.Cursor
	c.ws.CloseNow()

	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	c2 := e.dialRaw(e.wsURL(token(t, "alice"), cursor), nil)
	m = c2.nextMatching("the slow row replayed", func(m msg) bool {
		if m.Type == "ready" {
			t.Fatalf("ready before the slow row %d was replayed", slowID)
		}
		return m.Type == "created" && m.Notification.ID == slowID
	})
	if m.Notification.Title != "slow" {
		t.Fatalf("replayed %s", m.Raw)
	}
	c2.nextMatching("ready", func(m msg) bool { return m.Type == "ready" })

	// And a client that stayed connected gets it live, after the fast one.
	// (It may first see the first slow row again: its notification can
	// still be on its way when this client connects. Duplicates are allowed.)
	c3, _ := e.dial("alice", "")
	slow2, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer slow2.Rollback(ctx)
	if _, err := slow2.Exec(ctx, `INSERT INTO notifications (user_id, title) VALUES ('alice', 'slow2')`); err != nil {
		t.Fatal(err)
	}
	e.insert("alice", "fast2")
	notSlow := func(m msg) bool { return m.Type != "created" || m.Notification.ID != slowID }
	if m := c3.nextMatching("fast2", notSlow); m.Notification.Title != "fast2" {
		t.Fatalf("got %s", m.Raw)
	}
	if err := slow2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if m := c3.nextMatching("slow2", notSlow); m.Notification.Title != "slow2" {
		t.Fatalf("got %s", m.Raw)
	}
}

func TestBadTokensGet401BeforeTheUpgrade(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	cases := map[string]string{
		"missing":   "",
		"malformed": "not-a-jwt",
		"garbage":   "a.b.c",
	}
	for name, tok := range cases {
		for _, path := range []string{"/v1/ws?token=" + tok, "/v1/notifications"} {
			res := e.do("GET", path, "", "", map[string]string{"Authorization": "Bearer " + tok})
			body := res.json(t)
			if res.StatusCode != 401 || body["error"] != "unauthorized" || body["message"] == "" {
				t.Errorf("%s token on %s: %d %s", name, path, res.StatusCode, res.Body)
			}
			if tok != "" && strings.Contains(string(res.Body), tok) {
				t.Errorf("the 401 body repeats the token")
			}
		}
	}
	// A WebSocket client sees the 401 as a failed handshake.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, res, err := websocketDial(ctx, e.wsURL("x.y.z", ""))
	if err == nil || res == nil || res.StatusCode != 401 {
		t.Fatalf("dial with a bad token: %v %v", err, res)
	}
}

func TestOneMiBRowArrivesIntact(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	c, _ := e.dial("alice", "")
	body := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	e.exec(`INSERT INTO notifications (user_id, title, body, data) VALUES ('alice', 'big', $1, jsonb_build_object('blob', $1::text))`, body)
	m := c.next("created")
	if m.Notification.Body != body || len(m.Notification.Data) < len(body) {
		t.Fatalf("big row: body %d bytes, data %d bytes", len(m.Notification.Body), len(m.Notification.Data))
	}
}

func TestAStatementOf100000RowsIsDeliveredInFull(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	t.Parallel()
	e := newEnv(t, patientClients)
	c, _ := e.dial("alice", "")
	other, _ := e.dial("bob", "")
	e.exec(`INSERT INTO notifications (user_id, title) SELECT 'alice', 'n' || g FROM generate_series(1, 100000) g`)
	seen := make(map[int64]bool, 100000)
	var prev int64
	for len(seen) < 100000 {
		m := c.next("")
		if m.Type != "created" {
			t.Fatalf("got %s", m.Raw)
		}
		id := m.Notification.ID
		if !seen[id] && id < prev {
			t.Fatalf("out of order: %d after %d", id, prev)
		}
		seen[id] = true
		prev = max(prev, id)
	}
	// Another user was not stalled: a row for bob arrives at once.
	e.insert("bob", "hello")
	if m := other.next("created"); m.Notification.Title != "hello" {
		t.Fatalf("bob got %s", m.Raw)
	}
	// The statement named alice once, in a bulk hint. 200,000 rows of
	// 200,000 users take a few hundred notifications (each payload at most
	// ~7 kB; the hints take ~4.5 MB), and 40 rows each of 5,000 users a few
	// bulk hints.
	for _, tc := range []struct {
		users    string
		min, max int64
	}{
		{"'alice'", 1, 1},
		{"'user-' || g", 400, 1000},
		{"'user-' || (g % 5000)", 5, 20},
	} {
		var sent, biggest int64
		if err := e.pool.QueryRow(context.Background(), `SELECT count(*), max(octet_length(h)) FROM notifications_hints(
			array_fill('c'::text, ARRAY[200000]), (SELECT array_agg(g::bigint) FROM generate_series(1, 200000) g),
			(SELECT array_agg((`+tc.users+`)::text ORDER BY g) FROM generate_series(1, 200000) g),
			array_fill(1, ARRAY[200000]), array_fill(NULL::text, ARRAY[200000]), 1,
			(SELECT k.inner_pad FROM notifications_hint_key k), (SELECT k.outer_pad FROM notifications_hint_key k)) h`).Scan(&sent, &biggest); err != nil {
			t.Fatal(err)
		}
		if sent < tc.min || sent > tc.max || biggest > 7100 {
			t.Errorf("200,000 rows for users %s make %d notifications of at most %d bytes, want %d to %d of at most 7,100",
				tc.users, sent, biggest, tc.min, tc.max)
		}
	}
}

func TestShutdownClosesConnectionsWith1001(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	c, _ := e.dial("alice", "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go e.srv.Shutdown(ctx)
	if code := c.closed(); code != 1001 {
		t.Fatalf("close code %d, want 1001", code)
	}
}

// A burst is caught up from the table; the live frames of the same rows that
// are still on their way must not reach the client a second time. No frame
// may change nothing the client holds: a row comes again only with a newer
// unread count, which a second catch-up (after a listener reconnect on a busy
// machine, say) that reads it in a later snapshot must bring, and row frames
// are the only frames that carry a count.
func TestABurstSendsEachRowOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	t.Parallel()
	burstOnce(t, newEnv(t, patientClients), 100, 100_000)
}

// With room for a single replay page on the node, a burst's catch-ups take
// turns; every row still arrives once.
func TestABurstWithOneReplayPageAtATime(t *testing.T) {
	t.Parallel()
	burstOnce(t, newEnv(t, func(c *push.Config) { c.ReplayPages = 1 }), 20, 20_000)
}

// burstOnce inserts rows for users in one statement, then a marker row each,
// and checks that every user gets each of its rows before its marker, and
// no frame that changes nothing it holds.
func burstOnce(t *testing.T, e *env, users, rows int) {
	t.Helper()
	cs := make([]*client, users)
	for i := range cs {
		cs[i], _ = e.dial(fmt.Sprintf("u%d", i), "")
	}
	e.exec(`INSERT INTO notifications (user_id, title) SELECT 'u' || (g % $1), 'n' || g FROM generate_series(1, $2) g`, users, rows)
	e.exec(`INSERT INTO notifications (user_id, title) SELECT 'u' || g, 'marker' FROM generate_series(0, $1 - 1) g`, users)
	again := 0
	for i, c := range cs {
		held := make(map[int64]notification, rows/users)
		var unread int64
		for {
			m := c.next("")
			if m.Type != "created" || m.Unread == nil {
				t.Fatalf("u%d got %s", i, m.Raw)
			}
			if m.Notification.Title == "marker" {
				break
			}
			if prev, ok := held[m.Notification.ID]; ok {
				if reflect.DeepEqual(prev, *m.Notification) && *m.Unread == unread {
					t.Fatalf("u%d got row %d again, with nothing new: %s", i, m.Notification.ID, m.Raw)
				}
				again++
			}
			held[m.Notification.ID] = *m.Notification
			unread = *m.Unread
		}
		if len(held) != rows/users {
			t.Fatalf("u%d got %d rows before its marker, want %d", i, len(held), rows/users)
		}
	}
	t.Logf("%d frames repeated a row with a newer unread count", again)
}

// A statement with more than 32 rows for one user names that user once (a
// bulk hint) and the rows reach it from the table; the same statement's rows
// for another user come through the dispatcher. Updates work the same way;
// deletions are always listed row by row.
func TestAStatementMixingBulkAndSingleRows(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	alice, _ := e.dial("alice", "")
	bob, _ := e.dial("bob", "")
	e.exec(`INSERT INTO notifications (user_id, title)
		SELECT CASE WHEN g <= 40 THEN 'alice' ELSE 'bob' END, 'n' || g FROM generate_series(1, 42) g`)

	// expect reads n frames, each for another row and each passing check.
	expect := func(c *client, n int, check func(msg) bool) map[int64]bool {
		t.Helper()
		ids := map[int64]bool{}
		for len(ids) < n {
			m := c.next("")
			id := m.ID
			if m.Notification != nil {
				id = m.Notification.ID
			}
			if ids[id] {
				t.Fatalf("a second frame for row %d: %s", id, m.Raw)
			}
			if !check(m) {
				t.Fatalf("unexpected %s", m.Raw)
			}
			ids[id] = true
		}
		// Nothing else is on its way: a ping's pong comes next.
		c.send(map[string]any{"type": "ping"})
		c.next("pong")
		return ids
	}
	aliceRows := expect(alice, 40, func(m msg) bool {
		return m.Type == "created" && *m.Unread == 40 && m.Notification.ReadAt == nil
	})
	expect(bob, 2, func(m msg) bool { return m.Type == "created" && *m.Unread >= 1 && *m.Unread <= 2 })

	// The update reaches alice from the table, from her connection's
	// cursor: while another transaction in the cluster holds back xmin,
	// that cursor can still be below the INSERT, and the replay then calls
	// the rows "created" (a client replaces a row by id either way).
	e.exec(`UPDATE notifications SET read_at = now() WHERE user_id = 'alice'`)
	updated := expect(alice, 40, func(m msg) bool {
		return (m.Type == "updated" || m.Type == "created") && *m.Unread == 0 && m.Notification.ReadAt != nil
	})
	e.exec(`DELETE FROM notifications WHERE user_id = 'alice'`)
	deleted := expect(alice, 40, func(m msg) bool { return m.Type == "deleted" && *m.Unread == 0 })
	for id := range aliceRows {
		if !updated[id] || !deleted[id] {
			t.Fatalf("row %d: updated %v, deleted %v", id, updated[id], deleted[id])
		}
	}
}
