package migrations

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"strings"

	"github.com/pressly/goose/v3"
)

// ErrForeignTable is returned by Up when the schema pgpush would create its
// table in already holds a relation named notifications that pgpush did not
// create, or records migrations of another application in goose's version
// table. Up changes nothing then.
var ErrForeignTable = errors.New("the schema already has a notifications table that is not pgpush's")

// ErrNoSchema is returned by Up when no schema of the connection's
// search_path exists, so there is nowhere to create the tables.
var ErrNoSchema = errors.New("no schema of search_path exists")

// Up applies every pending migration, after checking that the target schema
// is pgpush's to change: a foreign notifications table there stops it before
// goose touches anything (goose would create its version table, then fail
// half-way with "relation already exists").
func (p *Provider) Up(ctx context.Context) ([]*goose.MigrationResult, error) {
	if err := p.guard(ctx); err != nil {
		return nil, err
	}
	return p.Provider.Up(ctx)
}

// The statements below read the catalog, which sqlc does not model, so they
// are among the few SQL strings in Go code. Every one only reads.

// guard reports ErrForeignTable or ErrNoSchema, with what to do, when Up must
// not run. A notifications table is pgpush's when it has the changed_xid
// column of type xid8 that migration 00001 creates with it.
func (p *Provider) guard(ctx context.Context) error {
	var (
		schema     sql.NullString
		kind       sql.NullString
		ours       bool
		versioned  bool
		maxVersion int64
	)
	err := p.db.QueryRowContext(ctx, `
		SELECT s.name, c.relkind::text,
		       EXISTS (SELECT 1 FROM pg_attribute a
		               WHERE a.attrelid = c.oid AND a.attname = 'changed_xid'
		                 AND a.atttypid = 'xid8'::regtype AND NOT a.attisdropped),
		       to_regclass(quote_ident(s.name) || '.goose_db_version') IS NOT NULL
		FROM (SELECT current_schema() AS name) s
		LEFT JOIN pg_namespace n ON n.nspname = s.name
		LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = 'notifications'`,
	).Scan(&schema, &kind, &ours, &versioned)
	if err != nil {
		return fmt.Errorf("inspect schema: %w", err)
	}
	if !schema.Valid {
		return &guardError{ErrNoSchema, "no schema in search_path exists: create the one DATABASE_URL's search_path names first (e.g. CREATE SCHEMA pgpush;); nothing was changed"}
	}
	if versioned {
		q := fmt.Sprintf(`SELECT coalesce(max(version_id), 0) FROM %s.goose_db_version WHERE is_applied`, quoteIdent(schema.String))
		if err := p.db.QueryRowContext(ctx, q).Scan(&maxVersion); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
	}
	s := displayIdent(schema.String)
	switch {
	case kind.Valid && !ours:
		what := "table"
		if kind.String != "r" && kind.String != "p" {
			what = "relation (not a table)"
		}
		return &guardError{ErrForeignTable, fmt.Sprintf("schema %s already has a %s notifications that pgpush did not create (it lacks pgpush's changed_xid column); nothing was changed. "+
			"Either give pgpush a schema of its own: CREATE SCHEMA pgpush; and add search_path=pgpush to DATABASE_URL (postgres://…/app?search_path=pgpush). "+
			"Or rename your table: ALTER TABLE %s.notifications RENAME TO notifications_old; then migrate, and move its rows (docs/coming-from-socketio.md)", s, what, s)}
	case !kind.Valid && maxVersion > 0:
		return &guardError{ErrForeignTable, fmt.Sprintf("%s.goose_db_version records migrations up to version %d, but schema %s has no pgpush notifications table: "+
			"that version table is another application's (or the table was dropped by hand); nothing was changed. "+
			"Give pgpush a schema of its own: CREATE SCHEMA pgpush; and add search_path=pgpush to DATABASE_URL", s, maxVersion, s)}
	}
	return nil
}

// guardError is a refusal of Up: its message says what to do, and it
// matches its sentinel with errors.Is.
type guardError struct {
	sentinel error
	msg      string
}

func (e *guardError) Error() string        { return e.msg }
func (e *guardError) Is(target error) bool { return target == e.sentinel }

// displayIdent is name as SQL would need it written: quoted only when needed.
func displayIdent(name string) string {
	if plainIdent.MatchString(name) {
		return name
	}
	return quoteIdent(name)
}

var plainIdent = regexp.MustCompile(`^[a-z_][a-z0-9_$]*$`)

// Version is the database's schema version: the highest applied migration,
// or 0 when none is (or goose's version table does not exist). Unlike goose's
// GetDBVersion it creates nothing.
func (p *Provider) Version(ctx context.Context) (int64, error) {
	return readVersion(ctx, func(ctx context.Context, q string) rowScanner { return p.db.QueryRowContext(ctx, q) })
}

// rowScanner is a row of database/sql or of pgx.
type rowScanner interface{ Scan(dest ...any) error }

// readVersion reads goose's version table through query, which runs one
// statement and returns its row. Check and Version share it.
func readVersion(ctx context.Context, query func(context.Context, string) rowScanner) (int64, error) {
	var exists bool
	if err := query(ctx, `SELECT to_regclass('goose_db_version') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var v int64
	if err := query(ctx, `SELECT coalesce(max(version_id), 0) FROM goose_db_version WHERE is_applied`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}

// DroppedTable is a table that rolling back a migration drops, with how many
// rows it holds (Rows is -1 when it does not exist, and stops counting at
// a million: More is then true).
type DroppedTable struct {
	Name string
	Rows int64
	More bool
}

// Rollback describes the migration Down would roll back next.
type Rollback struct {
	Version int64
	Path    string
	// Drops are the tables its Down section drops.
	Drops []DroppedTable
}

// ErrNothingToRollBack is returned by NextRollback when no migration is
// applied.
var ErrNothingToRollBack = errors.New("nothing to roll back: no pgpush migration is applied (version 0)")

var dropTable = regexp.MustCompile(`(?i)\bDROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?([A-Za-z_][A-Za-z0-9_$.]*(?:\s*,\s*[A-Za-z_][A-Za-z0-9_$.]*)*)`)

// NextRollback reads, without changing anything, which migration Down would
// roll back and which tables (with their rows) that would drop, so a caller
// can ask before losing data. It reports ErrNothingToRollBack at version 0.
func (p *Provider) NextRollback(ctx context.Context) (*Rollback, error) {
	v, err := p.Version(ctx)
	if err != nil {
		return nil, err
	}
	if v == 0 {
		return nil, ErrNothingToRollBack
	}
	var src *goose.Source
	for _, s := range p.ListSources() {
		if s.Version == v {
			src = s
		}
	}
	if src == nil {
		return nil, fmt.Errorf("the database is at version %d, which this pgpush does not know (a newer pgpush migrated it)", v)
	}
	text, err := fs.ReadFile(FS, src.Path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", src.Path, err)
	}
	r := &Rollback{Version: v, Path: src.Path}
	_, down, _ := strings.Cut(string(text), "-- +goose Down")
	for _, m := range dropTable.FindAllStringSubmatch(down, -1) {
		for _, name := range strings.Split(m[1], ",") {
			t := DroppedTable{Name: strings.TrimSpace(name), Rows: -1}
			var exists bool
			if err := p.db.QueryRowContext(ctx, `SELECT to_regclass($1) IS NOT NULL`, t.Name).Scan(&exists); err != nil {
				return nil, fmt.Errorf("inspect %s: %w", t.Name, err)
			}
			if exists {
				// Counting stops at a million rows: enough to say what is at stake.
				q := fmt.Sprintf(`SELECT count(*) FROM (SELECT FROM %s LIMIT 1000001) t`, t.Name)
				if err := p.db.QueryRowContext(ctx, q).Scan(&t.Rows); err != nil {
					return nil, fmt.Errorf("count rows of %s: %w", t.Name, err)
				}
				if t.Rows > 1_000_000 {
					t.Rows, t.More = 1_000_000, true
				}
			}
			r.Drops = append(r.Drops, t)
		}
	}
	return r, nil
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
