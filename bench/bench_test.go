package bench_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/pgpush/pgpush/bench"
	"github.com/pgpush/pgpush/db/pgcluster"
	"github.com/pgpush/pgpush/migrations"
)

// serverBinary is the pgpush binary the runs start, built once by TestMain.
var serverBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pgpush-bench-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// build compiles ./cmd/pgpush from the module root into dir.
func build(dir string) error {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	serverBinary = filepath.Join(dir, "pgpush")
	cmd := exec.Command("go", "build", "-o", serverBinary, "./cmd/pgpush")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/pgpush: %w\n%s", err, out)
	}
	return nil
}

// options returns scenario's defaults for a self-contained run of the
// test binary.
func options(t *testing.T, s bench.Scenario) bench.Options {
	t.Helper()
	o, err := bench.Defaults(s)
	if err != nil {
		t.Fatal(err)
	}
	o.ServerBinary = serverBinary
	// These tests check what a run counts, not how fast commits are;
	// cmd/pgpush's tests run the durable default.
	o.Fast = true
	o.ProgressInterval = 0
	o.DrainTimeout = 5 * time.Second
	return o
}

// check runs o and asserts that every row arrived exactly once.
func check(t *testing.T, o bench.Options) *bench.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Second)
	defer cancel()
	res, err := bench.Run(ctx, o)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	var summary strings.Builder
	res.WriteSummary(&summary)
	t.Logf("\n%s", summary.String())
	if !res.OK {
		t.Errorf("not OK: %v", res.Problems)
	}
	if res.Rows == 0 || res.Expected != res.Rows*int64(o.ConnsPerUser) {
		t.Errorf("rows %d, expected deliveries %d; want %d rows × %d connections", res.Rows, res.Expected, res.Rows, o.ConnsPerUser)
	}
	if res.Delivered != res.Expected || res.Lost != 0 || res.Duplicated != 0 || res.Unexpected != 0 {
		t.Errorf("delivered %d of %d, lost %d, duplicated %d, unexpected %d",
			res.Delivered, res.Expected, res.Lost, res.Duplicated, res.Unexpected)
	}
	if res.Connections != o.Users*o.ConnsPerUser || res.ConnectSeconds <= 0 {
		t.Errorf("connections %d in %fs; want %d", res.Connections, res.ConnectSeconds, o.Users*o.ConnsPerUser)
	}
	l := res.LatencyMs
	if l == nil || l.Samples != int(res.Delivered) || !(l.Min > 0 && l.Min <= l.P50 && l.P50 <= l.P90 &&
		l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
		t.Errorf("latency %+v: want %d positive, ordered samples", l, res.Delivered)
	}
	// Every sample of a steady phase is in the second its row was sent.
	inSeconds, last := 0, -1
	for _, s := range res.LatencyBySecond {
		if s.Second <= last || s.Samples <= 0 || s.P50 > s.P99 {
			t.Errorf("latency by second: %+v after second %d", s, last)
		}
		inSeconds, last = inSeconds+s.Samples, s.Second
	}
	if steady := o.Scenario == bench.Steady || o.Scenario == bench.Fanout; steady && inSeconds != int(res.Delivered) ||
		!steady && res.LatencyBySecond != nil {
		t.Errorf("%s: %d samples by second of %d delivered", o.Scenario, inSeconds, res.Delivered)
	}
	if res.Server == nil || res.Server.CPUSeconds < 0 || res.Server.PeakRSSMiB <= 0 {
		t.Errorf("server readings %+v", res.Server)
	}
	// An idle run's readings cover the hold, which need not write WAL.
	if res.Postgres == nil || res.Postgres.CPUSeconds < 0 || res.Postgres.WALBytes == nil ||
		*res.Postgres.WALBytes < 0 || (o.Scenario != bench.Idle && *res.Postgres.WALBytes == 0) {
		t.Errorf("postgres readings %+v: want CPU and the WAL the rows wrote", res.Postgres)
	}
	if res.Postgres != nil {
		var sum float64
		for _, cpu := range res.Postgres.CPUByRole {
			sum += cpu
		}
		if math.Abs(sum-res.Postgres.CPUSeconds) > 1e-6 {
			t.Errorf("postgres CPU by role %v adds up to %.3f s, not %.3f", res.Postgres.CPUByRole, sum, res.Postgres.CPUSeconds)
		}
		// The writers connect, warm up and insert within the phase.
		if o.Scenario != bench.Idle && res.Postgres.CPUByRole["writers"] <= 0 {
			t.Errorf("postgres CPU by role %v: no writers' CPU", res.Postgres.CPUByRole)
		}
	}
	return res
}

func TestSteady(t *testing.T) {
	t.Parallel()
	o := options(t, bench.Steady)
	o.Users, o.Rate, o.Duration = 20, 200, time.Second
	res := check(t, o)
	if res.Rows != 200 || res.OfferedRate == nil || res.AchievedRate <= 0 || res.ScheduleLagMs == nil {
		t.Errorf("rows %d, offered %v, achieved %f, lag %v", res.Rows, res.OfferedRate, res.AchievedRate, res.ScheduleLagMs)
	}
	if res.Mode != "self-contained" || res.PostgresDurable == nil || *res.PostgresDurable || res.PostgresSettings["fsync"] != "off" {
		t.Errorf("mode %q, durable %v, settings %v: want a self-contained, --fast run", res.Mode, res.PostgresDurable, res.PostgresSettings)
	}
	if tb := res.Table; tb == nil || tb.Name != "notifications" || tb.AnalyzedBefore || tb.Rows != 0 || tb.HistoryRows != 0 {
		t.Errorf("table %+v: want notifications, just migrated", tb)
	}
}

func TestBurst(t *testing.T) {
	t.Parallel()
	o := options(t, bench.Burst)
	o.Users, o.Rows = 20, 2000
	res := check(t, o)
	if b := res.Burst; b == nil || b.StatementMs <= 0 || b.LastMs < b.FirstMs || b.FirstMs <= 0 {
		t.Errorf("burst %+v", b)
	}
}

func TestIdle(t *testing.T) {
	t.Parallel()
	o := options(t, bench.Idle)
	o.Users, o.Hold = 100, 200*time.Millisecond
	o.ConnsPerSourceAddr = 40 // 127.0.0.1, .2 and .3, as 50,000 connections would
	res := check(t, o)
	if res.RSSPerConnKiB == nil {
		t.Error("no RSS per connection")
	}
	if res.Parameters.SourceAddrs != 3 {
		t.Errorf("%d source addresses; want 3", res.Parameters.SourceAddrs)
	}
}

func TestFanout(t *testing.T) {
	t.Parallel()
	o := options(t, bench.Fanout)
	o.Users, o.ConnsPerUser, o.Rate, o.Duration = 5, 3, 200, time.Second
	res := check(t, o)
	if res.FanoutSpreadMs == nil || res.FanoutSpreadMs.Samples != 200 {
		t.Errorf("fan-out spread %+v: want one sample per row", res.FanoutSpreadMs)
	}
}

// TestExternal measures a server the test started, as an operator would
// point bench at theirs, and checks that the run's rows are removed after.
func TestExternal(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	dbURL := c.URL("postgres")
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := migrations.Up(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
	secret := strings.Repeat("s", 32)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	srv := exec.Command(serverBinary, "serve", "--addr", addr)
	srv.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "PGPUSH_JWT_SECRET="+secret)
	srv.Stderr = io.Discard
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Process.Signal(syscall.SIGTERM)
		srv.Wait()
	})

	o := options(t, bench.Steady)
	o.ServerBinary, o.Fast = "", false
	o.Users, o.Rate, o.Duration = 10, 100, time.Second
	o.URL, o.DatabaseURL, o.JWTSecret, o.ServerPID = "http://"+addr, dbURL, secret, srv.Process.Pid
	res := check(t, o)
	// pgcluster's default cluster is not durable; the run reads that from
	// the server.
	if res.Mode != "external" || res.PostgresDurable == nil || *res.PostgresDurable || res.ServerPID != srv.Process.Pid {
		t.Errorf("mode %q, durable %v, server pid %d", res.Mode, res.PostgresDurable, res.ServerPID)
	}
	if res.RowsDeleted != res.Rows {
		t.Errorf("deleted %d rows; want the run's %d", res.RowsDeleted, res.Rows)
	}
	var left int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM notifications").Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d rows left in the table", left)
	}
}

func TestValidateRefusesOtherHosts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ url, db string }{
		{"http://192.0.2.1:8080", "postgres://127.0.0.1/x"},
		{"http://127.0.0.1:8080", "postgres://db.example.com/x"},
		{"https://localhost:8080", "postgres://127.0.0.1/x"},
	} {
		o, _ := bench.Defaults(bench.Steady)
		o.URL, o.DatabaseURL, o.JWTSecret = tc.url, tc.db, strings.Repeat("s", 32)
		if err := o.Validate(); err == nil {
			t.Errorf("url %s, database %s: accepted", tc.url, tc.db)
		}
	}
	o, _ := bench.Defaults(bench.Steady)
	o.URL, o.DatabaseURL, o.JWTSecret = "http://[::1]:8080", "host=/tmp dbname=x", strings.Repeat("s", 32)
	if err := o.Validate(); err != nil {
		t.Errorf("loopback and Unix socket refused: %v", err)
	}
	o, _ = bench.Defaults(bench.Steady)
	o.DatabaseURL = "postgres://127.0.0.1/x"
	if err := o.Validate(); err == nil {
		t.Error("--database-url without --url accepted")
	}
	o, _ = bench.Defaults(bench.Steady)
	o.URL, o.DatabaseURL, o.JWTSecret = "http://127.0.0.1:8080", "postgres://127.0.0.1/x", strings.Repeat("s", 32)
	o.ServerEnv = []string{"GOMAXPROCS=1"}
	if err := o.Validate(); err == nil {
		t.Error("--server-env with --url accepted")
	}
	if _, err := bench.Defaults("nope"); err == nil {
		t.Error("unknown scenario accepted")
	}
}

func TestMedianOf(t *testing.T) {
	t.Parallel()
	kib := 15.0
	results := []*bench.Result{
		{Scenario: bench.Idle, OK: true, Delivered: 10, LatencyMs: &bench.Latency{P50: 3}, Server: &bench.ServerStats{CPUSeconds: 7}},
		{Scenario: bench.Idle, OK: false, Delivered: 9, LatencyMs: &bench.Latency{P50: 1}, RSSPerConnKiB: &kib},
		{Scenario: bench.Idle, OK: true, Delivered: 10, LatencyMs: &bench.Latency{P50: 2}, Server: &bench.ServerStats{CPUSeconds: 5}},
	}
	m := bench.MedianOf(results)
	if m.Runs != 3 || m.OK || m.Scenario != bench.Idle {
		t.Errorf("runs %d, ok %v, scenario %s", m.Runs, m.OK, m.Scenario)
	}
	for name, tc := range map[string]struct {
		got  *bench.Spread
		want bench.Spread
	}{
		"delivered":  {m.Delivered, bench.Spread{Median: 10, Min: 9, Max: 10}},
		"p50":        {m.LatencyP50, bench.Spread{Median: 2, Min: 1, Max: 3}},
		"server cpu": {m.ServerCPUSeconds, bench.Spread{Median: 6, Min: 5, Max: 7}}, // two runs: their mean
		"kib":        {m.RSSPerConnKiB, bench.Spread{Median: 15, Min: 15, Max: 15}},
	} {
		if tc.got == nil || *tc.got != tc.want {
			t.Errorf("%s: got %+v, want %+v", name, tc.got, tc.want)
		}
	}
	if m.LastMs != nil || m.PostgresCPUSeconds != nil {
		t.Errorf("figures no run has: last %+v, postgres %+v", m.LastMs, m.PostgresCPUSeconds)
	}
	if bench.MedianOf(nil) != nil {
		t.Error("no runs: not nil")
	}
}
