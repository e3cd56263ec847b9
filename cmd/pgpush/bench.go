package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/pgpush/pgpush/bench"
)

const benchUsage = `Usage: pgpush bench steady|burst|idle|fanout [flags]

Scenarios (defaults of the performance issue; pgpush bench SCENARIO -h lists the flags):
  steady   1,000 users, one WebSocket each; 16 writers insert 2,000 rows/s for 20s,
           one row per transaction, on a schedule fixed in advance (open loop)
  burst    the same users; one INSERT … SELECT generate_series of 100,000 rows
  idle     10,000 idle WebSockets: server memory per connection, time to connect;
           then one row each, to prove they are live
  fanout   100 users × 10 WebSockets; steady's inserts

Without --url the run is self-contained: it starts a throwaway PostgreSQL
cluster, migrates it and starts this binary as "serve" on a free loopback
port. The cluster is durable (fsync, synchronous_commit and full_page_writes
on, as users run PostgreSQL) unless --fast; its table is just migrated and
never analyzed unless --history N preloads N older rows (vacuumed and
analyzed). --compare floor then runs the same load against a minimal
forwarder (one LISTEN, the row in the NOTIFY payload, no fetch, no auth) on
a table of its own in the same cluster, and prints both side by side.
With --url it measures a running server (loopback only): --database-url and
--jwt-secret are then required, --server-pid enables CPU and memory readings.

The run fails (exit status 1) if any row is lost or delivered twice.
`

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == bench.FloorCommand {
		return runFloor(ctx, args[1:], stderr)
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fmt.Fprint(stdout, benchUsage)
			return nil
		}
		fmt.Fprint(stderr, benchUsage)
		return errors.New("bench: name a scenario: steady, burst, idle or fanout")
	}
	scenario := bench.Scenario(args[0])
	o, err := bench.Defaults(scenario)
	if err != nil {
		fmt.Fprint(stderr, benchUsage)
		return err
	}
	var asJSON, quiet bool
	var runs int
	var logLevel string
	e := &envFlags{fs: newFlagSet("bench "+string(scenario), stderr)}
	fs := e.fs
	switch scenario {
	case bench.Idle:
		fs.IntVar(&o.Users, "conns", o.Users, "idle connections to open (one user each; 50000 and more use several 127.0.0.x source addresses)")
		fs.DurationVar(&o.Hold, "hold", o.Hold, "how long to hold the connections before reading the server's memory")
	default:
		fs.IntVar(&o.Users, "users", o.Users, "users, each with its own token")
		fs.IntVar(&o.ConnsPerUser, "conns-per-user", o.ConnsPerUser, "WebSockets per user")
		fs.IntVar(&o.BodySize, "body-size", o.BodySize, "bytes in each row's body")
	}
	switch scenario {
	case bench.Steady, bench.Fanout:
		fs.IntVar(&o.Writers, "writers", o.Writers, "database connections inserting rows")
		fs.Float64Var(&o.Rate, "rate", o.Rate, "rows per second, offered in all (open loop)")
		fs.DurationVar(&o.Duration, "duration", o.Duration, "how long to insert")
	case bench.Burst:
		fs.IntVar(&o.Rows, "rows", o.Rows, "rows the one INSERT statement inserts")
	}
	fs.IntVar(&o.DialConcurrency, "dial-concurrency", o.DialConcurrency, "WebSocket handshakes in flight at once")
	fs.IntVar(&o.ConnsPerSourceAddr, "conns-per-source-addr", o.ConnsPerSourceAddr, "connections per 127.0.0.x source address (one pair of addresses has ~28,000 ports)")
	fs.DurationVar(&o.ConnectTimeout, "connect-timeout", o.ConnectTimeout, "time allowed to open every connection")
	fs.DurationVar(&o.DrainTimeout, "drain-timeout", o.DrainTimeout, "after the last commit, how long to wait for deliveries; rows missing then are lost")
	fs.StringVar(&o.URL, "url", "", "a running server's base URL, e.g. http://127.0.0.1:8080 (default: start one)")
	// DATABASE_URL and PGPUSH_JWT_SECRET describe a running server, so they
	// are read only with --url: a self-contained run ignores a developer's
	// environment.
	fs.StringVar(&o.DatabaseURL, "database-url", "", "with --url: the server's database, where the run inserts (DATABASE_URL)")
	fs.StringVar(&o.JWTSecret, "jwt-secret", "", "with --url: the server's HS256 secret, to sign the run's tokens (PGPUSH_JWT_SECRET)")
	fs.StringVar(&o.JWTIssuer, "jwt-issuer", "", "with --url: iss to put in the tokens (PGPUSH_JWT_ISSUER)")
	fs.StringVar(&o.JWTAudience, "jwt-audience", "", "with --url: aud to put in the tokens (PGPUSH_JWT_AUDIENCE)")
	fs.Func("server-env", "KEY=VALUE to add to a self-contained server's environment, e.g. GOMAXPROCS=1 (repeatable)", func(v string) error {
		if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
			return fmt.Errorf("%q is not KEY=VALUE", v)
		}
		o.ServerEnv = append(o.ServerEnv, v)
		return nil
	})
	fs.BoolVar(&o.Fast, "fast", false, "run the self-contained cluster with fsync, synchronous_commit and full_page_writes off (not what users run: flatters commits)")
	fs.IntVar(&o.History, "history", 0, "before measuring, insert this many older rows for the run's users (9 in 10 unread), then vacuum and analyze; 0: a just-migrated, never-analyzed table")
	fs.StringVar(&o.Compare, "compare", "", `"floor": run the same load against a minimal forwarder on the same cluster, and print both side by side`)
	fs.BoolVar(&o.PGProfile, "pg-profile", false, "load pg_stat_statements and auto_explain into the cluster and report the statements that cost PostgreSQL the most")
	fs.IntVar(&o.ServerPID, "server-pid", 0, "with --url: the server's process id, for CPU and memory readings from /proc")
	fs.BoolVar(&o.KeepRows, "keep-rows", false, "with --url: keep the run's rows (default: delete them at the end)")
	fs.BoolVar(&asJSON, "json", false, "print the result as one JSON object on stdout (the summary goes to stderr); with --runs, {\"runs\":[…],\"median\":{…}}")
	fs.IntVar(&runs, "runs", 1, "run the scenario this many times, one after the other, and report the medians")
	fs.BoolVar(&quiet, "quiet", false, "no progress lines")
	fs.StringVar(&logLevel, "log-level", "warn", "log level of the run's own setup messages: debug, info, warn, error")
	if err := e.parse(args[1:]); err != nil {
		return err
	}
	if o.URL != "" {
		fillFromEnv(&o.DatabaseURL, "DATABASE_URL")
		fillFromEnv(&o.JWTSecret, "PGPUSH_JWT_SECRET")
		fillFromEnv(&o.JWTIssuer, "PGPUSH_JWT_ISSUER")
		fillFromEnv(&o.JWTAudience, "PGPUSH_JWT_AUDIENCE")
	}
	logger, err := newLogger(stderr, logLevel, "text")
	if err != nil {
		return err
	}
	o.Logger = logger
	if !quiet {
		o.Progress = stderr
	}

	if runs < 1 || runs > maxRuns {
		return fmt.Errorf("--runs must be from 1 to %d", maxRuns)
	}
	summary := stdout
	if asJSON {
		summary = stderr
	}
	var results []*bench.Result
	var problems []string
	for i := range runs {
		res, err := bench.Run(ctx, o)
		if err != nil {
			return fmt.Errorf("bench %s (run %d of %d): %w", scenario, i+1, runs, err)
		}
		res.WriteSummary(summary)
		results = append(results, res)
		if !res.OK {
			problems = append(problems, res.Problems...)
		}
	}
	var median *bench.Median
	if runs > 1 {
		median = bench.MedianOf(results)
		fmt.Fprintln(summary)
		median.WriteSummary(summary)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		var v any = results[0]
		if runs > 1 {
			v = struct {
				Runs   []*bench.Result `json:"runs"`
				Median *bench.Median   `json:"median"`
			}{results, median}
		}
		if err := enc.Encode(v); err != nil {
			return err
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("bench %s FAILED: %s", scenario, strings.Join(problems, "; "))
	}
	return nil
}

// runFloor runs the floor forwarder of `pgpush bench --compare floor`, which
// starts it as a child process with DATABASE_URL set.
func runFloor(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("bench "+bench.FloorCommand, stderr)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return bench.ServeFloor(ctx, os.Getenv("DATABASE_URL"), *addr)
}

// maxRuns bounds --runs.
const maxRuns = 20

// fillFromEnv sets *p from the environment variable when no flag set it.
func fillFromEnv(p *string, env string) {
	if *p == "" {
		*p = os.Getenv(env)
	}
}
