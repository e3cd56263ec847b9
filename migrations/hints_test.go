package migrations_test

import (
	"context"
	"crypto/hmac"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgpush/pgpush/db/dbtest"
)

// The tests below run real statements against a database migrated to
// hints v2 and read what its triggers NOTIFY.

// hintEnv is a test's database: a pool that writes, a session that LISTENs
// on the schema's channel.
type hintEnv struct {
	t      *testing.T
	url    string
	pool   *pgxpool.Pool
	listen *pgx.Conn
	marks  int
}

func newHintEnv(t *testing.T) *hintEnv {
	t.Helper()
	url := dbtest.NewDB(t)
	e := &hintEnv{t: t, url: url, pool: dbtest.Pool(t, url)}
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(t.Context(), `LISTEN "pgpush.public"`); err != nil {
		t.Fatal(err)
	}
	e.listen = conn
	return e
}

func (e *hintEnv) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(e.t.Context(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

// drain returns the payloads NOTIFYed since the last drain. It sends a
// marker of its own and reads up to it: notifications arrive in commit
// order, so every earlier transaction's are in by then.
func (e *hintEnv) drain() []string {
	e.t.Helper()
	e.marks++
	mark := fmt.Sprintf("mark-%d", e.marks)
	e.exec(`SELECT pg_notify('pgpush.public', $1)`, mark)
	var out []string
	for {
		ctx, cancel := context.WithTimeout(e.t.Context(), 10*time.Second)
		n, err := e.listen.WaitForNotification(ctx)
		cancel()
		if err != nil {
			e.t.Fatalf("waiting for notifications (got %d): %v", len(out), err)
		}
		if n.Payload == mark {
			return out
		}
		out = append(out, n.Payload)
	}
}

// key reads the signing key as pgpush would.
func (e *hintEnv) key() []byte {
	e.t.Helper()
	var key []byte
	if err := e.pool.QueryRow(e.t.Context(), `SELECT key FROM notifications_hint_key`).Scan(&key); err != nil {
		e.t.Fatal(err)
	}
	if len(key) != 32 {
		e.t.Fatalf("key of %d bytes, want 32", len(key))
	}
	return key
}

// signed reports whether payload ends in a signature of the rest under key,
// checked the way pgpush does.
func signed(payload string, key []byte) bool {
	const suffix = len(`,"sig":"`) + 64 + len(`"}`)
	if len(payload) < suffix || !strings.HasPrefix(payload[len(payload)-suffix:], `,"sig":"`) || !strings.HasSuffix(payload, `"}`) {
		return false
	}
	sig, err := hex.DecodeString(payload[len(payload)-66 : len(payload)-2])
	if err != nil || payload[len(payload)-66:len(payload)-2] != strings.ToLower(payload[len(payload)-66:len(payload)-2]) {
		return false
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(payload[:len(payload)-suffix]))
	return hmac.Equal(mac.Sum(nil), sig)
}

// hintV2 is a decoded payload.
type hintV2 struct {
	V      int               `json:"v"`
	Xmin   uint64            `json:"xmin"`
	Xid    uint64            `json:"xid"`
	Op     string            `json:"op"`
	Rows   []json.RawMessage `json:"rows"`
	Users  []string          `json:"users"`
	Deltas []int64           `json:"deltas"`
	Seq    int               `json:"seq"`
	Sig    string            `json:"sig"`
}

// hintRow is one [id,"user_id",delta] or [id,"user_id",delta,PAYLOAD].
type hintRow struct {
	ID      int64
	UserID  string
	Delta   int64
	Payload json.RawMessage // nil when absent
}

var (
	rowHintRE   = regexp.MustCompile(`^\{"v":2,"xmin":[0-9]+,"xid":[0-9]+,"pid":[0-9]+,"op":"[cud]","rows":\[\[.*\]\](,"seq":[0-9]+)?,"sig":"[0-9a-f]{64}"\}$`)
	bulkHintRE  = regexp.MustCompile(`^\{"v":2,"xmin":[0-9]+,"xid":[0-9]+,"pid":[0-9]+,"op":"b","users":\[".*"\],"deltas":\[-?[0-9]+(,-?[0-9]+)*\](,"seq":[0-9]+)?,"sig":"[0-9a-f]{64}"\}$`)
	resetHintRE = regexp.MustCompile(`^\{"v":2,"xid":[0-9]+,"op":"r"(,"seq":[0-9]+)?\}$`)
)

// parse decodes payload, failing the test unless it has the v2 format and,
// for a row or bulk hint, a signature that verifies under key.
func (e *hintEnv) parse(payload string, key []byte) (hintV2, []hintRow) {
	e.t.Helper()
	var h hintV2
	if err := json.Unmarshal([]byte(payload), &h); err != nil {
		e.t.Fatalf("payload %s: %v", payload, err)
	}
	switch {
	case h.Op == "r":
		if !resetHintRE.MatchString(payload) {
			e.t.Fatalf("reset hint %s has not the v2 format", payload)
		}
		return h, nil
	case h.Op == "b":
		if !bulkHintRE.MatchString(payload) || len(h.Users) != len(h.Deltas) || h.Xmin == 0 || h.Xmin > h.Xid {
			e.t.Fatalf("bulk hint %s has not the v2 format", payload)
		}
	default:
		if !rowHintRE.MatchString(payload) || h.Xmin == 0 || h.Xmin > h.Xid {
			e.t.Fatalf("row hint %s has not the v2 format", payload)
		}
	}
	if !signed(payload, key) {
		e.t.Fatalf("hint %s: the signature does not verify", payload)
	}
	if len(payload) >= 8000 {
		e.t.Fatalf("a payload of %d bytes", len(payload))
	}
	var rows []hintRow
	for _, raw := range h.Rows {
		var parts []json.RawMessage
		if err := json.Unmarshal(raw, &parts); err != nil || len(parts) < 3 || len(parts) > 4 {
			e.t.Fatalf("row %s of %s: want [id,\"user_id\",delta(,PAYLOAD)]", raw, payload)
		}
		var r hintRow
		if json.Unmarshal(parts[0], &r.ID) != nil || json.Unmarshal(parts[1], &r.UserID) != nil || json.Unmarshal(parts[2], &r.Delta) != nil {
			e.t.Fatalf("row %s of %s", raw, payload)
		}
		if r.Delta < -1 || r.Delta > 1 {
			e.t.Fatalf("row %s of %s: delta %d", raw, payload, r.Delta)
		}
		if len(parts) == 4 {
			if h.Op != "c" {
				e.t.Fatalf("row %s of a %q hint carries a payload", raw, h.Op)
			}
			r.Payload = parts[3]
		}
		rows = append(rows, r)
	}
	return h, rows
}

// rowJSON is what a row's PAYLOAD must be, as the database writes it.
func (e *hintEnv) rowJSON(id int64) string {
	e.t.Helper()
	var s string
	err := e.pool.QueryRow(e.t.Context(), `SELECT json_build_array(n.kind, n.title, n.body, n.url, n.data, n.created_at, n.read_at)::text
		FROM notifications n WHERE n.id = $1`, id).Scan(&s)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// insertOne inserts a row and returns its id and its transaction's xid.
func (e *hintEnv) insertOne(sql string, args ...any) (id, xid int64) {
	e.t.Helper()
	if err := e.pool.QueryRow(e.t.Context(), sql+` RETURNING id, pg_current_xact_id()::text::bigint`, args...).Scan(&id, &xid); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return id, xid
}

func TestHintsOneRowInsert(t *testing.T) {
	t.Parallel()
	e := newHintEnv(t)
	key := e.key()

	id, xid := e.insertOne(`INSERT INTO notifications (user_id, title, body, url, data) VALUES ('alice', 'Hi "there"', 'é ✓', 'https://x/', '{"a":[1,2]}')`)
	got := e.drain()
	if len(got) != 1 {
		t.Fatalf("%d payloads, want 1: %q", len(got), got)
	}
	h, rows := e.parse(got[0], key)
	if h.Op != "c" || h.Xid != uint64(xid) || len(rows) != 1 || h.Seq != 0 {
		t.Fatalf("payload %s: want op c, xid %d, one row, no seq", got[0], xid)
	}
	if r := rows[0]; r.ID != id || r.UserID != "alice" || r.Delta != 1 || string(r.Payload) != e.rowJSON(id) {
		t.Errorf("row %+v (payload %s), want id %d, alice, delta 1, payload %s", r, r.Payload, id, e.rowJSON(id))
	}

	// Read already: no change to the unread count.
	id, _ = e.insertOne(`INSERT INTO notifications (user_id, title, read_at) VALUES ('alice', 'read', now())`)
	got = e.drain()
	if len(got) != 1 {
		t.Fatalf("%d payloads, want 1", len(got))
	}
	if _, rows := e.parse(got[0], key); len(rows) != 1 || rows[0].ID != id || rows[0].Delta != 0 || string(rows[0].Payload) != e.rowJSON(id) {
		t.Errorf("payload %s: want row %d with delta 0 and its payload", got[0], id)
	}

	// A row whose JSON is over 2,000 bytes travels without it.
	id, _ = e.insertOne(`INSERT INTO notifications (user_id, title, body) VALUES ('alice', 'big', repeat('x', 2000))`)
	got = e.drain()
	if _, rows := e.parse(got[0], key); len(got) != 1 || len(rows) != 1 || rows[0].ID != id || rows[0].Delta != 1 || rows[0].Payload != nil {
		t.Errorf("payload %s: want row %d with delta 1 and no payload", got[0], id)
	}
	// Around the limit: with it up to 2,000 bytes, without it above. (A
	// fixed created_at: JSON drops a timestamp's trailing zeros.)
	atLimit := false
	for n := 1915; n <= 1935; n++ {
		id, _ = e.insertOne(`INSERT INTO notifications (user_id, title, body, created_at)
			VALUES ('alice', 't', repeat('y', $1), '2026-01-02 03:04:05.123456+00')`, n)
		got = e.drain()
		if len(got) != 1 {
			t.Fatalf("%d payloads, want 1", len(got))
		}
		j := e.rowJSON(id)
		atLimit = atLimit || len(j) == 2000
		if _, rows := e.parse(got[0], key); len(rows) != 1 || (len(j) <= 2000) != (rows[0].Payload != nil) || (rows[0].Payload != nil && string(rows[0].Payload) != j) {
			t.Errorf("a row of %d bytes of JSON: payload %s", len(j), got[0])
		}
	}
	if !atLimit {
		t.Error("no row had exactly 2,000 bytes of JSON")
	}

	// An unsigned hint is told apart.
	if signed(strings.Replace(got[0], `"op":"c"`, `"op":"u"`, 1), key) {
		t.Error("a changed payload verifies")
	}
}

// ledger is, per user, the change of the unread count, leaving out zeros.
type ledger map[string]int64

func (l ledger) add(user string, d int64) {
	l[user] += d
	if l[user] == 0 {
		delete(l, user)
	}
}

// deltas sums the deltas of hints per user, and checks their format.
func (e *hintEnv) deltas(payloads []string, key []byte) (ledger, []hintV2) {
	e.t.Helper()
	sum := ledger{}
	var hs []hintV2
	for _, p := range payloads {
		h, rows := e.parse(p, key)
		hs = append(hs, h)
		for _, r := range rows {
			sum.add(r.UserID, r.Delta)
		}
		for i, u := range h.Users {
			sum.add(u, h.Deltas[i])
		}
	}
	return sum, hs
}

func TestHintsStatements(t *testing.T) {
	t.Parallel()
	e := newHintEnv(t)
	key := e.key()

	// Several users in one INSERT, some rows read: every row with its
	// payload and delta.
	e.exec(`INSERT INTO notifications (user_id, title, read_at)
		SELECT 'u' || (g % 3), 'row ' || g, CASE WHEN g % 4 = 0 THEN now() END FROM generate_series(1, 12) g`)
	got := e.drain()
	if len(got) != 1 {
		t.Fatalf("%d payloads, want 1", len(got))
	}
	h, rows := e.parse(got[0], key)
	if h.Op != "c" || len(rows) != 12 {
		t.Fatalf("payload %s: want 12 created rows", got[0])
	}
	for _, r := range rows {
		var user string
		var unread int64
		if err := e.pool.QueryRow(t.Context(), `SELECT user_id, (read_at IS NULL)::int FROM notifications WHERE id = $1`, r.ID).Scan(&user, &unread); err != nil {
			t.Fatal(err)
		}
		if r.UserID != user || r.Delta != unread || string(r.Payload) != e.rowJSON(r.ID) {
			t.Errorf("row %d: %s delta %d payload %s; want %s delta %d payload %s", r.ID, r.UserID, r.Delta, r.Payload, user, unread, e.rowJSON(r.ID))
		}
	}

	// Mark read and unread again: -1, then +1; a change that is no read: 0.
	e.exec(`UPDATE notifications SET read_at = now() WHERE user_id = 'u1' AND read_at IS NULL`)
	sum, hs := e.deltas(e.drain(), key)
	if len(hs) != 1 || hs[0].Op != "u" || !maps.Equal(sum, ledger{"u1": -3}) {
		t.Errorf("mark read: %v %v", hs, sum)
	}
	e.exec(`UPDATE notifications SET read_at = NULL WHERE user_id = 'u1'`)
	sum, _ = e.deltas(e.drain(), key)
	if !maps.Equal(sum, ledger{"u1": 4}) {
		t.Errorf("mark unread: %v, want u1 +4", sum)
	}
	e.exec(`UPDATE notifications SET title = 'edited' WHERE user_id = 'u1'`)
	got = e.drain()
	if _, rows := e.parse(got[0], key); len(got) != 1 || len(rows) != 4 || rows[0].Delta != 0 || rows[0].Payload != nil {
		t.Errorf("an edit: %q", got)
	}

	// Rows moved to another user: "d" for the old user, "c" for the new,
	// neither with a payload.
	e.exec(`UPDATE notifications SET user_id = 'u9', read_at = CASE WHEN id % 2 = 0 THEN now() END WHERE user_id = 'u2'`)
	got = e.drain()
	if len(got) != 2 {
		t.Fatalf("a move: %q, want a d and a c hint", got)
	}
	hd, drows := e.parse(got[0], key)
	hc, crows := e.parse(got[1], key)
	if hd.Op != "d" || hc.Op != "c" || len(drows) != 4 || len(crows) != 4 {
		t.Fatalf("a move: %q", got)
	}
	for i := range drows {
		var read bool
		if err := e.pool.QueryRow(t.Context(), `SELECT read_at IS NOT NULL FROM notifications WHERE id = $1`, crows[i].ID).Scan(&read); err != nil {
			t.Fatal(err)
		}
		wantC := int64(1)
		if read {
			wantC = 0
		}
		if drows[i].UserID != "u2" || crows[i].UserID != "u9" || drows[i].Delta > 0 || crows[i].Delta != wantC || crows[i].Payload != nil {
			t.Errorf("moved row: d %+v, c %+v", drows[i], crows[i])
		}
	}

	// DELETE: -1 per unread row, 0 per read one.
	e.exec(`DELETE FROM notifications WHERE user_id = 'u9'`)
	got = e.drain()
	sum, hs = e.deltas(got, key)
	if len(hs) != 1 || hs[0].Op != "d" || len(hs[0].Rows) != 4 || !maps.Equal(sum, ledger{"u9": -2}) {
		t.Errorf("delete: %q %v", got, sum)
	}

	// A statement with more than 32 rows of one user: a "b" hint with the
	// sum, the other user's rows as rows.
	for _, c := range []struct {
		sql  string
		want ledger
		rows int
	}{
		{`INSERT INTO notifications (user_id, title, read_at)
			SELECT CASE WHEN g <= 40 THEN 'bulky' ELSE 'small' END, 'b', CASE WHEN g % 4 = 0 THEN now() END
			FROM generate_series(1, 42) g`, ledger{"bulky": 30, "small": 2}, 2},
		{`UPDATE notifications SET read_at = coalesce(read_at, now()) WHERE user_id IN ('bulky', 'small')`, ledger{"bulky": -30, "small": -2}, 2},
		{`UPDATE notifications SET read_at = CASE WHEN id % 2 = 0 THEN NULL ELSE read_at END WHERE user_id = 'bulky'`, ledger{"bulky": 20}, 0},
		{`DELETE FROM notifications WHERE user_id IN ('bulky', 'small')`, ledger{"bulky": -20}, 2},
	} {
		got := e.drain()
		if len(got) != 0 {
			t.Fatalf("left over: %q", got)
		}
		e.exec(c.sql)
		got = e.drain()
		sum, hs := e.deltas(got, key)
		var bulk *hintV2
		rows := 0
		for i, h := range hs {
			if h.Op == "b" {
				bulk = &hs[i]
			}
			rows += len(h.Rows)
		}
		if bulk == nil || !slices.Equal(bulk.Users, []string{"bulky"}) || rows != c.rows || !maps.Equal(sum, c.want) {
			t.Errorf("%s:\n%q\nsums %v, want %v", c.sql, got, sum, c.want)
		}
	}
}

// TestHintsChunked writes statements whose hints take many payloads: each
// stays under 8,000 bytes, verifies, and every row is in exactly one.
func TestHintsChunked(t *testing.T) {
	t.Parallel()
	e := newHintEnv(t)
	key := e.key()
	for _, c := range []struct {
		name, sql string
		rows      int
	}{
		// Rows of 200 to 2,000 bytes, 800 users with 2 rows each.
		{"insert", `INSERT INTO notifications (user_id, title, body)
			SELECT 'user-' || (g % 800), 'chunk', repeat('z', (g * 7919) % 1900) FROM generate_series(1, 1600) g`, 1600},
		{"update", `UPDATE notifications SET read_at = now() WHERE id % 3 = 0`, -1},
		{"move", `UPDATE notifications SET user_id = user_id || '-moved' WHERE id % 3 = 1`, -1},
		{"delete", `DELETE FROM notifications`, -1},
		// 3,000 users with 33 rows each: bulk hints only.
		{"bulk", `INSERT INTO notifications (user_id, title) SELECT 'bulk-user-' || (g % 3000), 'x' FROM generate_series(1, 99000) g`, 0},
	} {
		var xid int64
		tx, err := e.pool.Begin(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		tag, err := tx.Exec(t.Context(), c.sql)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if err := tx.QueryRow(t.Context(), `SELECT pg_current_xact_id()::text::bigint`).Scan(&xid); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(t.Context()); err != nil {
			t.Fatal(err)
		}
		want := e.ledgerOf(xid)
		got := e.drain()
		sum, hs := e.deltas(got, key)
		seen := map[string]int{}
		rows := 0
		for i, h := range hs {
			if h.Xid != uint64(xid) {
				t.Errorf("%s: hint of xid %d, want %d", c.name, h.Xid, xid)
			}
			if len(got[i]) > 7000 {
				t.Errorf("%s: a payload of %d bytes", c.name, len(got[i]))
			}
			for _, raw := range h.Rows {
				rows++
				var r []json.RawMessage
				if json.Unmarshal(raw, &r) != nil {
					t.Fatal(raw)
				}
				seen[h.Op+string(r[0])]++
			}
		}
		for k, n := range seen {
			if n != 1 {
				t.Errorf("%s: row %s in %d hints", c.name, k, n)
			}
		}
		if c.rows >= 0 && rows != c.rows {
			t.Errorf("%s: %d rows in hints, want %d", c.name, rows, c.rows)
		}
		if c.rows < 0 && int64(rows) < tag.RowsAffected() {
			t.Errorf("%s: %d rows in hints, %d written", c.name, rows, tag.RowsAffected())
		}
		if !maps.Equal(sum, want) {
			t.Errorf("%s: deltas %v, ledger %v", c.name, sum, want)
		}
		if len(got) < 2 {
			t.Errorf("%s: %d payloads; want it chunked", c.name, len(got))
		}
		t.Logf("%s: %d payloads", c.name, len(got))
	}
}

// ledgerOf is what notifications_count recorded for transaction xid.
func (e *hintEnv) ledgerOf(xid int64) ledger {
	e.t.Helper()
	rows, err := e.pool.Query(e.t.Context(), `SELECT user_id, delta FROM notifications_unread_delta WHERE delta_xid = $1::text::xid8`, strconv.FormatInt(xid, 10))
	if err != nil {
		e.t.Fatal(err)
	}
	l := ledger{}
	for rows.Next() {
		var u string
		var d int64
		if err := rows.Scan(&u, &d); err != nil {
			e.t.Fatal(err)
		}
		l.add(u, d)
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
	return l
}

// TestHintsDeltasMatchLedger runs random transactions of random statements
// and checks that, per transaction and user, the hints' deltas add up to
// what notifications_count recorded, also when one transaction repeats a
// statement (NOTIFY would fold identical payloads but for "seq").
func TestHintsDeltasMatchLedger(t *testing.T) {
	t.Parallel()
	e := newHintEnv(t)
	key := e.key()
	r := rand.New(rand.NewPCG(7, 11))
	user := func() string { return fmt.Sprintf("u%d", r.IntN(5)) }
	statements := []func() (string, []any){
		func() (string, []any) {
			return "INSERT INTO notifications (user_id, title) VALUES ($1, 'one')", []any{user()}
		},
		func() (string, []any) {
			return `INSERT INTO notifications (user_id, title, read_at)
				SELECT 'u' || (g % 5), 'many', CASE WHEN g % 3 = 0 THEN now() END FROM generate_series(1, $1) g`, []any{r.IntN(200)}
		},
		func() (string, []any) {
			return "UPDATE notifications SET read_at = now() WHERE user_id = $1 AND read_at IS NULL", []any{user()}
		},
		func() (string, []any) {
			return "UPDATE notifications SET read_at = CASE WHEN read_at IS NULL THEN now() END WHERE id % 7 = $1", []any{r.IntN(7)}
		},
		func() (string, []any) {
			return "UPDATE notifications SET user_id = $1 WHERE id % 5 = $2", []any{user(), r.IntN(5)}
		},
		func() (string, []any) {
			return `UPDATE notifications SET id = id + 1000000, read_at = CASE WHEN read_at IS NULL THEN now() END
				WHERE id % 11 = $1 AND id < 1000000`, []any{r.IntN(11)}
		},
		func() (string, []any) {
			return "DELETE FROM notifications WHERE id % 4 = $1 AND user_id = $2", []any{r.IntN(4), user()}
		},
		func() (string, []any) {
			return "DELETE FROM notifications WHERE id % 9 = $1", []any{r.IntN(9)}
		},
	}
	// The same statement twice or thrice in one transaction.
	toggle := "UPDATE notifications SET read_at = CASE WHEN read_at IS NULL THEN now() END WHERE id = (SELECT min(id) FROM notifications)"
	for round := range 60 {
		tx, err := e.pool.Begin(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var xid int64
		if err := tx.QueryRow(t.Context(), `SELECT pg_current_xact_id()::text::bigint`).Scan(&xid); err != nil {
			t.Fatal(err)
		}
		var done []string
		for range 1 + r.IntN(4) {
			sql, args := statements[r.IntN(len(statements))]()
			if r.IntN(4) == 0 {
				sql, args = toggle, nil
			}
			if r.IntN(6) == 0 {
				// A statement rolled back to a savepoint sends nothing.
				if _, err := tx.Exec(t.Context(), "SAVEPOINT s"); err != nil {
					t.Fatal(err)
				}
				if _, err := tx.Exec(t.Context(), sql, args...); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
				if _, err := tx.Exec(t.Context(), "ROLLBACK TO SAVEPOINT s"); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if _, err := tx.Exec(t.Context(), sql, args...); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
			done = append(done, sql)
		}
		rollback := r.IntN(8) == 0
		if rollback {
			err = tx.Rollback(t.Context())
		} else {
			err = tx.Commit(t.Context())
		}
		if err != nil {
			t.Fatal(err)
		}
		got := e.drain()
		sum, hs := e.deltas(got, key)
		if rollback {
			if len(got) != 0 {
				t.Fatalf("round %d: a rolled back transaction sent %q", round, got)
			}
			continue
		}
		for _, h := range hs {
			if h.Xid != uint64(xid) {
				t.Fatalf("round %d: a hint of xid %d, want %d", round, h.Xid, xid)
			}
		}
		if want := e.ledgerOf(xid); !maps.Equal(sum, want) {
			t.Fatalf("round %d (%q): hints' deltas %v, ledger %v\n%q", round, done, sum, want, got)
		}
	}
	if d := countDiff(t, e.pool); len(d) > 0 {
		t.Fatalf("kept counts differ from the table: %v", d)
	}
}

// TestHintsSeq checks that a transaction's repeated statement is not folded
// by NOTIFY: read, unread, read again is -1 +1 -1.
func TestHintsSeq(t *testing.T) {
	t.Parallel()
	e := newHintEnv(t)
	key := e.key()
	id, _ := e.insertOne(`INSERT INTO notifications (user_id, title) VALUES ('alice', 'x')`)
	e.drain()
	tx, err := e.pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{"now()", "NULL", "now()"} {
		if _, err := tx.Exec(t.Context(), "UPDATE notifications SET read_at = "+sql+" WHERE id = $1", id); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := e.drain()
	var deltas []int64
	var seqs []int
	for _, p := range got {
		h, rows := e.parse(p, key)
		deltas = append(deltas, rows[0].Delta)
		seqs = append(seqs, h.Seq)
	}
	if !slices.Equal(deltas, []int64{-1, 1, -1}) || !slices.Equal(seqs, []int{0, 2, 3}) {
		t.Errorf("payloads %q: deltas %v, seqs %v; want -1 1 -1 and 0 2 3", got, deltas, seqs)
	}
}

func TestHintsReset(t *testing.T) {
	t.Parallel()
	e := newHintEnv(t)
	e.exec(`INSERT INTO notifications (user_id, title) VALUES ('alice', 'x')`)
	e.drain()
	for _, c := range []struct{ sql, extra string }{
		{"TRUNCATE notifications", `,"truncated":true`},
		{"SELECT notifications_unread_recount()", ""},
	} {
		sql := c.sql
		var xid int64
		tx, err := e.pool.Begin(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(t.Context(), sql); err != nil {
			t.Fatal(err)
		}
		if err := tx.QueryRow(t.Context(), `SELECT pg_current_xact_id()::text::bigint`).Scan(&xid); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(t.Context()); err != nil {
			t.Fatal(err)
		}
		got := e.drain()
		if want := fmt.Sprintf(`{"v":2,"xid":%d,"op":"r"%s}`, xid, c.extra); !slices.Equal(got, []string{want}) {
			t.Errorf("%s: %q, want %s", sql, got, want)
		}
		// A TRUNCATE raises the deletions' horizon above itself (cursors
		// from before it start afresh); a recount leaves it.
		var horizon int64
		if err := e.pool.QueryRow(t.Context(), `SELECT horizon::text::bigint FROM notifications_deleted_horizon`).Scan(&horizon); err != nil {
			t.Fatal(err)
		}
		if c.extra != "" && horizon != xid+1 {
			t.Errorf("%s: horizon %d, want %d", sql, horizon, xid+1)
		}
		if c.extra == "" && horizon > xid {
			t.Errorf("%s: horizon %d moved above the recount's transaction %d", sql, horizon, xid)
		}
	}
}

func TestHintKeyRotate(t *testing.T) {
	t.Parallel()
	e := newHintEnv(t)
	old := e.key()
	var pads int
	// The pads are the key's, zero-padded, xor 0x36 and 0x5c.
	err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM notifications_hint_key k, generate_series(0, 63) i
		WHERE get_byte(k.inner_pad, i) = (CASE WHEN i < 32 THEN get_byte(k.key, i) ELSE 0 END) # 54
		  AND get_byte(k.outer_pad, i) = (CASE WHEN i < 32 THEN get_byte(k.key, i) ELSE 0 END) # 92
		  AND length(k.inner_pad) = 64 AND length(k.outer_pad) = 64`).Scan(&pads)
	if err != nil {
		t.Fatal(err)
	}
	if pads != 64 {
		t.Fatalf("%d of 64 pad bytes right", pads)
	}
	e.exec(`SELECT notifications_hint_key_rotate()`)
	key := e.key()
	if string(key) == string(old) {
		t.Fatal("the key did not change")
	}
	e.exec(`INSERT INTO notifications (user_id, title) VALUES ('alice', 'x')`)
	got := e.drain()
	if len(got) != 1 || !signed(got[0], key) || signed(got[0], old) {
		t.Errorf("after rotation %q: want signed with the new key only", got)
	}
}

// TestHintKeySecret checks that a role that may write notifications gets
// signed hints from the trigger but cannot read the key.
func TestHintKeySecret(t *testing.T) {
	t.Parallel()
	e := newHintEnv(t)
	key := e.key()
	role := "writer_" + strings.ToLower(crand.Text()[:10])
	e.exec(`CREATE ROLE ` + role + ` LOGIN`)
	t.Cleanup(func() {
		ctx := context.Background()
		e.pool.Exec(ctx, `DROP OWNED BY `+role)
		e.pool.Exec(ctx, `DROP ROLE `+role)
	})
	e.exec(`GRANT SELECT, INSERT, UPDATE, DELETE ON notifications TO ` + role)
	u, err := url.Parse(e.url)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	conn, err := pgx.Connect(t.Context(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), `INSERT INTO notifications (user_id, title) VALUES ('alice', 'from a writer')`); err != nil {
		t.Fatalf("a writer's insert: %v", err)
	}
	got := e.drain()
	if len(got) != 1 || !signed(got[0], key) {
		t.Errorf("a writer's insert sent %q, want one signed hint", got)
	}
	var b []byte
	if err := conn.QueryRow(t.Context(), `SELECT key FROM notifications_hint_key`).Scan(&b); err == nil {
		t.Error("a writer read the key")
	}
	if _, err := conn.Exec(t.Context(), `SELECT notifications_hint_key_rotate()`); err == nil {
		t.Error("a writer rotated the key")
	}
}

// TestHintsWithoutKey checks that hints still go, unsigned, when the key is
// gone.
func TestHintsWithoutKey(t *testing.T) {
	t.Parallel()
	e := newHintEnv(t)
	key := e.key()
	e.exec(`DELETE FROM notifications_hint_key`)
	e.exec(`INSERT INTO notifications (user_id, title) VALUES ('alice', 'x')`)
	e.exec(`INSERT INTO notifications (user_id, title) SELECT 'u' || g, 'x' FROM generate_series(1, 3) g`)
	e.exec(`UPDATE notifications SET read_at = now()`)
	got := e.drain()
	if len(got) != 3 {
		t.Fatalf("%q, want 3 payloads", got)
	}
	for _, p := range got {
		var h hintV2
		if err := json.Unmarshal([]byte(p), &h); err != nil || h.V != 2 || len(h.Rows) == 0 || strings.Contains(p, `"sig"`) || signed(p, key) {
			t.Errorf("without a key: %s", p)
		}
	}
}
