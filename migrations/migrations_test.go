package migrations_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgpush/pgpush/db/dbtest"
	"github.com/pgpush/pgpush/migrations"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

// The template database is migrated already; roll it all the way down, check
// that nothing is left and that Check notices, then go up again.
func TestMigrationsGoDownAndUpAgain(t *testing.T) {
	ctx := context.Background()
	pool, p := migratedDB(t)
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

// Migrating 00008 or 00009 down leaves the functions it replaced as the
// migration before made them (bodies, settings, security, comments).
func TestFunctionMigrationsGoDownExactly(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		version   int64
		functions []string
	}{
		{8, []string{"notifications_count", "notifications_hint_reset"}},
		{9, []string{"notifications_unread_recount"}},
	} {
		t.Run(fmt.Sprintf("%05d", tc.version), func(t *testing.T) {
			t.Parallel()
			goesDownExactly(t, tc.version, tc.functions)
		})
	}
}

// goesDownExactly migrates to version-1, then up to version and down again,
// and compares the named functions with what version-1 made them.
func goesDownExactly(t *testing.T, version int64, names []string) {
	ctx := context.Background()
	pool, p := migratedDB(t)
	functions := func() string {
		t.Helper()
		var defs string
		err := pool.QueryRow(ctx, `SELECT string_agg(pg_get_functiondef(p.oid) || coalesce(obj_description(p.oid, 'pg_proc'), ''), E'\n' ORDER BY p.proname)
			FROM pg_proc p WHERE p.proname = ANY($1)`, names).Scan(&defs)
		if err != nil {
			t.Fatal(err)
		}
		return defs
	}
	if _, err := p.DownTo(ctx, version-2); err != nil {
		t.Fatalf("down to %d: %v", version-2, err)
	}
	if _, err := p.UpTo(ctx, version-1); err != nil {
		t.Fatalf("up to %d: %v", version-1, err)
	}
	before := functions()
	if _, err := p.UpTo(ctx, version); err != nil {
		t.Fatalf("up to %d: %v", version, err)
	}
	if functions() == before {
		t.Fatalf("%05d changed none of %v", version, names)
	}
	if _, err := p.DownTo(ctx, version-1); err != nil {
		t.Fatalf("down to %d: %v", version-1, err)
	}
	if got := functions(); got != before {
		t.Errorf("after %05d down:\n%s\nwant %05d's:\n%s", version, got, version-1, before)
	}
}

// migratedDB is a fresh database from the migrated template, and a provider
// of pgpush's migrations on it.
func migratedDB(t *testing.T) (*pgxpool.Pool, *migrations.Provider) {
	t.Helper()
	pool := dbtest.Pool(t, dbtest.NewDB(t))
	p, err := migrations.Open(pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return pool, p
}
