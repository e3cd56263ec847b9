package pgcluster_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/pgpush/pgpush/db/pgcluster"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// start starts a cluster that is closed when the test ends.
func start(t *testing.T, opts pgcluster.Options) *pgcluster.Cluster {
	t.Helper()
	c, err := pgcluster.Start(t.Context(), opts)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	return c
}

// connect opens a connection that is closed when the test ends.
func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func exec(t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(t.Context(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func show(t *testing.T, conn *pgx.Conn, name string) string {
	t.Helper()
	var v string
	if err := conn.QueryRow(t.Context(), "SELECT current_setting($1)", name).Scan(&v); err != nil {
		t.Fatalf("show %s: %v", name, err)
	}
	return v
}

// portFree reports whether port on 127.0.0.1 can be bound right now.
func portFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func TestStopStartKeepsData(t *testing.T) {
	t.Parallel()
	c := start(t, pgcluster.Options{})
	url := c.URL("postgres")
	if want := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.Port()); url != want {
		t.Errorf("URL = %s, want %s", url, want)
	}
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	exec(t, conn, "CREATE TABLE kept (v text)")
	exec(t, conn, "INSERT INTO kept VALUES ('before stop')")

	if portFree(c.Port()) {
		t.Fatalf("port %d is free while the server runs", c.Port())
	}
	if err := c.Stop(t.Context()); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if !portFree(c.Port()) {
		t.Fatalf("port %d still taken after Stop", c.Port())
	}
	if err := conn.Ping(t.Context()); err == nil {
		t.Fatal("old connection still works after Stop")
	}
	if err := c.Stop(t.Context()); err != nil {
		t.Errorf("second stop: %v", err)
	}

	if err := c.Start(t.Context()); err != nil {
		t.Fatalf("start again: %v", err)
	}
	conn2 := connect(t, url)
	var v string
	if err := conn2.QueryRow(t.Context(), "SELECT v FROM kept").Scan(&v); err != nil {
		t.Fatalf("read after restart: %v", err)
	}
	if v != "before stop" {
		t.Errorf("read %q after restart, want %q", v, "before stop")
	}
	if err := c.Start(t.Context()); err != nil {
		t.Errorf("start while running: %v", err)
	}
}

func TestRestart(t *testing.T) {
	t.Parallel()
	c := start(t, pgcluster.Options{})
	conn := connect(t, c.URL("postgres"))
	var before time.Time
	if err := conn.QueryRow(t.Context(), "SELECT pg_postmaster_start_time()").Scan(&before); err != nil {
		t.Fatal(err)
	}
	exec(t, conn, "CREATE TABLE kept (v int)")
	exec(t, conn, "INSERT INTO kept VALUES (42)")
	if err := c.Restart(t.Context()); err != nil {
		t.Fatalf("restart: %v", err)
	}
	conn2 := connect(t, c.URL("postgres"))
	var after time.Time
	var v int
	if err := conn2.QueryRow(t.Context(), "SELECT pg_postmaster_start_time(), (SELECT v FROM kept)").Scan(&after, &v); err != nil {
		t.Fatal(err)
	}
	if !after.After(before) {
		t.Errorf("postmaster start time %v not after %v: server did not restart", after, before)
	}
	if v != 42 {
		t.Errorf("read %d after restart, want 42", v)
	}
}

func TestDefaultSettings(t *testing.T) {
	t.Parallel()
	c := start(t, pgcluster.Options{Settings: map[string]string{"work_mem": "7MB", "application_name": `it's a \ test`}})
	conn := connect(t, c.URL("postgres"))
	for name, want := range map[string]string{
		"max_connections":    "500",
		"fsync":              "off",
		"synchronous_commit": "off",
		"full_page_writes":   "off",
		"listen_addresses":   "127.0.0.1",
		"work_mem":           "7MB",
		"server_encoding":    "UTF8",
		"application_name":   `it's a \ test`,
	} {
		if name == "application_name" {
			// The connection sets its own; read the configured one.
			var v string
			if err := conn.QueryRow(t.Context(), "SELECT reset_val FROM pg_settings WHERE name = $1", name).Scan(&v); err != nil {
				t.Fatal(err)
			}
			if v != want {
				t.Errorf("%s = %q, want %q", name, v, want)
			}
			continue
		}
		if got := show(t, conn, name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if dir := show(t, conn, "unix_socket_directories"); !strings.HasPrefix(dir, os.TempDir()) {
		t.Errorf("unix_socket_directories = %q, want a folder in %s", dir, os.TempDir())
	}
	var user string
	if err := conn.QueryRow(t.Context(), "SELECT current_user").Scan(&user); err != nil {
		t.Fatal(err)
	}
	if user != "postgres" {
		t.Errorf("current_user = %q, want postgres", user)
	}
}

func TestDurableAndOverrides(t *testing.T) {
	t.Parallel()
	c := start(t, pgcluster.Options{Durable: true, Settings: map[string]string{"max_connections": "50"}})
	conn := connect(t, c.URL("postgres"))
	for name, want := range map[string]string{"fsync": "on", "synchronous_commit": "on", "max_connections": "50"} {
		if got := show(t, conn, name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}

func TestFixedPort(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	c := start(t, pgcluster.Options{Port: port})
	if c.Port() != port {
		t.Fatalf("Port() = %d, want %d", c.Port(), port)
	}
	conn := connect(t, c.URL("postgres"))
	if got := show(t, conn, "port"); got != fmt.Sprint(port) {
		t.Errorf("server port = %s, want %d", got, port)
	}
}

func TestPortTakenFailsWithServerLog(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	c, err := pgcluster.Start(t.Context(), pgcluster.Options{Port: port})
	if err == nil {
		c.Close()
		t.Fatalf("Start on taken port %d succeeded", port)
	}
	if !strings.Contains(err.Error(), "could not bind") {
		t.Errorf("error lacks the server log's reason: %v", err)
	}
}

// TestPortOfAnotherCluster checks Start is not fooled by another PostgreSQL
// answering on its port before its own server gives up.
func TestPortOfAnotherCluster(t *testing.T) {
	t.Parallel()
	other := start(t, pgcluster.Options{})
	c, err := pgcluster.Start(t.Context(), pgcluster.Options{Port: other.Port()})
	if err == nil {
		c.Close()
		t.Fatalf("Start on port %d, held by another cluster, succeeded", other.Port())
	}
	if !strings.Contains(err.Error(), "could not bind") {
		t.Errorf("error lacks the server log's reason: %v", err)
	}
	connect(t, other.URL("postgres")) // The other cluster is unharmed.
}

func TestBadSettingFailsWithServerLog(t *testing.T) {
	t.Parallel()
	dir := worldDir(t)
	_, err := pgcluster.Start(t.Context(), pgcluster.Options{Dir: dir, Settings: map[string]string{"shared_buffers": "lots"}})
	if err == nil {
		t.Fatal("Start with shared_buffers=lots succeeded")
	}
	if !strings.Contains(err.Error(), `invalid value for parameter "shared_buffers"`) {
		t.Errorf("error lacks the server log's reason: %v", err)
	}
	assertEmpty(t, dir)
}

func TestRejectsBadOptions(t *testing.T) {
	t.Parallel()
	for _, opts := range []pgcluster.Options{
		{Settings: map[string]string{"Port": "5432"}},
		{Settings: map[string]string{"work_mem = 1MB\nfsync": "on"}},
		{Settings: map[string]string{"work_mem": "1MB\nfsync = on"}},
		{Port: 70000},
	} {
		if c, err := pgcluster.Start(t.Context(), opts); err == nil {
			c.Close()
			t.Errorf("Start(%+v) succeeded", opts)
		}
	}
}

func TestCancelledStartLeavesNothing(t *testing.T) {
	t.Parallel()
	dir := worldDir(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: dir}); err == nil {
		c.Close()
		t.Fatal("Start with a cancelled context succeeded")
	}
	assertEmpty(t, dir)
}

// TestRootNeedsEnterableDir checks that, as root, a folder the server's OS
// user cannot enter is refused up front with a clear message.
func TestRootNeedsEnterableDir(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root hands the cluster to another OS user")
	}
	dir := t.TempDir() // mode 0700, owned by root
	_, err := pgcluster.Start(t.Context(), pgcluster.Options{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "cannot enter") {
		t.Fatalf("Start in a 0700 root folder = %v, want a \"cannot enter\" error", err)
	}
	assertEmpty(t, dir)
}

func TestCloseRemovesFolder(t *testing.T) {
	t.Parallel()
	dir := worldDir(t)
	c, err := pgcluster.Start(t.Context(), pgcluster.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.LogFile(), dir) {
		t.Errorf("log file %s not in %s", c.LogFile(), dir)
	}
	if _, err := os.Stat(c.LogFile()); err != nil {
		t.Errorf("server log: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	assertEmpty(t, dir)
	if !portFree(c.Port()) {
		t.Errorf("port %d still taken after Close", c.Port())
	}
	if err := c.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if err := c.Start(t.Context()); !errors.Is(err, pgcluster.ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
	if err := c.Restart(t.Context()); !errors.Is(err, pgcluster.ErrClosed) {
		t.Errorf("Restart after Close = %v, want ErrClosed", err)
	}
}

func TestCreateDropDatabase(t *testing.T) {
	t.Parallel()
	c := start(t, pgcluster.Options{})
	const name = `odd "name"; DROP`
	if err := c.CreateDatabase(t.Context(), "tmpl", ""); err != nil {
		t.Fatal(err)
	}
	tmpl := connect(t, c.URL("tmpl"))
	exec(t, tmpl, "CREATE TABLE from_template (id int)")
	tmpl.Close(t.Context())

	if err := c.CreateDatabase(t.Context(), name, "tmpl"); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, c.URL(name))
	var db string
	var table *string
	if err := conn.QueryRow(t.Context(), "SELECT current_database(), to_regclass('from_template')::text").Scan(&db, &table); err != nil {
		t.Fatal(err)
	}
	if db != name {
		t.Errorf("connected to %q, want %q", db, name)
	}
	if table == nil {
		t.Error("table from the template is missing")
	}
	// DropDatabase disconnects conn.
	if err := c.DropDatabase(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	if err := conn.Ping(t.Context()); err == nil {
		t.Error("session survived DropDatabase")
	}
	if _, err := pgx.Connect(t.Context(), c.URL(name)); err == nil {
		t.Error("connected to dropped database")
	}
	if err := c.DropDatabase(t.Context(), name); err != nil {
		t.Errorf("dropping a missing database: %v", err)
	}
	if err := c.CreateDatabase(t.Context(), "tmpl", ""); err == nil {
		t.Error("creating an existing database succeeded")
	}
}

// TestConcurrentUse runs the methods from several goroutines at once, for
// the race detector, and checks the server ends up running.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	c := start(t, pgcluster.Options{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for range 2 {
				_ = c.URL("postgres")
				_ = c.Port()
				var err error
				switch i % 3 {
				case 0:
					err = c.Restart(t.Context())
				case 1:
					err = c.Stop(t.Context())
				case 2:
					err = c.Start(t.Context())
				}
				if err != nil {
					t.Errorf("goroutine %d: %v", i, err)
				}
			}
		})
	}
	wg.Wait()
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	connect(t, c.URL("postgres"))
}

// worldDir returns an empty folder, removed at the end of the test, that the
// server's OS user may enter when the test runs as root (t.TempDir's may not).
func worldDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgcluster-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left behind: %s", filepath.Join(dir, e.Name()))
	}
}
