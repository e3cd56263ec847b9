// Package migrations holds pgpush's schema as goose SQL migrations, embedded
// in the binary. sqlc reads the same files as its schema, so the schema has one
// definition.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// FS holds the goose migration files.
//
//go:embed *.sql
var FS embed.FS

// Provider runs the embedded migrations against one database. It is safe for
// concurrent use; concurrent runs from several processes are serialised by a
// PostgreSQL advisory lock, so every node may start with --migrate.
type Provider struct {
	db *sql.DB
	*goose.Provider
}

// Open returns a Provider for the database behind pool. Close it when done;
// that does not close pool.
func Open(pool *pgxpool.Pool, logger *slog.Logger) (*Provider, error) {
	db := stdlib.OpenDBFromPool(pool)
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("migration lock: %w", err)
	}
	opts := []goose.ProviderOption{goose.WithSessionLocker(locker)}
	if logger != nil {
		opts = append(opts, goose.WithSlog(logger))
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, FS, opts...)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("migrations: %w", err)
	}
	return &Provider{db: db, Provider: p}, nil
}

// Close releases the provider's database handle.
func (p *Provider) Close() error {
	return p.db.Close()
}

// Up applies every pending migration to the database behind pool.
func Up(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) error {
	p, err := Open(pool, logger)
	if err != nil {
		return err
	}
	defer p.Close()
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate up: %w", err)
	}
	return nil
}

// ErrNotMigrated is returned by Check when the database's schema is older
// than the one this binary was built for.
var ErrNotMigrated = errors.New("database schema is not migrated")

// Check reports ErrNotMigrated, wrapped with the versions, unless every
// embedded migration has been applied. Unlike goose's own status it writes
// nothing, so a read-only role can run it.
func Check(ctx context.Context, pool *pgxpool.Pool) error {
	p, err := Open(pool, nil)
	if err != nil {
		return err
	}
	defer p.Close()
	sources := p.ListSources()
	target := sources[len(sources)-1].Version
	current, err := readVersion(ctx, func(ctx context.Context, q string) rowScanner { return pool.QueryRow(ctx, q) })
	if err != nil {
		return err
	}
	if current < target {
		return fmt.Errorf("%w: at version %d, this pgpush needs %d (run `pgpush migrate up`, or `pgpush serve --migrate`)", ErrNotMigrated, current, target)
	}
	return nil
}
