package main

import (
	"context"
	"fmt"
	"io"

	"github.com/pgpush/pgpush/migrations"
)

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: pgpush migrate up|down|status")
	}
	verb := args[0]
	var s settings
	e := &envFlags{fs: newFlagSet("migrate "+verb, stderr)}
	s.bindDatabase(e)
	if err := e.parse(args[1:]); err != nil {
		return err
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
		r, err := p.Down(ctx)
		if err != nil {
			return fmt.Errorf("migrate down: %w", err)
		}
		fmt.Fprintf(stdout, "rolled back %s\n", r.Source.Path)
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
	default:
		return fmt.Errorf("unknown migrate command %q: use up, down or status", verb)
	}
	return nil
}
