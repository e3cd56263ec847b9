package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/pgpush/pgpush/migrations"
)

const migrateUsage = `Usage: pgpush migrate up|down|status [flags]

  up      apply every pending migration; stops, changing nothing, if the
          schema already holds a notifications table that is not pgpush's
  down    roll back the latest migration; the one that drops the
          notifications table with its rows needs --yes
  status  list the migrations, applied or pending

DATABASE_URL (or --database-url) names the database; search_path in it
places the tables in another schema, e.g. postgres://…/app?search_path=pgpush

Flags:
`

// runMigrate parses every argument, and answers -h, before it needs a
// database, so `pgpush migrate -h` works anywhere.
func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var s settings
	var yes bool
	e := &envFlags{fs: newFlagSet("migrate", stderr)}
	s.bindDatabase(e)
	e.fs.BoolVar(&yes, "yes", false, "down: confirm dropping the notifications table and its rows")
	usage := func(w io.Writer) {
		fmt.Fprint(w, migrateUsage)
		e.fs.SetOutput(w)
		e.fs.PrintDefaults()
		e.fs.SetOutput(stderr)
	}
	e.fs.Usage = func() { usage(stderr) }
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			usage(stdout)
			return nil
		}
	}
	if len(args) > 0 && args[0] == "help" {
		usage(stdout)
		return nil
	}
	// Flags may come before and after the command: up --database-url … or
	// --database-url … up.
	var verb string
	var rest []string
	for i, a := range args {
		if !strings.HasPrefix(a, "-") && (i == 0 || !flagTakesValue(e, args[i-1])) {
			verb, rest = a, append(slices.Clone(args[:i]), args[i+1:]...)
			break
		}
	}
	switch verb {
	case "up", "down", "status":
	case "":
		usage(stderr)
		return errors.New("migrate: say up, down or status")
	default:
		usage(stderr)
		return fmt.Errorf("unknown migrate command %q: use up, down or status", verb)
	}
	if err := e.parse(rest); err != nil {
		return err
	}
	if yes && verb != "down" {
		return fmt.Errorf("--yes is for migrate down only")
	}
	logger, err := newLogger(stderr, s.LogLevel, s.LogFormat)
	if err != nil {
		return err
	}
	pool, err := openPool(ctx, s.DatabaseURL, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	p, err := migrations.Open(pool, logger)
	if err != nil {
		return err
	}
	defer p.Close()
	switch verb {
	case "up":
		res, err := p.Up(ctx)
		for _, r := range res {
			fmt.Fprintf(stdout, "applied %s (%s)\n", r.Source.Path, r.Duration.Round(1e6))
		}
		if err != nil {
			return fmt.Errorf("migrate up: %w", err)
		}
		if len(res) == 0 {
			fmt.Fprintln(stdout, "schema is up to date")
		}
	case "down":
		return migrateDown(ctx, p, yes, stdout)
	case "status":
		st, err := p.Status(ctx)
		if err != nil {
			return fmt.Errorf("migrate status: %w", err)
		}
		for _, m := range st {
			applied := "pending"
			if !m.AppliedAt.IsZero() {
				applied = "applied " + m.AppliedAt.UTC().Format("2006-01-02 15:04:05Z")
			}
			fmt.Fprintf(stdout, "%-5d %-32s %s\n", m.Source.Version, m.Source.Path, applied)
		}
	}
	return nil
}

// derivedTables hold nothing that a rollback loses: the deletions' horizon
// is one row about notifications_deleted, the unread counts are counted
// again from notifications by the migration that creates them, and the
// hints' signing key is made anew by the migration that creates it.
var derivedTables = map[string]bool{
	"notifications_deleted_horizon": true,
	"notifications_hint_key":        true,
	"notifications_unread":          true,
	"notifications_unread_delta":    true,
	"notifications_unread_folded":   true,
}

// migrateDown rolls back one migration; one whose Down drops tables that hold
// rows needs yes, because the rows go with them.
func migrateDown(ctx context.Context, p *migrations.Provider, yes bool, stdout io.Writer) error {
	next, err := p.NextRollback(ctx)
	if err != nil {
		return fmt.Errorf("migrate down: %w", err)
	}
	var lost []string
	for _, t := range next.Drops {
		switch {
		// An empty table loses nothing, and bookkeeping derived from the
		// notifications table (the deletions' horizon, the unread counts)
		// means nothing without pgpush.
		case t.Rows <= 0 && !t.More, derivedTables[t.Name]:
			continue
		case t.More:
			lost = append(lost, fmt.Sprintf("table %s with more than a million rows", t.Name))
		default:
			lost = append(lost, fmt.Sprintf("table %s with its %d rows", t.Name, t.Rows))
		}
	}
	if len(lost) > 0 && !yes {
		return fmt.Errorf("migrate down: rolling back %s drops the %s (and its triggers and functions); nothing was changed: run `pgpush migrate down --yes` to drop it",
			next.Path, strings.Join(lost, ", the "))
	}
	r, err := p.Down(ctx)
	if err != nil {
		return fmt.Errorf("migrate down: %w", err)
	}
	fmt.Fprintf(stdout, "rolled back %s\n", r.Source.Path)
	return nil
}

// flagTakesValue reports whether arg is a flag of e that consumes the next
// argument as its value (--database-url URL, not --yes or --x=y).
func flagTakesValue(e *envFlags, arg string) bool {
	name := strings.TrimLeft(arg, "-")
	if !strings.HasPrefix(arg, "-") || strings.Contains(name, "=") {
		return false
	}
	f := e.fs.Lookup(name)
	if f == nil {
		return false
	}
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return !ok || !b.IsBoolFlag()
}
