package migrations_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgpush/pgpush/db/dbtest"
	"github.com/pgpush/pgpush/migrations"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

// The template database is migrated already; roll it all the way down, check
// that nothing is left and that Check notices, then go up again.
func TestMigrationsGoDownAndUpAgain(t *testing.T) {
	ctx := context.Background()
	pool := dbtest.Pool(t, dbtest.NewDB(t))
	p, err := migrations.Open(pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := migrations.Check(ctx, pool); err != nil {
		t.Fatalf("a migrated database: %v", err)
	}
	objects := func() (n int) {
		t.Helper()
		err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_class WHERE relname LIKE 'notifications%')
			+ (SELECT count(*) FROM pg_proc WHERE proname LIKE 'notifications%')`).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := objects()
	if before == 0 {
		t.Fatal("the migrated database has no notifications objects")
	}
	if _, err := p.DownTo(ctx, 0); err != nil {
		t.Fatalf("down: %v", err)
	}
	if n := objects(); n != 0 {
		t.Fatalf("%d notifications objects left after migrating down", n)
	}
	if err := migrations.Check(ctx, pool); !errors.Is(err, migrations.ErrNotMigrated) {
		t.Fatalf("Check after down = %v, want ErrNotMigrated", err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up again: %v", err)
	}
	if n := objects(); n != before {
		t.Fatalf("%d notifications objects after up again, %d before", n, before)
	}
	if err := migrations.Check(ctx, pool); err != nil {
		t.Fatalf("Check after up again: %v", err)
	}
	// And the trigger still pushes.
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `LISTEN "pgpush.public"`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO notifications (user_id, title) VALUES ('alice', 'after up')`); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := conn.Conn().WaitForNotification(wctx)
	if err != nil {
		t.Fatalf("no notification after migrating up again: %v", err)
	}
	if !strings.Contains(n.Payload, `"op":"c"`) || !strings.Contains(n.Payload, `"alice"`) {
		t.Fatalf("payload %s", n.Payload)
	}
}
