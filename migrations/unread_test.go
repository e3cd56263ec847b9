package migrations_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgpush/pgpush/db"
	"github.com/pgpush/pgpush/db/dbtest"
)

// countDiff compares view notifications_unread_counts with a count of the
// table, in one snapshot, and returns the users whose counts differ.
func countDiff(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(t.Context(), `
SELECT coalesce(k.user_id, c.user_id) || ': kept ' || coalesce(c.unread, 0) || ', counted ' || coalesce(k.unread, 0)
FROM (SELECT user_id, count(*) AS unread FROM notifications WHERE read_at IS NULL GROUP BY user_id) k
FULL JOIN notifications_unread_counts c ON c.user_id = k.user_id
WHERE coalesce(k.unread, 0) <> coalesce(c.unread, 0)
ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestUnreadCountsStayExact runs statements of every shape, from several
// sessions at once, while folds run, and checks after each round that the
// kept counts equal a count of the table; then TRUNCATE, and a recount after
// rows were written with the triggers off.
func TestUnreadCountsStayExact(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	// Writers that update the same rows in another order deadlock; find
	// out in milliseconds rather than the default second.
	url := dbtest.NewDB(t)
	if strings.Contains(url, "?") {
		url += "&options=-c%20deadlock_timeout%3D20ms"
	} else {
		url += "?options=-c%20deadlock_timeout%3D20ms"
	}
	pool := dbtest.Pool(t, url)
	q := db.New(pool)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	user := func(r *rand.Rand) string { return fmt.Sprintf("u%d", r.IntN(6)) }
	// Each statement shape a writer, an application or a DBA uses.
	statements := []func(r *rand.Rand) (string, []any){
		func(r *rand.Rand) (string, []any) {
			return "INSERT INTO notifications (user_id, title) VALUES ($1, 'one')", []any{user(r)}
		},
		func(r *rand.Rand) (string, []any) { // many users, some rows already read
			return `INSERT INTO notifications (user_id, title, read_at)
				SELECT 'u' || (g % 6), 'bulk', CASE WHEN g % 3 = 0 THEN now() END FROM generate_series(1, $1) g`, []any{r.IntN(80)}
		},
		func(r *rand.Rand) (string, []any) {
			return "UPDATE notifications SET read_at = now() WHERE user_id = $1 AND read_at IS NULL", []any{user(r)}
		},
		func(r *rand.Rand) (string, []any) { // unread again, read again: both ways
			return "UPDATE notifications SET read_at = CASE WHEN read_at IS NULL THEN now() END WHERE id % 7 = $1", []any{r.IntN(7)}
		},
		func(r *rand.Rand) (string, []any) { // moved to another user
			return "UPDATE notifications SET user_id = $1 WHERE id % 5 = $2", []any{user(r), r.IntN(5)}
		},
		func(r *rand.Rand) (string, []any) { // a change that is not a read
			return "UPDATE notifications SET title = 'edited' WHERE user_id = $1", []any{user(r)}
		},
		func(r *rand.Rand) (string, []any) {
			return "DELETE FROM notifications WHERE id % 4 = $1 AND user_id = $2", []any{r.IntN(4), user(r)}
		},
	}
	for round := range 6 {
		var wg sync.WaitGroup
		for w := range 4 {
			r := rand.New(rand.NewPCG(uint64(round), uint64(w)))
			wg.Go(func() {
				for range 15 {
					tx, err := pool.Begin(ctx)
					if err != nil {
						t.Error(err)
						return
					}
					// One to three statements per transaction.
					for range 1 + r.IntN(3) {
						sql, args := statements[r.IntN(len(statements))](r)
						if _, err = tx.Exec(ctx, sql, args...); err != nil {
							break
						}
					}
					if err == nil && r.IntN(5) == 0 {
						err = tx.Rollback(ctx)
					} else if err == nil {
						err = tx.Commit(ctx)
					} else {
						tx.Rollback(context.Background())
						// Writers updating the same rows in another order.
						if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "40P01" {
							err = nil
						}
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		// Two nodes folding at once: one at a time takes its turn.
		for range 2 {
			wg.Go(func() {
				for range 20 {
					if _, err := q.NotificationUnreadFold(ctx); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		if d := countDiff(t, pool); len(d) > 0 {
			t.Fatalf("round %d: kept counts differ from the table: %v", round, d)
		}
	}
	// A fold takes every ledger row below the xmin it raises the mark to
	// and keeps the sums. (Not necessarily every row: a transaction running
	// elsewhere in the cluster, another test's, holds that xmin back.)
	if _, err := q.NotificationUnreadFold(ctx); err != nil {
		t.Fatal(err)
	}
	var below, left int64
	err := pool.QueryRow(ctx, `SELECT f.below::text::bigint,
		(SELECT count(*) FROM notifications_unread_delta d WHERE d.delta_xid < f.below)
		FROM notifications_unread_folded f`).Scan(&below, &left)
	if err != nil {
		t.Fatal(err)
	}
	if below == 0 || left != 0 {
		t.Errorf("after a fold: mark %d, %d ledger rows below it; want a mark above 0 and none", below, left)
	}
	if d := countDiff(t, pool); len(d) > 0 {
		t.Fatalf("after folding: %v", d)
	}

	exec("TRUNCATE notifications")
	exec("INSERT INTO notifications (user_id, title) VALUES ('u1', 'after truncate')")
	if d := countDiff(t, pool); len(d) > 0 {
		t.Fatalf("after TRUNCATE: %v", d)
	}

	// Rows written with the triggers off (as a logical replica applies
	// them) are not counted until notifications_unread_recount().
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SET session_replication_role = replica"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO notifications (user_id, title) SELECT 'u2', 'replicated' FROM generate_series(1, 3)"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "RESET session_replication_role"); err != nil {
		t.Fatal(err)
	}
	if d := countDiff(t, pool); len(d) != 1 {
		t.Fatalf("after writing with the triggers off: %v; want u2 to differ", d)
	}
	var users int64
	if err := pool.QueryRow(ctx, "SELECT notifications_unread_recount()").Scan(&users); err != nil {
		t.Fatal(err)
	}
	if users != 2 {
		t.Errorf("recount found %d users with unread rows, want 2", users)
	}
	if d := countDiff(t, pool); len(d) > 0 {
		t.Fatalf("after the recount: %v", d)
	}
}

// A writer whose transaction began before a recount and whose INSERT waited
// for the recount's lock is counted once the recount is done, without a
// fold: its ledger row is not below the recount's mark.
func TestRecountCountsAWriterThatWaitedForIt(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := dbtest.Pool(t, dbtest.NewDB(t))
	if _, err := pool.Exec(ctx, "INSERT INTO notifications (user_id, title) VALUES ('u1', 'before')"); err != nil {
		t.Fatal(err)
	}
	writer, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Rollback(ctx)
	// The writer's transaction takes its id before the recount's.
	var writerPID int32
	var writerXid string
	if err := writer.QueryRow(ctx, "SELECT pg_backend_pid(), pg_current_xact_id()::text").Scan(&writerPID, &writerXid); err != nil {
		t.Fatal(err)
	}
	recount, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer recount.Rollback(ctx)
	if _, err := recount.Exec(ctx, "SELECT notifications_unread_recount()"); err != nil {
		t.Fatal(err)
	}
	inserted := make(chan error, 1)
	go func() {
		_, err := writer.Exec(ctx, "INSERT INTO notifications (user_id, title) VALUES ('u1', 'waited')")
		inserted <- err
	}()
	// The INSERT waits for the recount's lock on the table.
	deadline := time.Now().Add(30 * time.Second)
	for waiting := false; !waiting; {
		if time.Now().After(deadline) {
			t.Fatal("the INSERT is not waiting for the recount's lock after 30 s")
		}
		if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks
			WHERE pid = $1 AND NOT granted AND relation = 'notifications'::regclass)`, writerPID).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-inserted:
			t.Fatalf("the INSERT did not wait for the recount: %v", err)
		default:
		}
	}
	if err := recount.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-inserted; err != nil {
		t.Fatal(err)
	}
	if err := writer.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if d := countDiff(t, pool); len(d) > 0 {
		t.Fatalf("after the recount and the writer (xid %s) that waited for it: %v", writerXid, d)
	}
}
