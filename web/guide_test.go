package web_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgpush/pgpush/db/dbtest"
	"github.com/pgpush/pgpush/migrations"
)

// guidePath is the guide for apps coming from Socket.IO and Prisma.
var guidePath = filepath.Join("..", "docs", "coming-from-socketio.md")

// TestGuidePrismaModelsAndMove follows the guide's rename path on a
// database whose notifications table Prisma made, and checks its Prisma
// models against the real tables: Prisma's own schema engine
// (prisma-schema-wasm, what `prisma validate` runs, offline) validates each
// model and reports its mapping, which must match the table's columns,
// types, nullability and defaults: the old model before, the new one against
// pgpush's table after the guide's rename and pgpush's migrations. The
// guide's SQL then moves the old rows, which arrive intact.
func TestGuidePrismaModelsAndMove(t *testing.T) {
	t.Parallel()
	node, npm := nodeTools(t)
	guide, err := os.ReadFile(guidePath)
	if err != nil {
		t.Fatal(err)
	}
	prisma := codeBlocks(string(guide), "prisma")
	if len(prisma) != 2 {
		t.Fatalf("the guide has %d prisma blocks, want the old model and pgpush's", len(prisma))
	}
	oldModel, newModel := prisma[0], prisma[1]
	if !strings.Contains(oldModel, "read      Boolean") || !strings.Contains(newModel, `@map("read_at")`) {
		t.Fatalf("the guide's prisma blocks are not the old model and pgpush's, in that order:\n%s\n%s", oldModel, newModel)
	}

	dir := t.TempDir()
	copyExample(t, filepath.Join("testdata", "prisma"), dir)
	run(t, dir, npm, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--cache", npmCache(t))

	// The app's database: the table Prisma created for the old model (the
	// SQL of prisma migrate diff), in a schema of its own so that pgpush's
	// migrations run here as they would there.
	pool := dbtest.Pool(t, dbtest.WithSearchPath(t, dbtest.NewDB(t), "app"))
	mustExec(t, pool, `CREATE SCHEMA app;
		CREATE TABLE notifications (
			id TEXT NOT NULL, "userId" TEXT NOT NULL, type TEXT NOT NULL, message TEXT NOT NULL,
			read BOOLEAN NOT NULL DEFAULT false, "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
			CONSTRAINT notifications_pkey PRIMARY KEY (id));
		INSERT INTO notifications (id, "userId", type, message, read, "createdAt") VALUES
			('ck1', 'alice', 'order.shipped', 'Order shipped', false, '2026-11-25 18:49:07.123'),
			('ck2', 'alice', 'chat', 'New message', true, '2026-11-26 09:00:00'),
			('ck3', 'bob', 'order.paid', 'Paid', false, '2026-11-27 10:30:00.5')`)
	checkModel(t, pool, prismaModel(t, node, dir, oldModel))

	// The guide's way: rename, migrate, move.
	var rename, move string
	for _, b := range codeBlocks(string(guide), "sql") {
		switch {
		case strings.Contains(b, "RENAME TO notifications_old"):
			rename = b
		case strings.Contains(b, "FROM notifications_old"):
			move = b
		}
	}
	if rename == "" || move == "" {
		t.Fatal("the guide has no SQL that renames the old table or moves rows FROM notifications_old")
	}
	mustExec(t, pool, rename)
	if err := migrations.Up(t.Context(), pool, testLogger()); err != nil {
		t.Fatalf("migrate up after the guide's rename: %v", err)
	}
	checkModel(t, pool, prismaModel(t, node, dir, newModel))
	var pkey string
	if err := pool.QueryRow(t.Context(), `SELECT conname FROM pg_constraint WHERE conrelid = 'notifications'::regclass AND contype = 'p'`).Scan(&pkey); err != nil || pkey != "notifications_pkey" {
		t.Errorf("pgpush's primary key is %q (%v), want notifications_pkey: the old table kept the name", pkey, err)
	}
	mustExec(t, pool, move)
	type row struct {
		User, Kind, Title, Body, Legacy string
		Created                         time.Time
		Read                            *time.Time
	}
	rows, err := pool.Query(t.Context(), `SELECT user_id, kind, title, body, data->>'legacy_id', created_at, read_at FROM notifications ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var got []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.User, &r.Kind, &r.Title, &r.Body, &r.Legacy, &r.Created, &r.Read); err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	read := at("2026-11-26T09:00:00Z")
	want := []row{
		{"alice", "order.shipped", "Order shipped", "", "ck1", at("2026-11-25T18:49:07.123Z"), nil},
		{"alice", "chat", "New message", "", "ck2", read, &read},
		{"bob", "order.paid", "Paid", "", "ck3", at("2026-11-27T10:30:00.5Z"), nil},
	}
	if len(got) != len(want) {
		t.Fatalf("moved %d rows, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.User != w.User || g.Kind != w.Kind || g.Title != w.Title || g.Body != w.Body || g.Legacy != w.Legacy ||
			!g.Created.Equal(w.Created) || (g.Read == nil) != (w.Read == nil) || (g.Read != nil && !g.Read.Equal(*w.Read)) {
			t.Errorf("row %d moved as %+v, want %+v", i, g, w)
		}
	}
}

// codeBlocks are the fenced blocks of a language in markdown.
func codeBlocks(md, lang string) []string {
	var out []string
	for _, m := range regexp.MustCompile("(?s)```"+regexp.QuoteMeta(lang)+"\n(.*?)```").FindAllStringSubmatch(md, -1) {
		out = append(out, m[1])
	}
	return out
}

// model is a Prisma model as testdata/prisma/dmmf.cjs reports it.
type model struct {
	Name   string
	Table  string
	Fields []struct {
		Name, Column, Type  string
		NativeType          *string
		Required, DBDefault bool
	}
}

// prismaModel validates the one model in block with Prisma's schema engine
// and returns its mapping.
func prismaModel(t *testing.T, node, dir, block string) model {
	t.Helper()
	// The datasource as Prisma 6 writes it (Prisma 7 moves url to prisma.config.ts).
	schema := "datasource db {\n  provider = \"postgresql\"\n  url      = env(\"DATABASE_URL\")\n}\n\n" + block
	cmd := exec.Command(node, "dmmf.cjs")
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(schema)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("Prisma refuses the model: %v\n%s\n%s", err, stderr.String(), block)
	}
	var models []model
	if err := json.Unmarshal(out, &models); err != nil || len(models) != 1 {
		t.Fatalf("dmmf.cjs: %v %s", err, out)
	}
	return models[0]
}

// checkModel compares a model's mapping with its table in schema: every
// field's column exists with the type Prisma reads and writes, required
// fields are NOT NULL columns, fields Prisma leaves to the database have a
// default there, and every NOT NULL column without a default has a field
// (or Prisma's inserts would fail).
func checkModel(t *testing.T, pool *pgxpool.Pool, m model) {
	t.Helper()
	type column struct {
		typ               string
		notNull, default_ bool
	}
	cols := map[string]column{}
	rows, err := pool.Query(t.Context(), `SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef OR a.attidentity <> ''
		FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped`, m.Table)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var name string
		var c column
		if err := rows.Scan(&name, &c.typ, &c.notNull, &c.default_); err != nil {
			t.Fatal(err)
		}
		cols[name] = c
	}
	if err := rows.Err(); err != nil || len(cols) == 0 {
		t.Fatalf("model %s: no table %s (%v)", m.Name, m.Table, err)
	}
	types := map[string]string{"String": "text", "BigInt": "bigint", "Int": "integer", "Boolean": "boolean", "Json": "jsonb",
		"DateTime": "timestamp(3) without time zone", "DateTime Timestamptz": "timestamp with time zone"}
	mapped := map[string]bool{}
	for _, f := range m.Fields {
		c, ok := cols[f.Column]
		if !ok {
			t.Errorf("model %s: field %s maps to column %s, which %s does not have", m.Name, f.Name, f.Column, m.Table)
			continue
		}
		mapped[f.Column] = true
		key := f.Type
		if f.NativeType != nil {
			key += " " + *f.NativeType
		}
		if want, ok := types[key]; !ok || !strings.HasPrefix(c.typ, want) {
			t.Errorf("model %s: field %s is %s, column %s is %s", m.Name, f.Name, key, f.Column, c.typ)
		}
		if f.Required != c.notNull {
			t.Errorf("model %s: field %s required=%v, column %s NOT NULL=%v", m.Name, f.Name, f.Required, f.Column, c.notNull)
		}
		if f.DBDefault && !c.default_ {
			t.Errorf("model %s: field %s leaves its default to the database, column %s has none", m.Name, f.Name, f.Column)
		}
	}
	for name, c := range cols {
		if !mapped[name] && c.notNull && !c.default_ {
			t.Errorf("model %s: column %s is NOT NULL without a default, and no field sets it", m.Name, name)
		}
	}
}

func mustExec(t *testing.T, pool *pgxpool.Pool, sql string) {
	t.Helper()
	if _, err := pool.Exec(t.Context(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}
