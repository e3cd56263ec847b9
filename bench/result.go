package bench

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Result is what a run measured; its JSON is `pgpush bench --json`'s record.
// Times are in milliseconds or seconds as the field names say; a null field
// was not measured (e.g. server CPU without a server pid).
type Result struct {
	Scenario Scenario `json:"scenario"`
	// Target is what was measured: "pgpush", or "floor" (the baseline of
	// --compare floor).
	Target string `json:"target"`
	RunID  string `json:"run_id"`
	// OK is false when rows were lost or duplicated, unexpected frames
	// arrived, or connections closed early; Problems says which.
	OK       bool     `json:"ok"`
	Problems []string `json:"problems,omitempty"`
	// Warnings are shortfalls that are not failures, such as an achieved
	// rate below the offered one.
	Warnings       []string  `json:"warnings,omitempty"`
	StartedAt      time.Time `json:"started_at"`
	ElapsedSeconds float64   `json:"elapsed_seconds"`

	// Mode is "self-contained" (the run started PostgreSQL and the server)
	// or "external".
	Mode string `json:"mode"`
	// PostgresDurable is true when the server's settings make a commit
	// survive an OS crash (fsync and full_page_writes on,
	// synchronous_commit not off), as users run PostgreSQL; false for a
	// --fast cluster; null when unknown. PostgresSettings are those
	// settings as the server reported them.
	PostgresDurable  *bool             `json:"postgres_durable"`
	PostgresSettings map[string]string `json:"postgres_settings,omitempty"`
	PostgresVersion  string            `json:"postgres_version"`
	// Table is the state of the table the writers inserted into: whether
	// it was just migrated and never analyzed, or held history.
	Table     *TableState `json:"table,omitempty"`
	ServerPID int         `json:"server_pid,omitempty"`
	// ServerEnv is what the run added to a self-contained server's
	// environment (--server-env), such as GOMAXPROCS=1.
	ServerEnv  []string   `json:"server_env,omitempty"`
	Machine    Machine    `json:"machine"`
	Parameters Parameters `json:"parameters"`

	// Connections is how many WebSockets were open; ConnectSeconds the time
	// from the first dial until every one had its ready frame.
	Connections    int     `json:"connections"`
	ConnectSeconds float64 `json:"connect_seconds"`
	// RSSPerConnKiB is (server RSS with the idle connections open − RSS
	// before) / connections; idle only.
	RSSPerConnKiB *float64 `json:"rss_per_conn_kib"`

	// OfferedRate is the scheduled rows/s (steady, fanout); AchievedRate the
	// committed rows per second from the first scheduled send to the last
	// commit (for a burst, rows per second of the statement).
	OfferedRate  *float64 `json:"offered_rate"`
	AchievedRate float64  `json:"achieved_rate"`
	// DeliveryRate is deliveries per second from the first send to the last
	// arrival.
	DeliveryRate float64 `json:"delivery_rate"`
	// ScheduleLagMs is how late inserts were sent against their schedule;
	// InsertMs how long each one-row INSERT took to return, commit included.
	ScheduleLagMs *Latency `json:"schedule_lag_ms,omitempty"`
	InsertMs      *Latency `json:"insert_ms,omitempty"`

	// Rows is how many rows were committed; Expected = Σ rows × connections
	// of their user; Delivered counts first arrivals; Lost = Expected −
	// Delivered at the drain deadline; Duplicated counts second arrivals;
	// Unexpected counts row frames a connection should not have had.
	Rows        int64 `json:"rows"`
	Expected    int64 `json:"expected"`
	Delivered   int64 `json:"delivered"`
	Lost        int64 `json:"lost"`
	Duplicated  int64 `json:"duplicated"`
	Unexpected  int64 `json:"unexpected"`
	ClosedEarly int64 `json:"closed_early"`

	// LatencyMs is per delivery: frame decoded minus just before the INSERT.
	LatencyMs *Latency `json:"latency_ms"`
	// LatencyBySecond is LatencyMs of the rows sent in each second of a
	// steady or fanout phase. The phase starts with a checkpoint (when
	// self-contained), after which PostgreSQL writes every page whole to
	// the WAL the first time it changes it: a table with many pages that
	// each row may touch (per-user indexes) pays that in the first seconds.
	LatencyBySecond []SecondLatency `json:"latency_by_second,omitempty"`
	// LatencyLateMs is LatencyMs of the rows sent from lateAfter into the
	// phase on: the seconds a checkpoint makes slow left out.
	LatencyLateMs *Latency `json:"latency_late_ms,omitempty"`
	// FanoutSpreadMs is, per row, its last minus its first arrival among
	// the connections of its user (fanout).
	FanoutSpreadMs *Latency `json:"fanout_spread_ms,omitempty"`
	// Burst times the one-statement insert (burst, and idle's liveness
	// check).
	Burst *BurstStats `json:"burst,omitempty"`

	Server        *ServerStats   `json:"server"`
	ServerMetrics *ServerMetrics `json:"server_metrics"`
	Postgres      *PostgresStats `json:"postgres"`
	// ClientCPUSeconds is the bench process's own CPU over the measured
	// phase: it shares the machine with what it measures.
	ClientCPUSeconds float64 `json:"client_cpu_seconds"`
	// Load is how busy the whole machine was over the measured phase.
	Load *Load `json:"load"`
	// Statements are the statements that took PostgreSQL the most time
	// over the measured phase (--pg-profile), most first.
	Statements []Statement `json:"pg_statements,omitempty"`
	// SlowPlans are the plans auto_explain logged over the measured phase
	// (--pg-profile): the slowest of each query, slowest first.
	SlowPlans []SlowPlan `json:"pg_slow_plans,omitempty"`
	// WaitEvents are what PostgreSQL's active sessions were doing over the
	// measured phase (--pg-profile), sampled every 10 ms, most first.
	WaitEvents []WaitEvent `json:"pg_wait_events,omitempty"`

	ServerLogWarnings int      `json:"server_log_warnings"`
	ServerLogTail     []string `json:"server_log_tail,omitempty"`
	RowsDeleted       int64    `json:"rows_deleted,omitempty"`

	// Floor is the baseline's result (--compare floor): the same load,
	// after pgpush's, on the same cluster. Ratios are pgpush's figures
	// over the floor's.
	Floor  *Result `json:"floor,omitempty"`
	Ratios *Ratios `json:"ratios,omitempty"`
}

// Ratios are pgpush's figures divided by the floor's; a ratio whose figures
// are missing (or whose floor figure is 0) is null. Above 1 means pgpush is
// slower, costs more or (achieved rate) keeps up better.
type Ratios struct {
	LatencyP50 *float64 `json:"latency_p50"`
	LatencyP99 *float64 `json:"latency_p99"`
	// LatencyP99Late compares the p99 of LatencyLateMs.
	LatencyP99Late *float64 `json:"latency_p99_late,omitempty"`
	PostgresCPU    *float64 `json:"postgres_cpu"`
	// PostgresCPUPerRow compares PostgreSQL's CPU per committed row: when
	// one side committed fewer rows (it fell behind), PostgresCPU
	// understates its cost.
	PostgresCPUPerRow *float64 `json:"postgres_cpu_per_row"`
	WALPerRow         *float64 `json:"wal_per_row,omitempty"`
	ServerCPU         *float64 `json:"server_cpu"`
	AchievedRate      *float64 `json:"achieved_rate"`
	InsertP50         *float64 `json:"insert_p50"`
	InsertP99         *float64 `json:"insert_p99"`
	BurstLast         *float64 `json:"burst_last"`
}

// comparedFigure is one line of the side-by-side table.
type comparedFigure struct {
	name     string
	decimals int
	get      func(*Result) (float64, bool)
	ratio    func(*Ratios) **float64
}

var comparedFigures = []comparedFigure{
	{"latency p50 ms", 3, from(func(r *Result) *Latency { return r.LatencyMs }, func(l *Latency) float64 { return l.P50 }),
		func(r *Ratios) **float64 { return &r.LatencyP50 }},
	{"latency p99 ms", 3, from(func(r *Result) *Latency { return r.LatencyMs }, func(l *Latency) float64 { return l.P99 }),
		func(r *Ratios) **float64 { return &r.LatencyP99 }},
	{"latency p99 ms 5s on", 3, from(func(r *Result) *Latency { return r.LatencyLateMs }, func(l *Latency) float64 { return l.P99 }),
		func(r *Ratios) **float64 { return &r.LatencyP99Late }},
	{"PostgreSQL CPU-s", 2, from(func(r *Result) *PostgresStats { return r.Postgres }, func(p *PostgresStats) float64 { return p.CPUSeconds }),
		func(r *Ratios) **float64 { return &r.PostgresCPU }},
	{"PostgreSQL CPU-ms/row", 3, func(r *Result) (float64, bool) {
		if r.Postgres == nil || r.Rows == 0 {
			return 0, false
		}
		return r.Postgres.CPUSeconds * 1e3 / float64(r.Rows), true
	}, func(r *Ratios) **float64 { return &r.PostgresCPUPerRow }},
	{"WAL bytes/row", 0, func(r *Result) (float64, bool) {
		// An idle run's readings cover the hold, not its rows.
		if r.Postgres == nil || r.Postgres.WALBytes == nil || r.Rows == 0 || r.Scenario == Idle {
			return 0, false
		}
		return float64(*r.Postgres.WALBytes) / float64(r.Rows), true
	}, func(r *Ratios) **float64 { return &r.WALPerRow }},
	{"server CPU-s", 2, from(func(r *Result) *ServerStats { return r.Server }, func(s *ServerStats) float64 { return s.CPUSeconds }),
		func(r *Ratios) **float64 { return &r.ServerCPU }},
	{"achieved rows/s", 1, func(r *Result) (float64, bool) { return r.AchievedRate, r.AchievedRate > 0 },
		func(r *Ratios) **float64 { return &r.AchievedRate }},
	{"INSERT p50 ms", 3, from(func(r *Result) *Latency { return r.InsertMs }, func(l *Latency) float64 { return l.P50 }),
		func(r *Ratios) **float64 { return &r.InsertP50 }},
	{"INSERT p99 ms", 3, from(func(r *Result) *Latency { return r.InsertMs }, func(l *Latency) float64 { return l.P99 }),
		func(r *Ratios) **float64 { return &r.InsertP99 }},
	{"burst last row ms", 1, from(func(r *Result) *BurstStats { return r.Burst }, func(b *BurstStats) float64 { return b.LastMs }),
		func(r *Ratios) **float64 { return &r.BurstLast }},
}

func ratiosOf(pgpush, floor *Result) *Ratios {
	rs := &Ratios{}
	for _, f := range comparedFigures {
		p, ok1 := f.get(pgpush)
		b, ok2 := f.get(floor)
		if ok1 && ok2 && b > 0 {
			v := math.Round(p/b*100) / 100
			*f.ratio(rs) = &v
		}
	}
	return rs
}

// Machine describes the computer.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model,omitempty"`
	MemoryMiB int64  `json:"memory_mib,omitempty"`
	OS        string `json:"os"`
	Kernel    string `json:"kernel,omitempty"`
	Go        string `json:"go"`
}

// Parameters are the options that shape the load.
type Parameters struct {
	Users               int     `json:"users"`
	ConnsPerUser        int     `json:"conns_per_user"`
	Writers             int     `json:"writers,omitempty"`
	Rate                float64 `json:"rate,omitempty"`
	DurationSeconds     float64 `json:"duration_seconds,omitempty"`
	Rows                int     `json:"rows"`
	BodyBytes           int     `json:"body_bytes"`
	HoldSeconds         float64 `json:"hold_seconds,omitempty"`
	DialConcurrency     int     `json:"dial_concurrency"`
	SourceAddrs         int     `json:"source_addrs"`
	DrainTimeoutSeconds float64 `json:"drain_timeout_seconds"`
}

func parametersOf(o *Options) Parameters {
	p := Parameters{
		Users:               o.Users,
		ConnsPerUser:        o.ConnsPerUser,
		Rows:                o.rows(),
		BodyBytes:           o.BodySize,
		DialConcurrency:     o.DialConcurrency,
		DrainTimeoutSeconds: o.DrainTimeout.Seconds(),
	}
	switch o.Scenario {
	case Steady, Fanout:
		p.Writers, p.Rate, p.DurationSeconds = o.Writers, o.Rate, o.Duration.Seconds()
	case Idle:
		p.HoldSeconds = o.Hold.Seconds()
	}
	return p
}

// Latency is a distribution in milliseconds. Percentiles are exact
// (nearest rank over every sample).
type Latency struct {
	Samples int     `json:"samples"`
	Min     float64 `json:"min"`
	Mean    float64 `json:"mean"`
	P50     float64 `json:"p50"`
	P90     float64 `json:"p90"`
	P99     float64 `json:"p99"`
	P999    float64 `json:"p99_9"`
	Max     float64 `json:"max"`
}

// SecondLatency is the latency of the rows sent in one second of the
// measured phase (Second 0 is its first).
type SecondLatency struct {
	Second  int     `json:"second"`
	Samples int     `json:"samples"`
	P50     float64 `json:"p50"`
	P99     float64 `json:"p99"`
}

// lateAfter is where LatencyLateMs starts: at 1,000 rows/s over 1,000
// users, by then nearly every user's pages have changed once since the
// checkpoint.
const lateAfter = 5 * time.Second

// BurstStats times a one-statement insert, from just before it was sent.
type BurstStats struct {
	StatementMs float64 `json:"statement_ms"` // until the INSERT returned
	FirstMs     float64 `json:"first_ms"`     // until the first row arrived
	LastMs      float64 `json:"last_ms"`      // until the last row arrived
}

// ServerStats are /proc readings of the server over the measured phase.
type ServerStats struct {
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUMicrosPerDelivery is CPUSeconds per delivered frame.
	CPUMicrosPerDelivery *float64 `json:"cpu_us_per_delivery,omitempty"`
	// PeakRSSMiB is VmHWM: the peak over the server's life.
	PeakRSSMiB   float64 `json:"peak_rss_mib"`
	RSSBeforeMiB float64 `json:"rss_before_mib"`
	RSSAfterMiB  float64 `json:"rss_after_mib"`
}

// Load is the machine's CPU use over the measured phase, from /proc/stat.
type Load struct {
	WallSeconds    float64 `json:"wall_seconds"`
	BusyCPUSeconds float64 `json:"busy_cpu_seconds"`
	// BusyPercent is of all CPUs: 100 means every core was busy throughout.
	BusyPercent float64 `json:"busy_percent"`
	// IRQCPUSeconds is interrupt and softirq time (on loopback, much of the
	// network stack), which no process's CPU times include.
	IRQCPUSeconds float64 `json:"irq_cpu_seconds"`
	// StealSeconds is CPU time a hypervisor gave to other guests.
	StealSeconds float64 `json:"steal_seconds"`
	// OtherCPUSeconds is busy time that was neither interrupts, the
	// server, PostgreSQL nor the bench: other work on the machine. Null
	// when the server or PostgreSQL could not be read.
	OtherCPUSeconds *float64 `json:"other_cpu_seconds"`
}

// PostgresStats are /proc readings of the PostgreSQL cluster.
type PostgresStats struct {
	// CPUSeconds sums the postmaster and its children, live and exited.
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUByRole splits CPUSeconds by what the processes are: the writers'
	// sessions, pgpush's or the floor's, PostgreSQL's own (walwriter,
	// checkpointer, autovacuum, ...), and those that exited meanwhile.
	CPUByRole map[string]float64 `json:"cpu_by_role,omitempty"`
	// WALBytes is the WAL the cluster wrote over the measured phase (after
	// a checkpoint, when self-contained: full-page images included); for
	// idle, over the hold, before the rows.
	WALBytes *int64 `json:"wal_bytes,omitempty"`
}

// latencyOf sorts ns in place and summarises it.
func latencyOf(ns []int64) *Latency {
	if len(ns) == 0 {
		return nil
	}
	slices.Sort(ns)
	var sum float64
	for _, v := range ns {
		sum += float64(v)
	}
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(ns)))) - 1
		return ms(ns[max(0, min(i, len(ns)-1))])
	}
	return &Latency{
		Samples: len(ns),
		Min:     ms(ns[0]),
		Mean:    sum / float64(len(ns)) / 1e6,
		P50:     rank(0.50),
		P90:     rank(0.90),
		P99:     rank(0.99),
		P999:    rank(0.999),
		Max:     ms(ns[len(ns)-1]),
	}
}

// bySecondOf summarises the samples of each second (sorting them in
// place), and those from lateAfter on together.
func bySecondOf(bySecond [][]int64) ([]SecondLatency, *Latency) {
	var out []SecondLatency
	var late []int64
	for k, ns := range bySecond {
		if k >= int(lateAfter/time.Second) {
			late = append(late, ns...)
		}
		if l := latencyOf(ns); l != nil {
			out = append(out, SecondLatency{Second: k, Samples: l.Samples, P50: l.P50, P99: l.P99})
		}
	}
	return out, latencyOf(late)
}

func ms(ns int64) float64 { return math.Round(float64(ns)/1e3) / 1e3 }

// collect turns what the writers and the connections recorded into res. It
// runs after both have stopped.
func (r *run) collect(res *Result) {
	o := &r.o
	f := r.fleet
	send := r.send
	sentAt := make([]int64, r.rows)
	for i := range sentAt {
		sentAt[i] = -1
	}
	for i, seq := range send.committed {
		sentAt[seq] = send.sentAt[i]
	}
	res.Rows = int64(len(send.committed))
	res.Expected = res.Rows * int64(o.ConnsPerUser)

	users := int64(o.Users)
	samples := make([]int64, 0, res.Expected)
	// bySecond[k] are the samples of the rows sent in second k.
	var bySecond [][]int64
	steady := o.Scenario == Steady || o.Scenario == Fanout
	lastArrival := int64(math.MinInt64)
	for i := range f.clients {
		c := &f.clients[i]
		res.Duplicated += c.duplicated
		res.Unexpected += c.unexpected
		for idx, lat := range c.lat {
			seq := int64(idx)*users + int64(c.user)
			if seq >= int64(r.rows) {
				break
			}
			switch {
			case sentAt[seq] < 0 && lat >= 0:
				res.Unexpected++ // a row whose INSERT did not succeed
			case sentAt[seq] < 0:
			case lat < 0:
				res.Lost++
			default:
				samples = append(samples, lat)
				lastArrival = max(lastArrival, sentAt[seq]+lat)
				if k := int((sentAt[seq] - send.start) / int64(time.Second)); steady && k >= 0 {
					for len(bySecond) <= k {
						bySecond = append(bySecond, nil)
					}
					bySecond[k] = append(bySecond[k], lat)
				}
			}
		}
	}
	res.Delivered = int64(len(samples))
	res.ClosedEarly = f.closedEarly.Load()
	if o.ConnsPerUser > 1 {
		res.FanoutSpreadMs = r.fanoutSpread(sentAt)
	}
	res.LatencyMs = latencyOf(samples)
	res.LatencyBySecond, res.LatencyLateMs = bySecondOf(bySecond)

	if span := float64(send.end-send.start) / 1e9; span > 0 {
		res.AchievedRate = float64(res.Rows) / span
	}
	if span := float64(lastArrival-send.start) / 1e9; res.Delivered > 0 && span > 0 {
		res.DeliveryRate = float64(res.Delivered) / span
	}
	switch o.Scenario {
	case Steady, Fanout:
		rate := o.Rate
		res.OfferedRate = &rate
		res.ScheduleLagMs = latencyOf(send.lag)
		res.InsertMs = latencyOf(send.insert)
		if send.stoppedShort {
			res.Warnings = append(res.Warnings, fmt.Sprintf("the writers committed %d of the %d rows scheduled and stopped %s after the schedule's end, too far behind it",
				res.Rows, r.rows, o.DrainTimeout))
		}
		if res.AchievedRate < 0.95*o.Rate {
			res.Warnings = append(res.Warnings, fmt.Sprintf("achieved %.0f rows/s of the %.0f offered: the writers or the database could not keep up", res.AchievedRate, o.Rate))
		}
	case Burst, Idle:
		res.Burst = &BurstStats{StatementMs: ms(send.stmt)}
		if res.LatencyMs != nil {
			res.Burst.FirstMs, res.Burst.LastMs = res.LatencyMs.Min, res.LatencyMs.Max
		}
	}

	if res.Lost > 0 {
		res.Problems = append(res.Problems, fmt.Sprintf("LOST %d of %d deliveries (not arrived %s after the last commit)", res.Lost, res.Expected, o.DrainTimeout))
	}
	if res.Duplicated > 0 {
		res.Problems = append(res.Problems, fmt.Sprintf("DUPLICATED %d deliveries", res.Duplicated))
	}
	if res.Unexpected > 0 {
		res.Problems = append(res.Problems, fmt.Sprintf("%d UNEXPECTED row frames (rows of another user, or never committed)", res.Unexpected))
	}
	if res.ClosedEarly > 0 {
		res.Problems = append(res.Problems, fmt.Sprintf("%d connections CLOSED before the end: %s", res.ClosedEarly, strings.Join(f.closeReasons(3), "; ")))
	}
}

// fanoutSpread is, per committed row, the spread of its arrival times over
// the connections of its user that received it.
func (r *run) fanoutSpread(sentAt []int64) *Latency {
	o := &r.o
	f := r.fleet
	spreads := make([]int64, 0, r.rows)
	for u := range o.Users {
		conns := f.clients[u*o.ConnsPerUser : (u+1)*o.ConnsPerUser]
		for idx := range r.rowsPerUser {
			seq := idx*o.Users + u
			if seq >= r.rows || sentAt[seq] < 0 {
				continue
			}
			lo, hi, n := int64(math.MaxInt64), int64(math.MinInt64), 0
			for i := range conns {
				if l := conns[i].lat[idx]; l >= 0 {
					lo, hi, n = min(lo, l), max(hi, l), n+1
				}
			}
			if n > 1 {
				spreads = append(spreads, hi-lo)
			}
		}
	}
	return latencyOf(spreads)
}

// WriteSummary writes res for people: with a floor, both results and then
// the two side by side.
func (res *Result) WriteSummary(w io.Writer) {
	res.writeOne(w)
	if res.Floor == nil {
		return
	}
	fmt.Fprintln(w)
	res.Floor.writeOne(w)
	fmt.Fprintln(w)
	res.writeComparison(w)
}

// writeComparison prints the floor's figures beside pgpush's.
func (res *Result) writeComparison(w io.Writer) {
	fl := res.Floor
	state := func(r *Result) string {
		if r.Table == nil {
			return "?"
		}
		if r.Table.HistoryRows > 0 {
			return fmt.Sprintf("%d history rows", r.Table.HistoryRows)
		}
		if !r.Table.AnalyzedBefore {
			return "fresh, never analyzed"
		}
		return "analyzed"
	}
	fmt.Fprintf(w, "compared (%s, %s PostgreSQL; pgpush table: %s):\n", res.Scenario, durability(res), state(res))
	fmt.Fprintf(w, "  %-20s %12s %12s %9s\n", "", "floor", "pgpush", "ratio")
	for _, f := range comparedFigures {
		p, ok1 := f.get(res)
		b, ok2 := f.get(fl)
		if !ok1 && !ok2 {
			continue
		}
		cell := func(v float64, ok bool) string {
			if !ok {
				return "—"
			}
			return strconv.FormatFloat(v, 'f', f.decimals, 64)
		}
		ratio := "—"
		if res.Ratios != nil {
			if v := *f.ratio(res.Ratios); v != nil {
				ratio = fmt.Sprintf("%.2f×", *v)
			}
		}
		fmt.Fprintf(w, "  %-20s %12s %12s %9s\n", f.name, cell(b, ok2), cell(p, ok1), ratio)
	}
	writeRoleRows(w, res, fl)
	if res.OK {
		fmt.Fprintln(w, "result:      OK: every row delivered exactly once, by both")
	} else {
		fmt.Fprintln(w, "result:      FAILED")
	}
}

// writeRoleRows adds PostgreSQL's CPU per row by role to the side-by-side
// table, in the order of pgpush's figures, most first, leaving out the
// roles that used next to nothing on both sides.
func writeRoleRows(w io.Writer, res, fl *Result) {
	if res.Postgres == nil || fl.Postgres == nil || res.Rows == 0 || fl.Rows == 0 {
		return
	}
	p, b := res.Postgres.CPUByRole, fl.Postgres.CPUByRole
	all := maps.Clone(p)
	for role := range b {
		if _, ok := all[role]; !ok {
			all[role] = 0
		}
	}
	for _, role := range rolesByCPU(all) {
		pm := p[role] * 1e3 / float64(res.Rows)
		bm := b[role] * 1e3 / float64(fl.Rows)
		if pm < 0.0005 && bm < 0.0005 {
			continue // 0.000 on both sides
		}
		ratio := "—"
		if bm > 0 {
			ratio = fmt.Sprintf("%.2f×", pm/bm)
		}
		fmt.Fprintf(w, "  %-20s %12.3f %12.3f %9s\n", "  "+role, bm, pm, ratio)
	}
}

// rolesByCPU lists the roles of byRole, most CPU first.
func rolesByCPU(byRole map[string]float64) []string {
	roles := slices.Collect(maps.Keys(byRole))
	slices.SortFunc(roles, func(a, b string) int {
		if c := cmp.Compare(byRole[b], byRole[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	return roles
}

// byRoleLine is PostgreSQL's CPU by role, most first, as text.
func byRoleLine(byRole map[string]float64) string {
	var parts []string
	for _, role := range rolesByCPU(byRole) {
		parts = append(parts, fmt.Sprintf("%s %.2f", role, byRole[role]))
	}
	return strings.Join(parts, ", ") + " CPU-s"
}

// durability says in a word how the server's settings treat a commit.
func durability(res *Result) string {
	switch {
	case res.PostgresDurable == nil:
		return "unknown durability"
	case *res.PostgresDurable:
		return "durable"
	default:
		return "NOT durable"
	}
}

// settingsText lists the durability settings as the server reported them.
func settingsText(s map[string]string) string {
	var parts []string
	for _, name := range durabilitySettings {
		if v, ok := s[name]; ok {
			parts = append(parts, name+" "+v)
		}
	}
	return strings.Join(parts, ", ")
}

// writeOne writes res alone.
func (res *Result) writeOne(w io.Writer) {
	p := res.Parameters
	pf := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	m := res.Machine
	target := res.Target
	if target == "" {
		target = targetPgpush
	}
	pf("pgpush bench %s of %s (run %s, %s)", res.Scenario, target, res.RunID, res.StartedAt.Format(time.RFC3339))
	pf("machine:     %d CPUs (%s), %d MiB, %s, kernel %s, %s", m.CPUs, m.CPUModel, m.MemoryMiB, m.OS, m.Kernel, m.Go)
	pg := fmt.Sprintf("PostgreSQL %s, %s", res.PostgresVersion, strings.ToUpper(durability(res)))
	if len(res.PostgresSettings) > 0 {
		pg += " (" + settingsText(res.PostgresSettings) + ")"
	}
	switch res.Mode {
	case "self-contained":
		env := ""
		if len(res.ServerEnv) > 0 {
			env = " with " + strings.Join(res.ServerEnv, " ")
		}
		what := "pgpush server"
		if res.Target == targetFloor {
			what = "floor forwarder"
		}
		pf("target:      self-contained: %s pid %d%s; throwaway %s, on the same machine", what, res.ServerPID, env, pg)
	default:
		pid := "no --server-pid: no server readings"
		if res.ServerPID != 0 {
			pid = fmt.Sprintf("server pid %d", res.ServerPID)
		}
		pf("target:      external: %s; %s", pid, pg)
	}
	if res.Table != nil {
		pf("table:       %s", res.Table.describe())
	}
	load := fmt.Sprintf("%d users × %d connections", p.Users, p.ConnsPerUser)
	switch res.Scenario {
	case Steady, Fanout:
		load += fmt.Sprintf("; %d writers (sessions warmed by a rolled-back insert), %.0f rows/s for %gs, one row per transaction", p.Writers, p.Rate, p.DurationSeconds)
	case Burst:
		load += fmt.Sprintf("; one INSERT of %d rows", p.Rows)
	case Idle:
		load = fmt.Sprintf("%d idle connections held %gs, then one INSERT of a row for each", p.Users, p.HoldSeconds)
	}
	pf("load:        %s; %d-byte bodies", load, p.BodyBytes)
	pf("connect:     %d connections in %.2fs (%.0f/s)", res.Connections, res.ConnectSeconds, float64(res.Connections)/max(res.ConnectSeconds, 1e-9))
	if res.OfferedRate != nil {
		lag := ""
		if l := res.ScheduleLagMs; l != nil {
			lag = fmt.Sprintf("; sends late by p99 %.2f ms, max %.2f ms", l.P99, l.Max)
		}
		pf("rate:        offered %.0f rows/s, achieved %.1f rows/s%s", *res.OfferedRate, res.AchievedRate, lag)
	}
	if l := res.InsertMs; l != nil {
		pf("insert ms:   one-row INSERT until it returned: p50 %.3f  p99 %.3f  max %.3f", l.P50, l.P99, l.Max)
	}
	if b := res.Burst; b != nil {
		label := "burst:      "
		if res.Scenario == Idle {
			label = "liveness:   "
		}
		pf("%s statement %.1f ms; first row after %.1f ms, last after %.1f ms", label, b.StatementMs, b.FirstMs, b.LastMs)
	}
	pf("delivery:    %d of %d delivered (%d rows); lost %d, duplicated %d, unexpected %d; %.0f deliveries/s",
		res.Delivered, res.Expected, res.Rows, res.Lost, res.Duplicated, res.Unexpected, res.DeliveryRate)
	if l := res.LatencyMs; l != nil {
		pf("latency ms:  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  (min %.3f, mean %.3f, %d samples)",
			l.P50, l.P90, l.P99, l.P999, l.Max, l.Min, l.Mean, l.Samples)
	}
	if len(res.LatencyBySecond) > 0 {
		pf("%s", bySecondLine(res.LatencyBySecond, res.LatencyLateMs))
	}
	if l := res.FanoutSpreadMs; l != nil {
		pf("fan-out ms:  spread of a row over its user's connections: p50 %.3f  p99 %.3f  max %.3f", l.P50, l.P99, l.Max)
	}
	if s := res.Server; s != nil {
		line := fmt.Sprintf("server:      %.2f CPU-s", s.CPUSeconds)
		if s.CPUMicrosPerDelivery != nil {
			line += fmt.Sprintf(" (%.1f µs per delivery, %.2f CPU-s per 40,000)", *s.CPUMicrosPerDelivery, *s.CPUMicrosPerDelivery*0.04)
		}
		line += fmt.Sprintf("; RSS %.1f → %.1f MiB, peak %.1f MiB", s.RSSBeforeMiB, s.RSSAfterMiB, s.PeakRSSMiB)
		pf("%s", line)
	} else {
		pf("server:      no /proc readings")
	}
	if m := res.ServerMetrics; m != nil && (m.EventsDelivered > 0 || m.Fetches > 0) {
		pf("server view: %.0f frames; NOTIFY received → frame written: mean %.3f ms; %.0f fetches of mean %.3f ms; dropped %.0f, catch-ups %.0f, slow closes %.0f",
			m.EventsDelivered, m.DeliveryMeanMs, m.Fetches, m.FetchMeanMs, m.NotificationsDropped, m.CatchUps, m.SlowConsumerCloses)
	}
	if res.RSSPerConnKiB != nil {
		pf("memory:      %.1f KiB of server RSS per idle connection", *res.RSSPerConnKiB)
	}
	pgCPU := "no /proc readings"
	if res.Postgres != nil {
		pgCPU = fmt.Sprintf("%.2f CPU-s", res.Postgres.CPUSeconds)
		if w := res.Postgres.WALBytes; w != nil {
			pgCPU += fmt.Sprintf(", %.1f MB of WAL", float64(*w)/1e6)
			if res.Rows > 0 && res.Scenario != Idle {
				pgCPU += fmt.Sprintf(" (%.0f bytes per row)", float64(*w)/float64(res.Rows))
			}
		}
	}
	pf("postgres:    %s; bench client: %.2f CPU-s", pgCPU, res.ClientCPUSeconds)
	if res.Postgres != nil && len(res.Postgres.CPUByRole) > 0 {
		pf("pg by role:  %s", byRoleLine(res.Postgres.CPUByRole))
	}
	if len(res.Statements) > 0 {
		pf("statements:  pg_stat_statements over the measured phase, most time first (exec+plan ms total, calls, mean exec ms, rows, buffers per call):")
		for _, s := range res.Statements {
			level := ""
			if !s.TopLevel {
				level = " (nested)"
			}
			pf("  %9.1f ms %7d× %8.3f ms %8d rows %7.1f bufs  %.120s%s", s.TotalMs+s.PlanMs, s.Calls, s.MeanMs, s.Rows,
				float64(s.SharedBlks)/float64(max(s.Calls, 1)), s.Query, level)
		}
	}
	if len(res.WaitEvents) > 0 {
		var parts []string
		for _, e := range res.WaitEvents[:min(len(res.WaitEvents), 6)] {
			parts = append(parts, fmt.Sprintf("%s %.1f%% (%.2f sessions)", e.Event, e.Percent, e.Sessions))
		}
		pf("pg waits:    active sessions, sampled every 10 ms: %s", strings.Join(parts, ", "))
	}
	for _, p := range res.SlowPlans {
		pf("slow plan:   %.1f ms (auto_explain):\n%s", p.Ms, strings.TrimRight(p.Plan, "\n"))
	}
	if l := res.Load; l != nil {
		line := fmt.Sprintf("machine:     %.0f%% busy over %.1fs (%.2f CPU-s, %.2f of it interrupts; steal %.2f s)",
			l.BusyPercent, l.WallSeconds, l.BusyCPUSeconds, l.IRQCPUSeconds, l.StealSeconds)
		if o := l.OtherCPUSeconds; o != nil {
			line += fmt.Sprintf("; other processes %.2f CPU-s", *o)
			if *o > 0.05*l.WallSeconds*float64(m.CPUs) {
				line += " (OTHER WORK ON THE MACHINE DISTORTS THESE NUMBERS)"
			}
		}
		pf("%s", line)
	}
	if res.ServerLogWarnings > 0 {
		pf("server log:  %d warnings; last lines:", res.ServerLogWarnings)
		for _, l := range res.ServerLogTail {
			pf("  %s", l)
		}
	}
	for _, wmsg := range res.Warnings {
		pf("warning:     %s", wmsg)
	}
	if res.OK {
		pf("result:      OK: every row delivered exactly once")
		return
	}
	pf("result:      FAILED")
	for _, prob := range res.Problems {
		pf("  !!! %s", prob)
	}
}

// bySecondLine is the text of the latency by second: p50/p99 of each
// second, ten to a line, then those from lateAfter on.
func bySecondLine(secs []SecondLatency, late *Latency) string {
	var b strings.Builder
	b.WriteString("by second:   p50/p99 ms of the rows sent in each second of the phase:")
	for i, s := range secs {
		if i%10 == 0 {
			b.WriteString("\n            ")
		}
		fmt.Fprintf(&b, " %ds %.1f/%.1f", s.Second, s.P50, s.P99)
	}
	if late != nil {
		fmt.Fprintf(&b, "\n             from %ds on: p50 %.3f  p99 %.3f  (%d samples)", int(lateAfter/time.Second), late.P50, late.P99, late.Samples)
	}
	return b.String()
}
