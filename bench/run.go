package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgpush/pgpush/push/auth"
)

const (
	// tokenTTL is the lifetime of the run's tokens; a run is bounded well
	// below it.
	tokenTTL = 6 * time.Hour
	// burstTimeout bounds a one-statement insert.
	burstTimeout = 10 * time.Minute
	// deleteTimeout bounds the removal of a run's rows from a running
	// server's table.
	deleteTimeout = 5 * time.Minute
)

// run is one execution of a scenario.
type run struct {
	o   Options
	t   *target
	log *slog.Logger

	id         string
	userPrefix string   // "bench-<id>-"
	userIDs    []string // userPrefix + n
	body       string
	rows       int // rows the run means to insert
	// rowsPerUser is the length of every client's latency slice.
	rowsPerUser int
	base        time.Time // zero of the run clock

	// target is targetPgpush or targetFloor; table is the table its
	// writers insert into.
	target string
	table  string
	// logOffset is the server log's length when the measured phase began.
	logOffset int64
	// stopWaits ends the sampling of wait events and returns them
	// (--pg-profile).
	stopWaits func() []WaitEvent
	// writers are the writers' sessions, open until the phase's end.
	writers []*pgx.Conn

	fleet *fleet
	send  sendResult
	// shown is fleet for the progress goroutine, which starts before it
	// exists.
	shown atomic.Pointer[fleet]
	sent  atomic.Int64
	phase atomic.Pointer[string]
}

// clock is the run clock: nanoseconds since base, on the monotonic clock.
func (r *run) clock() int64 { return int64(time.Since(r.base)) }

func (r *run) mint(user string) (string, error) {
	return auth.Mint(r.t.secret, user, tokenTTL, r.t.issuer, r.t.audience)
}

func (r *run) setPhase(p string) { r.phase.Store(&p) }

// Run executes the scenario of o and returns its measurements. An error
// means the run could not measure (setup failed, a connection or an insert
// failed); a run that measured but lost or duplicated rows returns a Result
// whose OK is false, with the reasons in Problems. With o.Compare, the
// Result's Floor is the baseline's, measured after pgpush on the same
// cluster, and a failure of either fails both.
func Run(ctx context.Context, o Options) (*Result, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// Each connection takes a descriptor here and one in the server; leave
	// room for the database connections and the rest.
	if err := raiseFileLimit(uint64(o.conns()) + fileHeadroom); err != nil {
		return nil, err
	}
	begin := time.Now()
	r := newRun(o, logger, targetPgpush)
	stopProgress := r.startProgress()
	defer stopProgress()
	r.setPhase("setup")
	t, err := startTarget(ctx, &r.o, logger, func(ctx context.Context, pool *pgxpool.Pool) error {
		r.setPhase("history")
		return loadHistory(ctx, pool, r.table, r.userPrefix, &r.o)
	})
	if err != nil {
		return nil, err
	}
	defer t.close()
	res, err := r.measure(ctx, t)
	if err != nil {
		return nil, err
	}
	stopProgress()

	if o.Compare == CompareFloor {
		// pgpush's server must not run beside the floor: its listening
		// session would read every NOTIFY of the floor's too (PostgreSQL's
		// listeners all read one queue), on the floor's account.
		if err := t.stopServer(); err != nil {
			logger.Warn("stop the pgpush server before the floor", "err", err)
		}
		f := newRun(o, logger, targetFloor)
		stopFloor := f.startProgress()
		defer stopFloor()
		f.setPhase("setup")
		ft, err := startFloor(ctx, t, &f.o, logger, f.userPrefix)
		if err != nil {
			return nil, fmt.Errorf("floor: %w", err)
		}
		defer ft.close()
		fres, err := f.measure(ctx, ft)
		if err != nil {
			return nil, fmt.Errorf("floor: %w", err)
		}
		res.Floor = fres
		res.Ratios = ratiosOf(res, fres)
		for _, p := range fres.Problems {
			res.Problems = append(res.Problems, "floor: "+p)
		}
		res.OK = len(res.Problems) == 0
	}
	res.ElapsedSeconds = time.Since(begin).Seconds()
	return res, nil
}

// The targets a run measures.
const (
	targetPgpush = "pgpush"
	targetFloor  = "floor"
)

func newRun(o Options, logger *slog.Logger, target string) *run {
	idBytes := make([]byte, 4)
	rand.Read(idBytes)
	r := &run{o: o, log: logger, id: hex.EncodeToString(idBytes), body: makeBody(o.BodySize), base: time.Now(), target: target}
	r.table = "notifications"
	if target == targetFloor {
		r.table = floorTable
	}
	r.userPrefix = "bench-" + r.id + "-"
	r.userIDs = make([]string, o.Users)
	for u := range r.userIDs {
		r.userIDs[u] = r.userPrefix + strconv.Itoa(u)
	}
	r.rows = o.rows()
	r.rowsPerUser = (r.rows + o.Users - 1) / o.Users
	r.setPhase("starting")
	return r
}

// measure runs the scenario against t, which is ready.
func (r *run) measure(ctx context.Context, t *target) (*Result, error) {
	o := &r.o
	r.t = t
	res := &Result{
		Scenario:         o.Scenario,
		Target:           r.target,
		RunID:            r.id,
		StartedAt:        time.Now().UTC().Truncate(time.Second),
		Machine:          machine(),
		Parameters:       parametersOf(o),
		Mode:             "external",
		PostgresVersion:  t.pgVersion,
		PostgresSettings: t.pgSettings,
		ServerPID:        t.serverPID,
	}
	if len(t.pgSettings) > 0 {
		durable := t.durable()
		res.PostgresDurable = &durable
	}
	if t.selfContained {
		res.Mode = "self-contained"
		if r.target == targetPgpush {
			res.ServerEnv = o.ServerEnv
		}
	}

	var err error
	r.fleet, err = newFleet(r)
	if err != nil {
		return nil, err
	}
	r.shown.Store(r.fleet)
	res.Parameters.SourceAddrs = len(r.fleet.http)
	defer r.fleet.stop()

	if err := r.execute(ctx, res); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("interrupted: %w", err)
	}
	r.setPhase("closing")
	r.fleet.stop()
	r.collect(res)
	if t.server != nil {
		res.ServerLogWarnings = t.server.log.warningCount()
		res.ServerLogTail = t.server.log.lastLines(5)
	}
	if !t.selfContained && !o.KeepRows {
		dctx, cancel := context.WithTimeout(ctx, deleteTimeout)
		n, err := r.deleteRows(dctx)
		cancel()
		if err != nil {
			res.Problems = append(res.Problems, err.Error())
		}
		res.RowsDeleted = n
	}
	res.ElapsedSeconds = time.Since(r.base).Seconds()
	res.OK = len(res.Problems) == 0
	return res, nil
}

// beginPhase readies the database for the run: a checkpoint
// (self-contained), so that no earlier phase's writes are flushed during
// this one. It returns the table's statistics.
func (r *run) beginPhase(ctx context.Context) tableCounts {
	if r.t.selfContained {
		if _, err := r.t.pool.Exec(ctx, "CHECKPOINT"); err != nil {
			r.log.Warn("checkpoint before the measured phase", "err", err)
		}
	}
	return readTable(ctx, r.t.pool, r.table)
}

// snapBefore takes the reading at the start of the measured phase, after a
// reset of pg_stat_statements (--pg-profile).
func (r *run) snapBefore(ctx context.Context) snapshot {
	if r.o.PGProfile {
		if err := resetStatements(ctx, r.t.pool); err != nil {
			r.log.Warn("reset pg_stat_statements", "err", err)
		}
		r.logOffset = logSize(r.t.logPath)
		stop := make(chan struct{})
		done := make(chan []WaitEvent, 1)
		go func() { done <- sampleWaits(ctx, r.t.pool, stop) }()
		r.stopWaits = func() []WaitEvent {
			close(stop)
			return <-done
		}
	}
	return r.snap(ctx)
}

// endPhase records what PostgreSQL saw of the measured phase.
func (r *run) endPhase(ctx context.Context, res *Result, before tableCounts) {
	if r.o.PGProfile {
		st, err := readStatements(ctx, r.t.pool)
		if err != nil {
			res.Warnings = append(res.Warnings, "pg_stat_statements: "+err.Error())
		}
		res.Statements = st
		res.SlowPlans = slowPlans(r.t.logPath, r.logOffset)
	}
	if r.stopWaits != nil {
		res.WaitEvents = r.stopWaits()
		r.stopWaits = nil
	}
	res.Table = tableStateOf(r.table, r.o.History, before, readTable(ctx, r.t.pool, r.table))
	if res.Table != nil && res.Table.AnalyzedDuring {
		res.Warnings = append(res.Warnings, "the table was analyzed during the measured phase: plans changed part way through")
	}
}

// execute runs the scenario's phases, filling res with what only they know.
func (r *run) execute(ctx context.Context, res *Result) error {
	o := &r.o
	f := r.fleet
	var before snapshot
	table := r.beginPhase(ctx)
	defer r.endPhase(ctx, res, table)
	defer r.closeWriters()
	if o.Scenario == Idle {
		// Let the server's start-up settle before the baseline reading.
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
		before = r.snapBefore(ctx)
	}

	r.setPhase("connecting")
	connectStart := time.Now()
	if err := f.connect(ctx); err != nil {
		return err
	}
	res.Connections = len(f.clients)
	res.ConnectSeconds = time.Since(connectStart).Seconds()

	var send sendResult
	switch o.Scenario {
	case Idle:
		r.setPhase("holding")
		if err := sleep(ctx, o.Hold); err != nil {
			return err
		}
		after := r.snap(ctx)
		res.Server = r.serverStats(before, after, 0)
		res.ServerMetrics = serverMetrics(before.metrics, after.metrics)
		res.Postgres = r.postgresStats(before, after)
		res.ClientCPUSeconds = after.self - before.self
		res.Load = loadOf(before, after, res)
		if res.Server != nil && after.mem.rss > 0 {
			perConn := float64(after.mem.rss-before.mem.rss) / float64(len(f.clients)) / 1024
			res.RSSPerConnKiB = &perConn
			if !r.t.selfContained {
				res.Warnings = append(res.Warnings, "RSS per connection is only meaningful against a freshly started server: "+
					"memory a server kept from earlier connections hides the cost of new ones")
			}
		}
		if f.closedEarly.Load() > 0 {
			return fmt.Errorf("%d connections closed while idle: %v", f.closedEarly.Load(), f.closeReasons(3))
		}
		// One row per connection proves every one is still live.
		r.setPhase("checking")
		sctx, cancel := context.WithTimeout(ctx, burstTimeout)
		send = r.sendBurst(sctx)
		cancel()
		if send.err == nil {
			r.drain(ctx, send.end)
		}
	default:
		before = r.snapBefore(ctx)
		r.setPhase("sending")
		if o.Scenario == Burst {
			sctx, cancel := context.WithTimeout(ctx, burstTimeout)
			send = r.sendBurst(sctx)
			cancel()
		} else {
			// A writer stuck in an INSERT must not hold the run forever.
			sctx, cancel := context.WithTimeout(ctx, o.Duration+o.DrainTimeout+time.Minute)
			send = r.sendSteady(sctx)
			cancel()
		}
		if send.err == nil {
			r.setPhase("draining")
			r.drain(ctx, send.end)
		}
		after := r.snap(ctx)
		res.Server = r.serverStats(before, after, f.received.Load())
		res.ServerMetrics = serverMetrics(before.metrics, after.metrics)
		res.Postgres = r.postgresStats(before, after)
		res.ClientCPUSeconds = after.self - before.self
		res.Load = loadOf(before, after, res)
	}
	if send.err != nil {
		return send.err
	}
	r.send = send
	return nil
}

// drain waits until every committed row has reached every connection of its
// user, or DrainTimeout after the last commit.
func (r *run) drain(ctx context.Context, lastCommit int64) {
	want := r.sent.Load() * int64(r.o.ConnsPerUser)
	deadline := lastCommit + int64(r.o.DrainTimeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for r.fleet.received.Load() < want && r.clock() < deadline {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// snapshot is the resource counters at one moment.
type snapshot struct {
	serverCPU float64
	mem       procMemory
	pg        pgProcs
	pgRoles   map[int]string // by pid, from pg_stat_activity
	self      float64
	machine   cpuTimes // of the whole machine; zero if unknown
	at        time.Time
	metrics   map[string]float64
	walLSN    int64 // pg_current_wal_insert_lsn as a byte position (what was written, flushed or not)
	ok        struct{ server, pg, wal bool }
}

func (r *run) snap(ctx context.Context) snapshot {
	var s snapshot
	s.metrics = r.t.scrapeMetrics(ctx)
	if pid := r.t.serverPID; pid != 0 {
		st, err1 := readProcStat(pid)
		m, err2 := readProcMemory(pid)
		if err1 == nil && err2 == nil {
			s.serverCPU, s.mem, s.ok.server = st.cpu, m, true
		} else {
			r.log.Warn("cannot read the server's /proc", "pid", pid, "err", fmt.Sprint(err1, err2))
		}
	}
	if pm := r.t.postmaster; pm != 0 {
		if p, err := readPGProcs(pm); err == nil {
			s.pg, s.ok.pg = p, true
			if s.pgRoles, err = pgRoles(ctx, r.t.pool); err != nil {
				r.log.Warn("cannot read pg_stat_activity", "err", err)
			}
		}
	}
	// The WAL written meanwhile: the writers' rows, pgpush's or the
	// floor's trigger writes, and everything else the cluster does.
	if err := r.t.pool.QueryRow(ctx, `SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint`).Scan(&s.walLSN); err == nil {
		s.ok.wal = true
	} else {
		r.log.Warn("cannot read the WAL position", "err", err)
	}
	s.self = selfCPU()
	s.machine, _ = machineCPU()
	s.at = time.Now()
	return s
}

func (r *run) serverStats(before, after snapshot, delivered int64) *ServerStats {
	if !before.ok.server || !after.ok.server {
		return nil
	}
	s := &ServerStats{
		CPUSeconds:   after.serverCPU - before.serverCPU,
		PeakRSSMiB:   mib(after.mem.hwm),
		RSSBeforeMiB: mib(before.mem.rss),
		RSSAfterMiB:  mib(after.mem.rss),
	}
	if delivered > 0 {
		per := s.CPUSeconds / float64(delivered) * 1e6
		s.CPUMicrosPerDelivery = &per
	}
	return s
}

func (r *run) postgresStats(before, after snapshot) *PostgresStats {
	if !before.ok.pg || !after.ok.pg {
		return nil
	}
	roles := make(map[int]string, len(after.pgRoles))
	maps.Copy(roles, before.pgRoles)
	maps.Copy(roles, after.pgRoles) // a pid's latest role wins
	p := &PostgresStats{
		CPUSeconds: after.pg.total() - before.pg.total(),
		CPUByRole:  cpuByRole(before.pg, after.pg, roles),
	}
	if before.ok.wal && after.ok.wal {
		wal := after.walLSN - before.walLSN
		p.WALBytes = &wal
	}
	return p
}

// loadOf reports how busy the machine was over the measured phase, and how
// much of that was neither the server, PostgreSQL nor this process: other
// work on the machine distorts what the run measures.
func loadOf(before, after snapshot, res *Result) *Load {
	if before.machine.busy == 0 || after.machine.busy == 0 {
		return nil
	}
	wall := after.at.Sub(before.at).Seconds()
	busy := after.machine.busy - before.machine.busy
	l := &Load{
		WallSeconds:    wall,
		BusyCPUSeconds: busy,
		BusyPercent:    100 * busy / (wall * float64(res.Machine.CPUs)),
		IRQCPUSeconds:  after.machine.irq - before.machine.irq,
		StealSeconds:   after.machine.steal - before.machine.steal,
	}
	if res.Server != nil && res.Postgres != nil {
		other := max(0, busy-l.IRQCPUSeconds-res.Server.CPUSeconds-res.Postgres.CPUSeconds-res.ClientCPUSeconds)
		l.OtherCPUSeconds = &other
	}
	return l
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// startProgress prints a line every ProgressInterval until the returned
// function is called.
func (r *run) startProgress() (stop func()) {
	o := &r.o
	if o.Progress == nil || o.ProgressInterval <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(o.ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			r.printProgress(o.Progress)
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
}

func (r *run) printProgress(w io.Writer) {
	o := &r.o
	line := fmt.Sprintf("bench %s %s %6.1fs %-10s", o.Scenario, r.target, time.Since(r.base).Seconds(), *r.phase.Load())
	if f := r.shown.Load(); f != nil {
		sent := r.sent.Load()
		line += fmt.Sprintf("  connected %d/%d  sent %d/%d  delivered %d/%d",
			f.connected.Load(), o.conns(), sent, r.rows, f.received.Load(), sent*int64(o.ConnsPerUser))
		if n := f.closedEarly.Load(); n > 0 {
			line += fmt.Sprintf("  CLOSED EARLY %d", n)
		}
	}
	fmt.Fprintln(w, line)
}
