package bench

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// historySQL inserts $4 older rows into a table (%s) for users $1 || n, n
// < $2, with bodies $3: row g goes to user g % $2, was created g/$4 of the
// way through the last 90 days (so ids and created_at rise together), and
// one in ten was read an hour after.
const historySQL = `INSERT INTO %s (user_id, kind, title, body, data, created_at, read_at)
SELECT $1::text || (h.g %% $2::bigint), 'bench-history', 'history row ' || h.g, $3::text, '{}', h.at,
       CASE WHEN h.g %% 10 = 0 THEN least(now(), h.at + interval '1 hour') END
FROM (SELECT g, now() - interval '90 days' * (1 - g::float8 / $4::bigint) AS at
      FROM generate_series(0, $4::bigint - 1) AS g) h`

// historyTimeout bounds the load of a run's history.
const historyTimeout = 30 * time.Minute

// loadHistory inserts o.History older rows for the run's users into table
// with its triggers off (they are the past: nobody is to be told of them),
// then vacuums and analyzes it, as autovacuum long since has on a table
// with months of rows, and checkpoints, so that the load's writes are not
// flushed while the run measures.
func loadHistory(ctx context.Context, pool *pgxpool.Pool, table, userPrefix string, o *Options) error {
	if o.History == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, historyTimeout)
	defer cancel()
	start := time.Now()
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, fmt.Sprintf(historySQL, table), userPrefix, o.Users, makeBody(o.BodySize), o.History)
		return err
	})
	if err != nil {
		return fmt.Errorf("insert %d history rows into %s: %w", o.History, table, err)
	}
	if table == "notifications" {
		// The triggers were off: count the history's unread rows, as a
		// deployment that had them all along would have.
		if _, err := pool.Exec(ctx, "SELECT notifications_unread_recount()"); err != nil {
			return fmt.Errorf("count the history's unread rows: %w", err)
		}
	}
	if _, err := pool.Exec(ctx, "VACUUM (ANALYZE) "+table); err != nil {
		return fmt.Errorf("vacuum %s: %w", table, err)
	}
	if _, err := pool.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if o.Logger != nil {
		o.Logger.Info("history loaded", "table", table, "rows", o.History, "elapsed", time.Since(start))
	}
	return nil
}

// TableState is what PostgreSQL knew of the table the run wrote to, before
// and after the measured phase.
type TableState struct {
	Name string `json:"name"`
	// HistoryRows is how many older rows the run inserted before it
	// measured (--history).
	HistoryRows int `json:"history_rows"`
	// Rows is the table's live rows before the measured phase.
	Rows int64 `json:"rows"`
	// AnalyzedBefore is false for a table that had never been analyzed
	// (or vacuumed) when the phase began: the planner then guesses its size.
	AnalyzedBefore bool `json:"analyzed_before"`
	// AnalyzedDuring is true when an ANALYZE (autovacuum's, as a rule) of
	// the table finished during the phase: plans from then on saw its
	// statistics, so the phase measured a fresh table only in part.
	AnalyzedDuring bool `json:"analyzed_during"`
	// VacuumedDuring is true when a VACUUM of the table finished during
	// the phase.
	VacuumedDuring bool `json:"vacuumed_during"`
}

// tableCounts is a reading of the statistics of one table.
type tableCounts struct {
	rows      int64
	analyzed  bool // reltuples known: ANALYZE or VACUUM has run
	analyzes  int64
	vacuums   int64
	available bool
}

func readTable(ctx context.Context, pool *pgxpool.Pool, table string) tableCounts {
	var c tableCounts
	err := pool.QueryRow(ctx, `
SELECT s.n_live_tup, c.reltuples >= 0, s.analyze_count + s.autoanalyze_count, s.vacuum_count + s.autovacuum_count
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
WHERE s.relid = to_regclass($1)`, table).Scan(&c.rows, &c.analyzed, &c.analyzes, &c.vacuums)
	c.available = err == nil
	return c
}

func tableStateOf(name string, history int, before, after tableCounts) *TableState {
	if !before.available || !after.available {
		return nil
	}
	return &TableState{
		Name:           name,
		HistoryRows:    history,
		Rows:           before.rows,
		AnalyzedBefore: before.analyzed,
		AnalyzedDuring: after.analyzes > before.analyzes,
		VacuumedDuring: after.vacuums > before.vacuums,
	}
}

// describe says what state the table was in, in a few words.
func (s *TableState) describe() string {
	var b strings.Builder
	switch {
	case s.HistoryRows > 0:
		fmt.Fprintf(&b, "%s with %d older rows for the run's users (9 in 10 unread), vacuumed and analyzed", s.Name, s.HistoryRows)
	case !s.AnalyzedBefore && s.Rows == 0:
		fmt.Fprintf(&b, "%s just migrated: empty, never analyzed", s.Name)
	case !s.AnalyzedBefore:
		fmt.Fprintf(&b, "%s with %d rows, never analyzed", s.Name, s.Rows)
	default:
		fmt.Fprintf(&b, "%s with %d rows, analyzed", s.Name, s.Rows)
	}
	if s.AnalyzedDuring {
		b.WriteString("; ANALYZED DURING THE RUN (plans changed part way)")
	}
	if s.VacuumedDuring {
		b.WriteString("; vacuumed during the run")
	}
	return b.String()
}

// Statement is one statement's share of PostgreSQL's time over a measured
// phase, from pg_stat_statements (--pg-profile).
type Statement struct {
	Query      string  `json:"query"`
	Calls      int64   `json:"calls"`
	TotalMs    float64 `json:"total_ms"`
	MeanMs     float64 `json:"mean_ms"`
	PlanMs     float64 `json:"plan_ms"`
	Rows       int64   `json:"rows"`
	SharedBlks int64   `json:"shared_blks"` // hit + read
	WALBytes   int64   `json:"wal_bytes"`
	TopLevel   bool    `json:"top_level"`
}

// topStatements is how many statements a profile reports.
const topStatements = 10

func resetStatements(ctx context.Context, pool *pgxpool.Pool) error {
	_, err := pool.Exec(ctx, "SELECT pg_stat_statements_reset()")
	return err
}

func readStatements(ctx context.Context, pool *pgxpool.Pool) ([]Statement, error) {
	rows, err := pool.Query(ctx, `
SELECT left(regexp_replace(query, '\s+', ' ', 'g'), 300), calls, total_exec_time, mean_exec_time, total_plan_time,
       rows, shared_blks_hit + shared_blks_read, wal_bytes::bigint, toplevel
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND calls > 0 AND query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE '/* pgpush-bench */%'
ORDER BY total_exec_time + total_plan_time DESC
LIMIT $1`, topStatements)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Statement, error) {
		var s Statement
		err := r.Scan(&s.Query, &s.Calls, &s.TotalMs, &s.MeanMs, &s.PlanMs, &s.Rows, &s.SharedBlks, &s.WALBytes, &s.TopLevel)
		return s, err
	})
}

// SlowPlan is a plan auto_explain logged over a measured phase
// (--pg-profile): a statement that took at least 5 ms, with its plan.
type SlowPlan struct {
	Ms   float64 `json:"ms"`
	Plan string  `json:"plan"`
}

// slowPlansKept is how many plans a profile keeps: the slowest of each
// distinct query text.
const slowPlansKept = 4

// logSize returns the length of the file at path, or 0.
func logSize(path string) int64 {
	if st, err := os.Stat(path); err == nil {
		return st.Size()
	}
	return 0
}

// slowPlans reads the plans auto_explain wrote to the server log at path
// after offset, and returns the slowest of each query, slowest first.
func slowPlans(path string, offset int64) []SlowPlan {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil
	}
	byQuery := map[string]SlowPlan{}
	var cur *SlowPlan
	var query string
	flush := func() {
		if cur != nil {
			if p, ok := byQuery[query]; !ok || cur.Ms > p.Ms {
				byQuery[query] = *cur
			}
		}
		cur = nil
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "\t") || strings.HasPrefix(line, "  ") {
			if cur != nil {
				if q, ok := strings.CutPrefix(strings.TrimSpace(line), "Query Text: "); ok {
					query = q
				}
				cur.Plan += strings.TrimPrefix(line, "\t") + "\n"
			}
			continue
		}
		flush()
		_, rest, ok := strings.Cut(line, "LOG:  duration: ")
		if !ok || !strings.HasSuffix(rest, " plan:") {
			continue
		}
		ms, err := strconv.ParseFloat(strings.TrimSuffix(rest, " ms  plan:"), 64)
		if err != nil {
			continue
		}
		cur, query = &SlowPlan{Ms: ms}, ""
	}
	flush()
	out := slices.Collect(maps.Values(byQuery))
	slices.SortFunc(out, func(a, b SlowPlan) int { return cmp.Compare(b.Ms, a.Ms) })
	return out[:min(len(out), slowPlansKept)]
}

// WaitEvent is the share of samples in which PostgreSQL's active client
// sessions were in one state (--pg-profile): "CPU" when running, else what
// they waited for, such as "Lock: object" or "IO: WALSync".
type WaitEvent struct {
	Event   string  `json:"event"`
	Percent float64 `json:"percent"`
	// Sessions is the mean number of sessions in that state.
	Sessions float64 `json:"sessions"`
}

// waitSampleInterval is how often a profile samples pg_stat_activity.
const waitSampleInterval = 10 * time.Millisecond

// sampleWaits samples what the database's active sessions (other than its
// own) are doing until stop is closed, and returns the result.
func sampleWaits(ctx context.Context, pool *pgxpool.Pool, stop <-chan struct{}) []WaitEvent {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil
	}
	defer conn.Release()
	counts := map[string]int{}
	samples := 0
	tick := time.NewTicker(waitSampleInterval)
	defer tick.Stop()
	for {
		select {
		case <-stop:
		case <-ctx.Done():
		case <-tick.C:
			rows, err := conn.Query(ctx, `/* pgpush-bench */
SELECT coalesce(wait_event_type || ': ' || wait_event, 'CPU')
FROM pg_stat_activity
WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND datname = current_database()`)
			if err != nil {
				continue
			}
			events, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				continue
			}
			samples++
			for _, e := range events {
				counts[e]++
			}
			continue
		}
		break
	}
	if samples == 0 {
		return nil
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	var out []WaitEvent
	for e, n := range counts {
		out = append(out, WaitEvent{Event: e, Percent: math.Round(1000*float64(n)/float64(total)) / 10,
			Sessions: math.Round(100*float64(n)/float64(samples)) / 100})
	}
	slices.SortFunc(out, func(a, b WaitEvent) int { return cmp.Compare(b.Percent, a.Percent) })
	return out
}
