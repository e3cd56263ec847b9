package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgpush/pgpush/db/dbtest"
)

// TestMigrateHelpAndArgumentsNeedNoDatabase: help in every spelling prints
// the usage to stdout and exits 0, and mistakes in the arguments are named
// before DATABASE_URL is asked for.
func TestMigrateHelpAndArgumentsNeedNoDatabase(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"up", "-h"}, {"down", "--help"}} {
		out, stderr, err := pgpush(t, nil, append([]string{"migrate"}, args...)...)
		if err != nil || !strings.Contains(out, "Usage: pgpush migrate up|down|status") || !strings.Contains(out, "-yes") {
			t.Errorf("migrate %v: %v\nstdout: %s\nstderr: %s", args, err, out, stderr)
		}
	}
	for args, want := range map[string]string{
		"frob":        `unknown migrate command "frob"`,
		"":            "say up, down or status",
		"up --bogus":  "flag provided but not defined: -bogus",
		"up --yes":    "--yes is for migrate down only",
		"status more": `unexpected argument "more"`,
	} {
		_, stderr, err := pgpush(t, nil, append([]string{"migrate"}, strings.Fields(args)...)...)
		if err == nil || !strings.Contains(stderr, want) || strings.Contains(stderr, "DATABASE_URL is not set") {
			t.Errorf("migrate %s: %v, want an error saying %q: %s", args, err, want, stderr)
		}
	}
	// Flags go before or after the command.
	_, stderr, err := pgpush(t, nil, "migrate", "--log-level", "debug", "status")
	if err == nil || !strings.Contains(stderr, "DATABASE_URL is not set") {
		t.Errorf("migrate --log-level debug status without a database: %v %s", err, stderr)
	}
}

// TestMigrateUpStopsAtAForeignTable: a database whose notifications table
// is the application's own (as Prisma made it) is left exactly as it was,
// with one message naming both ways out; both then work.
func TestMigrateUpStopsAtAForeignTable(t *testing.T) {
	t.Parallel()
	dbURL := dbtest.NewDB(t)
	pool := dbtest.Pool(t, dbURL)
	ctx := t.Context()
	mustExec(t, pool, `CREATE SCHEMA app;
		CREATE TABLE app.notifications (
			id text PRIMARY KEY, "userId" text NOT NULL, type text NOT NULL, message text NOT NULL,
			read boolean NOT NULL DEFAULT false, "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP);
		COMMENT ON TABLE app.notifications IS 'the app''s own';
		INSERT INTO app.notifications (id, "userId", type, message, read) VALUES
			('c1', 'alice', 'order', 'Order shipped', false), ('c2', 'alice', 'order', 'Paid', true), ('c3', 'bob', 'chat', 'Hi', false)`)
	snapshot := func() string {
		t.Helper()
		var s string
		err := pool.QueryRow(ctx, `SELECT concat_ws(' | ',
			(SELECT json_agg(n ORDER BY id)::text FROM app.notifications n),
			(SELECT string_agg(attname || ':' || format_type(atttypid, atttypmod), ',' ORDER BY attnum) FROM pg_attribute
			  WHERE attrelid = 'app.notifications'::regclass AND attnum > 0 AND NOT attisdropped),
			(SELECT string_agg(relname || ':' || relkind::text, ',' ORDER BY relname) FROM pg_class WHERE relnamespace = 'app'::regnamespace),
			(SELECT string_agg(proname, ',' ORDER BY proname) FROM pg_proc WHERE pronamespace = 'app'::regnamespace),
			(SELECT count(*) FROM pg_trigger WHERE tgrelid = 'app.notifications'::regclass),
			obj_description('app.notifications'::regclass, 'pg_class'))`).Scan(&s)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := snapshot()

	env := []string{"DATABASE_URL=" + dbtest.WithSearchPath(t, dbURL, "app")}
	out, stderr, err := pgpush(t, env, "migrate", "up")
	if err == nil {
		t.Fatalf("migrate up over a foreign table succeeded: %s", out)
	}
	msg := strings.TrimSpace(stderr)
	if strings.Contains(msg, "\n") {
		t.Errorf("more than one line: %q", msg)
	}
	for _, want := range []string{"schema app already has a table notifications that pgpush did not create", "nothing was changed",
		"CREATE SCHEMA pgpush", "search_path=pgpush", "ALTER TABLE app.notifications RENAME TO notifications_old", "docs/coming-from-socketio.md"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the message does not say %q: %s", want, msg)
		}
	}
	// The guide quotes the message, for schema public.
	guide, err := os.ReadFile(filepath.Join("..", "..", "docs", "coming-from-socketio.md"))
	if err != nil {
		t.Fatal(err)
	}
	inPublic := strings.NewReplacer("schema app ", "schema public ", "TABLE app.", "TABLE public.").Replace(msg)
	if !strings.Contains(string(guide), inPublic) {
		t.Errorf("docs/coming-from-socketio.md does not quote the message as it is now:\n%s", inPublic)
	}
	if after := snapshot(); after != before {
		t.Fatalf("migrate up changed the schema:\nbefore %s\nafter  %s", before, after)
	}
	if _, stderr, err := pgpush(t, []string{"DATABASE_URL=" + dbtest.WithSearchPath(t, dbURL, "nowhere")}, "migrate", "up"); err == nil || !strings.Contains(stderr, "no schema in search_path exists") {
		t.Fatalf("migrate up into a schema that does not exist: %v %s", err, stderr)
	}

	// Way one: a schema of pgpush's own; the app's table stays as it is.
	mustExec(t, pool, `CREATE SCHEMA pgpush`)
	env = []string{"DATABASE_URL=" + dbtest.WithSearchPath(t, dbURL, "pgpush")}
	if out, stderr, err := pgpush(t, env, "migrate", "up"); err != nil || !strings.Contains(out, "applied") {
		t.Fatalf("migrate up with search_path=pgpush: %v %s %s", err, out, stderr)
	}
	if after := snapshot(); after != before {
		t.Fatalf("migrating schema pgpush changed schema app:\nbefore %s\nafter  %s", before, after)
	}
	mustExec(t, pool, `INSERT INTO pgpush.notifications (user_id, title) VALUES ('alice', 'in schema pgpush')`)

	// Way two: rename the old table, migrate in its schema.
	mustExec(t, pool, `ALTER TABLE app.notifications RENAME TO notifications_old`)
	env = []string{"DATABASE_URL=" + dbtest.WithSearchPath(t, dbURL, "app")}
	if out, stderr, err := pgpush(t, env, "migrate", "up"); err != nil || !strings.Contains(out, "applied") {
		t.Fatalf("migrate up after the rename: %v %s %s", err, out, stderr)
	}
	if out, stderr, err := pgpush(t, env, "migrate", "up"); err != nil || !strings.Contains(out, "up to date") {
		t.Fatalf("migrate up again: %v %s %s", err, out, stderr)
	}
	var old int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM app.notifications_old`).Scan(&old); err != nil || old != 3 {
		t.Fatalf("the renamed table has %d rows (%v), want 3", old, err)
	}

	// goose's version table of another application, with no table of ours.
	mustExec(t, pool, `CREATE SCHEMA other; CREATE TABLE other.goose_db_version (id serial, version_id bigint, is_applied boolean, tstamp timestamp);
		INSERT INTO other.goose_db_version (version_id, is_applied) VALUES (0, true), (1, true), (2, true)`)
	_, stderr, err = pgpush(t, []string{"DATABASE_URL=" + dbtest.WithSearchPath(t, dbURL, "other")}, "migrate", "up")
	if err == nil || !strings.Contains(stderr, "another application's") {
		t.Fatalf("migrate up over another application's goose_db_version: %v %s", err, stderr)
	}
}

func mustExec(t *testing.T, pool *pgxpool.Pool, sql string) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}
