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
