package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// openPool connects to url with pgpush's session settings: every statement
// has a timeout and no session may sit idle inside a transaction, so pgpush
// can never hold locks or snapshots open while it writes to a client.
func openPool(ctx context.Context, url string, maxConns int) (*pgxpool.Pool, error) {
	if url == "" {
		return nil, errors.New("DATABASE_URL is not set (or pass --database-url)")
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's message may quote the URL, password included: don't repeat it.
		return nil, errors.New("DATABASE_URL is not a valid PostgreSQL URL or keyword string")
	}
	rp := cfg.ConnConfig.RuntimeParams
	if rp["application_name"] == "" {
		rp["application_name"] = "pgpush"
	}
	if rp["statement_timeout"] == "" {
		rp["statement_timeout"] = "15000"
	}
	if rp["idle_in_transaction_session_timeout"] == "" {
		rp["idle_in_transaction_session_timeout"] = "30000"
	}
	// pgpush's queries take arrays and keys whose best plan never changes;
	// planning them afresh for every batch cost a seventh of the
	// database's CPU in the steady benchmark.
	if rp["plan_cache_mode"] == "" {
		rp["plan_cache_mode"] = "force_generic_plan"
	}
	// Every query pgpush runs reads rows by key through an index (the plan
	// test, db/plan_test.go, holds it to that), but a generic plan is made
	// once per session from the statistics of the moment: one made while a
	// table was small, or never analyzed, scans it whole for as long as the
	// session lives, however much it grows (the unread counts' ledger, a
	// queue of a second's rows and a minute's dead ones, was read that way
	// by every batch). A sequential scan is then only what a query without
	// an index path gets (the fold of that ledger, which reads it whole).
	if rp["enable_seqscan"] == "" {
		rp["enable_seqscan"] = "off"
	}
	// With sequential scans off, a query over a one-row table (the horizons)
	// has a nominal cost of 10^10, far above jit_above_cost: the JIT would
	// then compile every execution for ~200 ms. pgpush's queries take well
	// under a millisecond; none gains from JIT.
	if rp["jit"] == "" {
		rp["jit"] = "off"
	}
	if maxConns > 0 {
		cfg.MaxConns = int32(maxConns)
	}
	cfg.MaxConnIdleTime = 5 * time.Minute
	cfg.HealthCheckPeriod = 15 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database does not answer at %s: %w", redactedTarget(cfg), err)
	}
	return pool, nil
}

func redactedTarget(cfg *pgxpool.Config) string {
	c := cfg.ConnConfig
	return fmt.Sprintf("host=%s port=%d dbname=%s user=%s", c.Host, c.Port, c.Database, c.User)
}
