package dbtest_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgpush/pgpush/db/dbtest"
)

func TestMain(m *testing.M) {
	dbtest.Main(m)
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func exec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// waitNotification returns the next notification on conn, failing the test
// if none arrives within a few seconds.
func waitNotification(t *testing.T, conn *pgx.Conn) *pgconn.Notification {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	n, err := conn.WaitForNotification(ctx)
	if err != nil {
		t.Fatalf("wait for notification: %v", err)
	}
	return n
}

func TestNewDBIsolated(t *testing.T) {
	t.Parallel()
	urlA, urlB := dbtest.NewDB(t), dbtest.NewDB(t)
	if urlA == urlB {
		t.Fatalf("two NewDB calls returned the same URL %s", urlA)
	}
	a, b := connect(t, urlA), connect(t, urlB)
	exec(t, a, "CREATE TABLE only_in_a (id int)")
	exec(t, a, "INSERT INTO notifications (user_id, title) VALUES ('u1', 'in a')")

	var table *string
	var rows int
	if err := b.QueryRow(t.Context(), "SELECT to_regclass('only_in_a')::text, (SELECT count(*) FROM notifications)").Scan(&table, &rows); err != nil {
		t.Fatal(err)
	}
	if table != nil {
		t.Error("table created in database A is visible in database B")
	}
	if rows != 0 {
		t.Errorf("database B has %d notifications, want 0", rows)
	}
}

// TestNotifyStaysInDatabase checks a NOTIFY in one clone never reaches a
// listener in another. All databases share one notification queue in commit
// order, so once B's listener has its own later NOTIFY, it has passed A's.
func TestNotifyStaysInDatabase(t *testing.T) {
	t.Parallel()
	a, b := connect(t, dbtest.NewDB(t)), connect(t, dbtest.NewDB(t))
	exec(t, a, "LISTEN ch")
	exec(t, b, "LISTEN ch")
	exec(t, a, "SELECT pg_notify('ch', 'from a')")
	exec(t, b, "SELECT pg_notify('ch', 'from b')")

	if n := waitNotification(t, a); n.Payload != "from a" {
		t.Errorf("A's listener got %q first, want %q", n.Payload, "from a")
	}
	if n := waitNotification(t, b); n.Payload != "from b" {
		t.Errorf("B's listener got %q first, want %q: NOTIFY crossed databases", n.Payload, "from b")
	}
}

func TestTemplateMigrated(t *testing.T) {
	t.Parallel()
	conn := connect(t, dbtest.NewDB(t))
	rows, err := conn.Query(t.Context(), `
		SELECT tgname FROM pg_trigger
		WHERE tgrelid = 'notifications'::regclass AND NOT tgisinternal
		ORDER BY tgname`)
	if err != nil {
		t.Fatalf("list triggers (is the notifications table there?): %v", err)
	}
	triggers, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"notifications_count_truncate",
		"notifications_notify_delete", "notifications_notify_insert", "notifications_notify_update", "notifications_stamp",
	}
	if !slices.Equal(triggers, want) {
		t.Errorf("triggers = %v, want %v", triggers, want)
	}

	// The insert trigger really fires.
	exec(t, conn, `LISTEN "pgpush.public"`)
	var id int64
	if err := conn.QueryRow(t.Context(), "INSERT INTO notifications (user_id, title) VALUES ('alice', 'hi') RETURNING id").Scan(&id); err != nil {
		t.Fatal(err)
	}
	n := waitNotification(t, conn)
	if n.Channel != "pgpush.public" {
		t.Errorf("notification on channel %q, want pgpush.public", n.Channel)
	}
	if want := fmt.Sprintf(`"rows":[[%d,"alice",1,`, id); !strings.Contains(n.Payload, want) {
		t.Errorf("payload %s lacks %s", n.Payload, want)
	}
}

func TestParallelNewDB(t *testing.T) {
	t.Parallel()
	for i := range 20 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			pool := dbtest.Pool(t, dbtest.NewDB(t))
			user := fmt.Sprintf("user-%d", i)
			if _, err := pool.Exec(t.Context(), "INSERT INTO notifications (user_id, title) VALUES ($1, 'x')", user); err != nil {
				t.Fatal(err)
			}
			var users []string
			rows, err := pool.Query(t.Context(), "SELECT user_id FROM notifications")
			if err != nil {
				t.Fatal(err)
			}
			if users, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(users, []string{user}) {
				t.Errorf("notifications hold users %v, want only %s", users, user)
			}
		})
	}
}

// TestNewDBDroppedAtCleanup checks the database is gone after its test,
// even though a session in it is still open then.
func TestNewDBDroppedAtCleanup(t *testing.T) {
	t.Parallel()
	var url string
	var open *pgx.Conn
	t.Run("inner", func(t *testing.T) {
		url = dbtest.NewDB(t)
		var err error
		// Not closed by the inner test, so it is open during the drop.
		if open, err = pgx.Connect(context.Background(), url); err != nil {
			t.Fatal(err)
		}
	})
	if open == nil {
		t.FailNow()
	}
	defer open.Close(context.Background())
	if err := open.Ping(t.Context()); err == nil {
		t.Error("a session survived the drop of its database")
	}
	if conn, err := pgx.Connect(t.Context(), url); err == nil {
		conn.Close(t.Context())
		t.Fatalf("database %s still exists after its test", url)
	}
}

func TestNewCluster(t *testing.T) {
	t.Parallel()
	c := dbtest.NewCluster(t)
	pool := dbtest.Pool(t, c.URL("pgpush"))
	if _, err := pool.Exec(t.Context(), "INSERT INTO notifications (user_id, title) VALUES ('bob', 'before')"); err != nil {
		t.Fatalf("insert (is the database migrated?): %v", err)
	}
	if err := c.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := pool.Ping(t.Context()); err == nil {
		t.Fatal("ping succeeded while the server is stopped")
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	var title string
	if err := pool.QueryRow(t.Context(), "SELECT title FROM notifications WHERE user_id = 'bob'").Scan(&title); err != nil {
		t.Fatalf("read after restart: %v", err)
	}
	if title != "before" {
		t.Errorf("title = %q, want %q", title, "before")
	}
}
