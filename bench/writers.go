package bench

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// The bench writes like any application does, with plain SQL (SPEC §2);
// these statements are the load, not part of pgpush, so they live here rather
// than among the sqlc queries.
// Each takes the table's name (notifications, or the floor's).
const (
	// insertRow is one row, one transaction.
	insertRow = `INSERT INTO %s (user_id, kind, title, body, data) VALUES ($1, 'bench', $2, $3, $4::jsonb)`
	// insertRows is rows $5 .. $6-1 in one statement; row g goes to user
	// g % $2, as insertRow's do.
	insertRows = `INSERT INTO %s (user_id, kind, title, body, data)
SELECT $1::text || (g %% $2::bigint), 'bench', 'bench row ' || g, $3::text,
       jsonb_build_object('bench_seq', g, 'bench_sent_ns', $4::bigint)
FROM generate_series($5::bigint, $6::bigint - 1) AS g`
	// deleteRun removes a run's rows from a running server's table.
	deleteRun = `DELETE FROM %s WHERE starts_with(user_id, $1)`
)

// sql fills the run's table into one of the statements above.
func (r *run) sql(statement string) string { return fmt.Sprintf(statement, r.table) }

// sendResult is what the writers did.
type sendResult struct {
	committed []int64 // seqs of committed rows, in no order
	sentAt    []int64 // run clock just before each committed row's INSERT
	lag       []int64 // per insert: ns between its scheduled and actual send
	insert    []int64 // per insert: ns until the INSERT (and its commit) returned
	start     int64   // run clock at the first scheduled send
	end       int64   // run clock when the last insert returned
	stmt      int64   // burst: ns the statement took
	// stoppedShort is true when the writers gave up on the rest of the
	// schedule, having fallen too far behind it.
	stoppedShort bool
	err          error
}

// sendSteady inserts r.rows rows, one per transaction, from o.Writers
// connections. Row seq is due at start + seq/rate: the schedule is fixed in
// advance, and a writer that falls behind sends its next row at once, so a
// slow insert does not lower the offered rate (open loop). Writers take the
// next due row from a shared counter, so one slow writer delays only its own
// row. Writers that have fallen so far behind that DrainTimeout has passed
// since the schedule's end start no more rows: the run then reports the
// rows it could commit, and that it stopped short.
func (r *run) sendSteady(ctx context.Context) sendResult {
	o := &r.o
	conns, err := r.connectWriters(ctx, o.Writers)
	if err != nil {
		return sendResult{err: err}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	total := int64(r.rows)
	insert := r.sql(insertRow)
	interval := float64(time.Second) / o.Rate
	perWriter := int(total)/o.Writers + 1
	committed := make([][]int64, o.Writers)
	sentAt := make([][]int64, o.Writers)
	lags := make([][]int64, o.Writers)
	inserts := make([][]int64, o.Writers)
	var next atomic.Int64
	var stopped atomic.Bool
	var errOnce sync.Once
	var firstErr error
	start := r.clock() + int64(10*time.Millisecond) // let every writer reach its first wait
	stopAt := start + int64(o.Duration+o.DrainTimeout)
	var wg sync.WaitGroup
	for w, conn := range conns {
		committed[w] = make([]int64, 0, perWriter)
		sentAt[w] = make([]int64, 0, perWriter)
		lags[w] = make([]int64, 0, perWriter)
		inserts[w] = make([]int64, 0, perWriter)
		wg.Go(func() {
			timer := time.NewTimer(time.Hour)
			defer timer.Stop()
			data := make([]byte, 0, 64)
			for {
				seq := next.Add(1) - 1
				if seq >= total {
					return
				}
				due := start + int64(float64(seq)*interval)
				if r.clock() > stopAt {
					stopped.Store(true)
					return
				}
				if wait := due - r.clock(); wait > 0 {
					timer.Reset(time.Duration(wait))
					select {
					case <-timer.C:
					case <-ctx.Done():
						return
					}
				}
				sent := r.clock()
				data = appendData(data[:0], seq, sent)
				_, err := conn.Exec(ctx, insert, r.userIDs[seq%int64(o.Users)], r.title(seq), r.body, string(data))
				if err != nil {
					errOnce.Do(func() {
						firstErr = fmt.Errorf("insert row %d: %w", seq, err)
						cancel()
					})
					return
				}
				inserts[w] = append(inserts[w], r.clock()-sent)
				lags[w] = append(lags[w], sent-due)
				committed[w] = append(committed[w], seq)
				sentAt[w] = append(sentAt[w], sent)
				r.sent.Add(1)
			}
		})
	}
	wg.Wait()
	res := sendResult{start: start, end: r.clock(), err: firstErr, stoppedShort: stopped.Load()}
	for w := range conns {
		res.committed = append(res.committed, committed[w]...)
		res.sentAt = append(res.sentAt, sentAt[w]...)
		res.lag = append(res.lag, lags[w]...)
		res.insert = append(res.insert, inserts[w]...)
	}
	return res
}

// sendBurst inserts r.rows rows with one statement. Every row carries the
// moment just before the statement was sent.
func (r *run) sendBurst(ctx context.Context) sendResult {
	conns, err := r.connectWriters(ctx, 1)
	if err != nil {
		return sendResult{err: err}
	}
	sent := r.clock()
	tag, err := conns[0].Exec(ctx, r.sql(insertRows), r.userPrefix, r.o.Users, r.body, sent, 0, r.rows)
	end := r.clock()
	res := sendResult{start: sent, end: end, stmt: end - sent}
	if err != nil {
		res.err = fmt.Errorf("insert %d rows: %w", r.rows, err)
		return res
	}
	if tag.RowsAffected() != int64(r.rows) {
		res.err = fmt.Errorf("insert %d rows: %d inserted", r.rows, tag.RowsAffected())
		return res
	}
	res.committed = make([]int64, r.rows)
	res.sentAt = make([]int64, r.rows)
	for i := range res.committed {
		res.committed[i] = int64(i)
		res.sentAt[i] = sent
	}
	r.sent.Store(int64(r.rows))
	return res
}

// writerApplicationName names the writers' sessions in pg_stat_activity.
const writerApplicationName = "pgpush-bench"

// connectWriters opens n writers' sessions. They stay open until
// closeWriters, so that the phase's last reading still finds their backends
// and can name their CPU.
func (r *run) connectWriters(ctx context.Context, n int) ([]*pgx.Conn, error) {
	conns := make([]*pgx.Conn, 0, n)
	defer func() { r.writers = append(r.writers, conns...) }()
	for range n {
		cfg, err := pgx.ParseConfig(r.t.databaseURL)
		if err != nil {
			return conns, fmt.Errorf("database url: %w", err)
		}
		cfg.RuntimeParams["application_name"] = writerApplicationName
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return conns, fmt.Errorf("connect a writer: %w", err)
		}
		conns = append(conns, conn)
		// Prepare now, so the first timed insert does not pay for it.
		if _, err := conn.Prepare(ctx, r.sql(insertRow), r.sql(insertRow)); err != nil {
			return conns, fmt.Errorf("prepare insert: %w", err)
		}
		if err := r.warmWriter(ctx, conn); err != nil {
			return conns, err
		}
	}
	return conns, nil
}

// warmWriter inserts one row on conn and rolls it back, as an application's
// pooled connection has long since done: a session's first insert loads the
// table's and its triggers' catalog entries and compiles the trigger
// functions (15–30 ms here), and sixteen new sessions doing that at once
// would put the writers behind their schedule before the first measured row.
// Nothing is committed, so nothing is sent.
func (r *run) warmWriter(ctx context.Context, conn *pgx.Conn) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("warm a writer: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // the rollback below reports
	if _, err := tx.Exec(ctx, r.sql(insertRow), r.userIDs[0], "bench warm-up", r.body, "{}"); err != nil {
		return fmt.Errorf("warm a writer: %w", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		return fmt.Errorf("warm a writer: %w", err)
	}
	return nil
}

// closeWriters closes the sessions connectWriters opened.
func (r *run) closeWriters() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, c := range r.writers {
		c.Close(ctx)
	}
	r.writers = nil
}

// deleteRows removes the run's rows from a running server's table.
func (r *run) deleteRows(ctx context.Context) (int64, error) {
	tag, err := r.t.pool.Exec(ctx, r.sql(deleteRun), r.userPrefix)
	if err != nil {
		return 0, fmt.Errorf("delete the run's rows: %w", err)
	}
	return tag.RowsAffected(), nil
}

// appendData appends a row's data column.
func appendData(b []byte, seq, sent int64) []byte {
	b = append(b, `{"bench_seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"bench_sent_ns":`...)
	b = strconv.AppendInt(b, sent, 10)
	return append(b, '}')
}

func (r *run) title(seq int64) string {
	return "bench row " + strconv.FormatInt(seq, 10)
}

// makeBody returns n bytes of plain text: no quotes or escapes, so the
// frames are as cheap to scan as the bench assumes.
func makeBody(n int) string {
	const text = "The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. "
	b := make([]byte, n)
	for i := range b {
		b[i] = text[i%len(text)]
	}
	return string(b)
}
