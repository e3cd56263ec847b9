// Package dbtest gives each test its own real, migrated PostgreSQL database.
//
// A test package calls Main from its TestMain. Main starts one throwaway
// cluster for the test binary (package pgcluster), or uses the server at
// $PGPUSH_TEST_DATABASE_URL, and migrates a template database once. NewDB
// then clones the template for a test in milliseconds, so tests can run in
// parallel without seeing each other's rows or NOTIFYs (NOTIFY reaches only
// listeners in the same database). Fault tests that stop the server get a
// cluster of their own from NewCluster.
//
//	func TestMain(m *testing.M) { dbtest.Main(m) }
//
//	func TestX(t *testing.T) {
//		t.Parallel()
//		pool := dbtest.Pool(t, dbtest.NewDB(t))
//		...
//	}
package dbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/pgpush/pgpush/db/pgcluster"
	"github.com/pgpush/pgpush/migrations"
)

// EnvDatabaseURL names the environment variable that, when set, makes Main
// use an existing server instead of starting one. It must be a postgres://
// URL of a superuser (or a role with CREATEDB that may also drop what it
// creates); the database it names is used only for CREATE and DROP DATABASE.
const EnvDatabaseURL = "PGPUSH_TEST_DATABASE_URL"

const (
	// setupTimeout bounds Main's start of the server and migration.
	setupTimeout = 2 * time.Minute
	// cleanupTimeout bounds each DROP DATABASE and the final teardown.
	cleanupTimeout = time.Minute
)

// server is what Main sets up for the test binary. Main writes it before
// m.Run and reads it after, and tests only read it, so it needs no lock.
var server *shared

type shared struct {
	cluster  *pgcluster.Cluster // nil when using $PGPUSH_TEST_DATABASE_URL
	admin    *pgxpool.Pool      // to the maintenance database
	base     *url.URL           // the admin URL; databases differ in path
	template string
	// prefix starts every database name this binary makes, so binaries
	// sharing one server (go test ./... runs packages in parallel) never
	// collide.
	prefix string
	seq    atomic.Uint64
}

// Main is the body of a test package's TestMain: it sets up the server and
// the migrated template, runs the tests, drops the template, stops the
// server, checks that no goroutine outlived the tests (when they passed),
// and exits with the right code. It never returns.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	s, err := setUp(ctx)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "dbtest: %v\n", err)
		return 1
	}
	server = s
	code := m.Run()
	if err := s.tearDown(); err != nil {
		fmt.Fprintf(os.Stderr, "dbtest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	if code == 0 {
		// Like goleak.VerifyTestMain, but after the server is gone, so the
		// check also covers goroutines that the cleanup should have ended.
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "dbtest: goroutines leaked by the tests: %v\n", err)
			code = 1
		}
	}
	return code
}

// setUp starts or connects to the server and creates the template. On error
// it leaves nothing behind.
func setUp(ctx context.Context) (_ *shared, err error) {
	suffix, err := randomHex(4)
	if err != nil {
		return nil, err
	}
	s := &shared{
		template: "pgpush_template_" + suffix,
		prefix:   "test_" + suffix + "_",
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.tearDown())
		}
	}()
	rawURL := os.Getenv(EnvDatabaseURL)
	if rawURL == "" {
		s.cluster, err = pgcluster.Start(ctx, pgcluster.Options{})
		if err != nil {
			return nil, fmt.Errorf("start postgres (or set %s): %w", EnvDatabaseURL, err)
		}
		rawURL = s.cluster.URL("postgres")
	}
	s.base, err = url.Parse(rawURL)
	if err != nil || (s.base.Scheme != "postgres" && s.base.Scheme != "postgresql") {
		return nil, fmt.Errorf("%s must be a postgres:// URL", EnvDatabaseURL)
	}
	s.admin, err = pgxpool.New(ctx, rawURL)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if _, err := s.admin.Exec(ctx, "CREATE DATABASE "+ident(s.template)); err != nil {
		return nil, fmt.Errorf("create template database: %w", err)
	}
	if err := migrate(ctx, s.url(s.template)); err != nil {
		return nil, fmt.Errorf("template database: %w", err)
	}
	if err := s.sealTemplate(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// sealTemplate waits until no session is left in the template (CREATE
// DATABASE … TEMPLATE fails while there is one; a closed pool's backends
// exit a moment after it closes) and then forbids new ones, so a stray
// connection cannot break every later NewDB.
func (s *shared) sealTemplate(ctx context.Context) error {
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	for {
		var n int
		if err := s.admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", s.template).Scan(&n); err != nil {
			return fmt.Errorf("count template sessions: %w", err)
		}
		if n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %d sessions to leave the template: %w", n, ctx.Err())
		case <-ticker.C:
		}
	}
	if _, err := s.admin.Exec(ctx, "ALTER DATABASE "+ident(s.template)+" WITH ALLOW_CONNECTIONS false"); err != nil {
		return fmt.Errorf("seal template: %w", err)
	}
	return nil
}

// tearDown drops the template and releases the server. It tolerates a
// partial setUp.
func (s *shared) tearDown() error {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	var errs []error
	if s.admin != nil {
		// Only a local cluster is thrown away whole; on a shared server the
		// template must go.
		if s.cluster == nil {
			if _, err := s.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(s.template)+" WITH (FORCE)"); err != nil {
				errs = append(errs, fmt.Errorf("drop template database: %w", err))
			}
		}
		s.admin.Close()
	}
	if s.cluster != nil {
		if err := s.cluster.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close postgres: %w", err))
		}
	}
	return errors.Join(errs...)
}

// url returns the URL of database name on the server.
func (s *shared) url(name string) string {
	u := *s.base
	u.Path = "/" + name
	u.RawPath = ""
	return u.String()
}

// NewDB creates a database, cloned from the migrated template, that is
// dropped when the test ends, and returns its URL. It is safe to call from
// parallel tests. The test's connections to it should be closed by then
// (Pool's are); any left are terminated by the drop.
func NewDB(t testing.TB) string {
	t.Helper()
	s := mustServer(t)
	name := fmt.Sprintf("%s%d", s.prefix, s.seq.Add(1))
	if _, err := s.admin.Exec(t.Context(), "CREATE DATABASE "+ident(name)+" TEMPLATE "+ident(s.template)); err != nil {
		t.Fatalf("dbtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if _, err := s.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)"); err != nil {
			t.Errorf("dbtest: drop database %s: %v", name, err)
		}
	})
	return s.url(name)
}

// NewCluster starts a PostgreSQL cluster of the test's own, with a migrated
// database "pgpush" (its URL is c.URL("pgpush")), and closes it when the test
// ends. It is for fault tests that stop or restart the server; it needs the
// PostgreSQL server binaries even when $PGPUSH_TEST_DATABASE_URL is set, and
// takes about a second.
func NewCluster(t testing.TB) *pgcluster.Cluster {
	t.Helper()
	mustServer(t)
	c, err := pgcluster.Start(t.Context(), pgcluster.Options{})
	if err != nil {
		t.Fatalf("dbtest: start cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("dbtest: close cluster: %v", err)
		}
	})
	if err := c.CreateDatabase(t.Context(), "pgpush", ""); err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	if err := migrate(t.Context(), c.URL("pgpush")); err != nil {
		t.Fatalf("dbtest: database pgpush: %v", err)
	}
	return c
}

// Pool returns a pool connected to url, checked with a ping, that is closed
// when the test ends. Use a pgxpool.Config of your own for other settings.
func Pool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatalf("dbtest: pool: %v", err)
	}
	t.Cleanup(pool.Close)
	if err := pool.Ping(t.Context()); err != nil {
		t.Fatalf("dbtest: pool: %v", err)
	}
	return pool
}

// migrate applies the migrations to the database at url and closes every
// connection it opened.
func migrate(ctx context.Context, url string) error {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer pool.Close()
	return migrations.Up(ctx, pool, slog.New(slog.DiscardHandler))
}

func mustServer(t testing.TB) *shared {
	t.Helper()
	if server == nil {
		t.Fatal("dbtest: call dbtest.Main(m) from the package's TestMain")
	}
	return server
}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random name: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// WithSearchPath returns dbURL with search_path=schema, so that a
// connection's unqualified names (pgpush's migrations and queries included)
// resolve in that schema.
func WithSearchPath(t testing.TB, dbURL, schema string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
