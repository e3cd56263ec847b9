package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pgpush/pgpush/db/dbtest"
	"github.com/pgpush/pgpush/push/auth"
	"github.com/pgpush/pgpush/web"
)

// pgpush runs the built binary with env and args and returns its output and
// exit error.
func pgpush(t *testing.T, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

func TestServeRefusesAnUnmigratedDatabaseAndMigrateFixesIt(t *testing.T) {
	t.Parallel()
	dbURL := dbtest.NewDB(t)
	env := []string{"DATABASE_URL=" + dbURL, "PGPUSH_JWT_SECRET=" + nodeSecret, "PGPUSH_ADDR=127.0.0.1:0"}
	pool := dbtest.Pool(t, dbURL)
	mustExec(t, pool, `INSERT INTO notifications (user_id, title) VALUES ('alice', 'one'), ('bob', 'two')`)

	if out, _, err := pgpush(t, env, "migrate", "down"); err != nil || !strings.Contains(out, "rolled back") {
		t.Fatalf("migrate down: %v %s", err, out)
	}
	for {
		out, stderr, err := pgpush(t, env, "migrate", "down")
		if err != nil {
			// The last one drops the table with its rows: only with --yes.
			if !strings.Contains(stderr, "00001_notifications.sql drops the table notifications with its 2 rows") ||
				!strings.Contains(stderr, "--yes") {
				t.Fatalf("migrate down refused without saying why: %s", stderr)
			}
			var n int
			if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM notifications`).Scan(&n); err != nil || n != 2 {
				t.Fatalf("after the refusal the table has %d rows (%v), want its 2", n, err)
			}
			break
		}
		if !strings.Contains(out, "rolled back") {
			t.Fatalf("migrate down: %s", out)
		}
	}
	if out, stderr, err := pgpush(t, env, "migrate", "down", "--yes"); err != nil || !strings.Contains(out, "rolled back migrations/00001") && !strings.Contains(out, "rolled back 00001") {
		t.Fatalf("migrate down --yes: %v %s %s", err, out, stderr)
	}
	if _, stderr, err := pgpush(t, env, "migrate", "down"); err == nil || !strings.Contains(stderr, "nothing to roll back") || strings.Contains(stderr, "no next version") {
		t.Fatalf("migrate down at version 0: %v %q", err, stderr)
	}
	out, _, err := pgpush(t, env, "migrate", "status")
	if err != nil || !strings.Contains(out, "pending") || strings.Contains(out, "applied ") {
		t.Fatalf("status after down: %v %s", err, out)
	}

	_, stderr, err := pgpush(t, env, "serve")
	if err == nil {
		t.Fatal("serve started on an unmigrated database")
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	last := lines[len(lines)-1]
	if !strings.Contains(last, "not migrated") || !strings.Contains(last, "pgpush migrate up") || !strings.Contains(last, "--migrate") {
		t.Fatalf("serve's error does not say to migrate: %q", stderr)
	}

	if out, _, err := pgpush(t, env, "migrate", "up"); err != nil || !strings.Contains(out, "applied") {
		t.Fatalf("migrate up: %v %s", err, out)
	}
	if out, _, err := pgpush(t, env, "migrate", "status"); err != nil || strings.Contains(out, "pending") {
		t.Fatalf("status after up: %v %s", err, out)
	}
}

func TestServeRefusesToRunWithoutTokenConfiguration(t *testing.T) {
	t.Parallel()
	_, stderr, err := pgpush(t, []string{"DATABASE_URL=" + dbtest.NewDB(t), "PGPUSH_ADDR=127.0.0.1:0"}, "serve")
	if err == nil {
		t.Fatal("serve started without PGPUSH_JWT_SECRET or PGPUSH_JWKS_URL")
	}
	if !strings.Contains(stderr, "PGPUSH_JWT_SECRET") || !strings.Contains(stderr, "PGPUSH_JWKS_URL") {
		t.Fatalf("error does not name the settings: %q", stderr)
	}
}

func TestTokenAndVersion(t *testing.T) {
	t.Parallel()
	out, stderr, err := pgpush(t, []string{"PGPUSH_JWT_SECRET=" + nodeSecret}, "token", "--user", "alice", "--ttl", "5m")
	if err != nil {
		t.Fatalf("token: %v %s", err, stderr)
	}
	v, err := auth.New(context.Background(), auth.Config{Secret: []byte(nodeSecret)})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	claims, err := v.Verify(strings.TrimSpace(out))
	if err != nil || claims.Subject != "alice" {
		t.Fatalf("minted token: %v %+v", err, claims)
	}
	if d := time.Until(claims.ExpiresAt); d < 4*time.Minute || d > 6*time.Minute {
		t.Fatalf("token expires in %v, want 5m", d)
	}
	if _, _, err := pgpush(t, nil, "token", "--user", "alice"); err == nil {
		t.Fatal("token without a secret succeeded")
	}

	out, _, err = pgpush(t, nil, "version")
	if err != nil || !strings.HasPrefix(out, "pgpush "+web.Version+"\n") || !strings.Contains(out, "go1.") || !strings.Contains(out, "commit ") {
		t.Fatalf("version: %v %q", err, out)
	}
	if _, stderr, err := pgpush(t, nil, "frobnicate"); err == nil || !strings.Contains(stderr, "unknown command") {
		t.Fatalf("unknown command: %v %q", err, stderr)
	}
}

func TestBenchRunsAndMedians(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--runs", "0"}, {"--runs", "21"}, {"--server-env", "nope"}} {
		if _, _, err := pgpush(t, nil, append([]string{"bench", "burst"}, args...)...); err == nil {
			t.Errorf("bench burst %v: accepted", args)
		}
	}
	out, stderr, err := pgpush(t, nil, "bench", "burst", "--users", "20", "--rows", "2000", "--runs", "2",
		"--server-env", "GOMAXPROCS=1", "--json", "--quiet")
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr)
	}
	var got struct {
		Runs []struct {
			OK        bool     `json:"ok"`
			Delivered int64    `json:"delivered"`
			ServerEnv []string `json:"server_env"`
		} `json:"runs"`
		Median struct {
			OK     bool `json:"ok"`
			Runs   int  `json:"runs"`
			LastMs *struct {
				Median, Min, Max float64
			} `json:"last_ms"`
		} `json:"median"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(got.Runs) != 2 || !got.Median.OK || got.Median.Runs != 2 || got.Median.LastMs == nil ||
		got.Median.LastMs.Min > got.Median.LastMs.Median || got.Median.LastMs.Median > got.Median.LastMs.Max {
		t.Fatalf("unexpected result: %s", out)
	}
	for _, r := range got.Runs {
		if !r.OK || r.Delivered != 2000 || len(r.ServerEnv) != 1 || r.ServerEnv[0] != "GOMAXPROCS=1" {
			t.Fatalf("unexpected run: %+v", r)
		}
	}
	if !strings.Contains(stderr, "medians of 2 runs") {
		t.Errorf("no median summary on stderr: %s", stderr)
	}
}

// hasRoles says whether byRole names every one of roles.
func hasRoles(byRole map[string]float64, roles ...string) bool {
	for _, r := range roles {
		if _, ok := byRole[r]; !ok {
			return false
		}
	}
	return true
}

// TestBenchDurableHistoryAndFloor runs the default (durable) cluster with
// history and the floor beside pgpush, and a --fast one on a fresh table,
// and checks that each result says which it measured.
func TestBenchDurableHistoryAndFloor(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--compare", "nope"},
		{"--history", "-1"},
		{"--compare", "floor", "--body-size", "8000"},
		{"--history", "10", "--url", "http://127.0.0.1:1", "--database-url", "postgres://127.0.0.1/x", "--jwt-secret", nodeSecret},
		{"--fast", "--url", "http://127.0.0.1:1", "--database-url", "postgres://127.0.0.1/x", "--jwt-secret", nodeSecret},
	} {
		if _, _, err := pgpush(t, nil, append([]string{"bench", "steady"}, args...)...); err == nil {
			t.Errorf("bench steady %v: accepted", args)
		}
	}
	type result struct {
		Target           string            `json:"target"`
		OK               bool              `json:"ok"`
		Delivered        int64             `json:"delivered"`
		PostgresDurable  *bool             `json:"postgres_durable"`
		PostgresSettings map[string]string `json:"postgres_settings"`
		Postgres         *struct {
			CPUByRole map[string]float64 `json:"cpu_by_role"`
		} `json:"postgres"`
		Table *struct {
			Name           string `json:"name"`
			HistoryRows    int    `json:"history_rows"`
			Rows           int64  `json:"rows"`
			AnalyzedBefore bool   `json:"analyzed_before"`
		} `json:"table"`
	}

	t.Run("durable with history and floor", func(t *testing.T) {
		t.Parallel()
		out, stderr, err := pgpush(t, nil, "bench", "steady", "--users", "10", "--rate", "100", "--duration", "1s",
			"--history", "500", "--compare", "floor", "--json", "--quiet")
		if err != nil {
			t.Fatalf("bench: %v\n%s", err, stderr)
		}
		var got struct {
			result
			Floor  *result `json:"floor"`
			Ratios *struct {
				LatencyP50  *float64 `json:"latency_p50"`
				PostgresCPU *float64 `json:"postgres_cpu"`
				WALPerRow   *float64 `json:"wal_per_row"`
			} `json:"ratios"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		for _, r := range []*result{&got.result, got.Floor} {
			if r == nil || !r.OK || r.Delivered != 100 || r.PostgresDurable == nil || !*r.PostgresDurable ||
				r.PostgresSettings["fsync"] != "on" || r.PostgresSettings["synchronous_commit"] != "on" || r.PostgresSettings["full_page_writes"] != "on" {
				t.Fatalf("want an OK, durable run with 100 deliveries: %s", out)
			}
			if r.Table == nil || r.Table.HistoryRows != 500 || r.Table.Rows < 500 || !r.Table.AnalyzedBefore {
				t.Errorf("%s table %+v: want 500 history rows, analyzed", r.Target, r.Table)
			}
		}
		// pgpush's server is stopped before the floor's phase: its
		// listening session would read the floor's notifications too.
		if p, f := got.Postgres, got.Floor.Postgres; p == nil || f == nil || !hasRoles(p.CPUByRole, "writers", "pgpush's sessions") ||
			!hasRoles(f.CPUByRole, "writers", "floor's session") || hasRoles(f.CPUByRole, "pgpush's sessions") || hasRoles(p.CPUByRole, "floor's session") {
			t.Errorf("PostgreSQL's CPU by role: pgpush's run %+v, the floor's %+v", p, f)
		}
		if got.Target != "pgpush" || got.Floor.Target != "floor" || got.Table.Name != "notifications" || got.Floor.Table.Name == "notifications" {
			t.Errorf("targets %q on %+v and %q on %+v", got.Target, got.Table, got.Floor.Target, got.Floor.Table)
		}
		if got.Ratios == nil || got.Ratios.LatencyP50 == nil || *got.Ratios.LatencyP50 <= 0 || got.Ratios.PostgresCPU == nil ||
			got.Ratios.WALPerRow == nil || *got.Ratios.WALPerRow <= 0 {
			t.Errorf("ratios %+v", got.Ratios)
		}
		for _, want := range []string{"DURABLE (fsync on, synchronous_commit on, full_page_writes on)", "500 older rows", "compared (steady, durable", "latency p50 ms", "WAL bytes/row", "bytes per row", "pg by role:  "} {
			if !strings.Contains(stderr, want) {
				t.Errorf("summary lacks %q:\n%s", want, stderr)
			}
		}
	})

	t.Run("fast and fresh", func(t *testing.T) {
		t.Parallel()
		out, stderr, err := pgpush(t, nil, "bench", "burst", "--users", "10", "--rows", "200", "--fast", "--json", "--quiet")
		if err != nil {
			t.Fatalf("bench: %v\n%s", err, stderr)
		}
		var got result
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if !got.OK || got.PostgresDurable == nil || *got.PostgresDurable || got.PostgresSettings["fsync"] != "off" {
			t.Errorf("want an OK run, not durable: %s", out)
		}
		if got.Table == nil || got.Table.Rows != 0 || got.Table.AnalyzedBefore || got.Table.HistoryRows != 0 {
			t.Errorf("table %+v: want just migrated, never analyzed", got.Table)
		}
		if !strings.Contains(stderr, "NOT DURABLE (fsync off") || !strings.Contains(stderr, "just migrated: empty, never analyzed") {
			t.Errorf("summary does not say how it ran:\n%s", stderr)
		}
	})
}
