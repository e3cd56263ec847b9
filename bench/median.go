package bench

import (
	"fmt"
	"io"
	"slices"
)

// Median holds, for several runs of one scenario, the median of each figure
// the README's performance table reports (taken figure by figure, so its
// numbers may come from different runs), with the smallest and largest.
// A figure no run has is nil.
type Median struct {
	Scenario Scenario `json:"scenario"`
	Runs     int      `json:"runs"`
	// OK is true when every run was.
	OK bool `json:"ok"`

	Delivered  *Spread `json:"delivered,omitempty"`
	Lost       *Spread `json:"lost,omitempty"`
	Duplicated *Spread `json:"duplicated,omitempty"`

	LatencyP50  *Spread `json:"latency_p50_ms,omitempty"`
	LatencyP90  *Spread `json:"latency_p90_ms,omitempty"`
	LatencyP99  *Spread `json:"latency_p99_ms,omitempty"`
	LatencyP999 *Spread `json:"latency_p99_9_ms,omitempty"`
	LatencyMax  *Spread `json:"latency_max_ms,omitempty"`

	StatementMs *Spread `json:"statement_ms,omitempty"`
	FirstMs     *Spread `json:"first_ms,omitempty"`
	LastMs      *Spread `json:"last_ms,omitempty"`

	ServerCPUSeconds   *Spread `json:"server_cpu_seconds,omitempty"`
	ServerPeakRSSMiB   *Spread `json:"server_peak_rss_mib,omitempty"`
	PostgresCPUSeconds *Spread `json:"postgres_cpu_seconds,omitempty"`
	ConnectSeconds     *Spread `json:"connect_seconds,omitempty"`
	RSSPerConnKiB      *Spread `json:"rss_per_conn_kib,omitempty"`

	// Floor is the same summary of the runs' floors (--compare floor).
	Floor *Median `json:"floor,omitempty"`
}

// Spread is a median with the range it comes from.
type Spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// spreadOf summarises the values get finds in results (ok false: none).
func spreadOf(results []*Result, get func(*Result) (float64, bool)) *Spread {
	var v []float64
	for _, r := range results {
		if x, ok := get(r); ok {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return nil
	}
	slices.Sort(v)
	m := v[len(v)/2]
	if len(v)%2 == 0 {
		m = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return &Spread{Median: m, Min: v[0], Max: v[len(v)-1]}
}

// from reads figure f of the part of a result that part returns; a result
// without that part (nil) has no such figure.
func from[T any](part func(*Result) *T, f func(*T) float64) func(*Result) (float64, bool) {
	return func(r *Result) (float64, bool) {
		if p := part(r); p != nil {
			return f(p), true
		}
		return 0, false
	}
}

// MedianOf summarises runs of one scenario; it returns nil for none.
func MedianOf(results []*Result) *Median {
	if len(results) == 0 {
		return nil
	}
	m := &Median{Scenario: results[0].Scenario, Runs: len(results), OK: true}
	for _, r := range results {
		m.OK = m.OK && r.OK
	}
	all := func(get func(*Result) float64) func(*Result) (float64, bool) {
		return func(r *Result) (float64, bool) { return get(r), true }
	}
	m.Delivered = spreadOf(results, all(func(r *Result) float64 { return float64(r.Delivered) }))
	m.Lost = spreadOf(results, all(func(r *Result) float64 { return float64(r.Lost) }))
	m.Duplicated = spreadOf(results, all(func(r *Result) float64 { return float64(r.Duplicated) }))
	m.ConnectSeconds = spreadOf(results, all(func(r *Result) float64 { return r.ConnectSeconds }))

	latency := func(r *Result) *Latency { return r.LatencyMs }
	m.LatencyP50 = spreadOf(results, from(latency, func(l *Latency) float64 { return l.P50 }))
	m.LatencyP90 = spreadOf(results, from(latency, func(l *Latency) float64 { return l.P90 }))
	m.LatencyP99 = spreadOf(results, from(latency, func(l *Latency) float64 { return l.P99 }))
	m.LatencyP999 = spreadOf(results, from(latency, func(l *Latency) float64 { return l.P999 }))
	m.LatencyMax = spreadOf(results, from(latency, func(l *Latency) float64 { return l.Max }))

	burst := func(r *Result) *BurstStats { return r.Burst }
	m.StatementMs = spreadOf(results, from(burst, func(b *BurstStats) float64 { return b.StatementMs }))
	m.FirstMs = spreadOf(results, from(burst, func(b *BurstStats) float64 { return b.FirstMs }))
	m.LastMs = spreadOf(results, from(burst, func(b *BurstStats) float64 { return b.LastMs }))

	server := func(r *Result) *ServerStats { return r.Server }
	m.ServerCPUSeconds = spreadOf(results, from(server, func(s *ServerStats) float64 { return s.CPUSeconds }))
	m.ServerPeakRSSMiB = spreadOf(results, from(server, func(s *ServerStats) float64 { return s.PeakRSSMiB }))
	m.PostgresCPUSeconds = spreadOf(results, from(func(r *Result) *PostgresStats { return r.Postgres },
		func(p *PostgresStats) float64 { return p.CPUSeconds }))
	m.RSSPerConnKiB = spreadOf(results, from(func(r *Result) *float64 { return r.RSSPerConnKiB },
		func(v *float64) float64 { return *v }))
	var floors []*Result
	for _, r := range results {
		if r.Floor != nil {
			floors = append(floors, r.Floor)
		}
	}
	m.Floor = MedianOf(floors)
	return m
}

// WriteSummary writes m for people, one figure per line, and then its
// floor's.
func (m *Median) WriteSummary(w io.Writer) {
	m.write(w, "pgpush")
	if m.Floor != nil {
		m.Floor.write(w, "the floor")
	}
}

func (m *Median) write(w io.Writer, target string) {
	fmt.Fprintf(w, "pgpush bench %s of %s: medians of %d runs [min–max]\n", m.Scenario, target, m.Runs)
	line := func(name, unit string, s *Spread, decimals int) {
		if s == nil {
			return
		}
		fmt.Fprintf(w, "  %-22s %.*f%s [%.*f–%.*f]\n", name, decimals, s.Median, unit, decimals, s.Min, decimals, s.Max)
	}
	line("delivered", "", m.Delivered, 0)
	line("lost", "", m.Lost, 0)
	line("duplicated", "", m.Duplicated, 0)
	line("latency p50", " ms", m.LatencyP50, 3)
	line("latency p90", " ms", m.LatencyP90, 3)
	line("latency p99", " ms", m.LatencyP99, 3)
	line("latency p99.9", " ms", m.LatencyP999, 3)
	line("latency max", " ms", m.LatencyMax, 3)
	line("statement", " ms", m.StatementMs, 1)
	line("first row", " ms", m.FirstMs, 1)
	line("last row", " ms", m.LastMs, 1)
	line("server CPU", " s", m.ServerCPUSeconds, 2)
	line("server peak RSS", " MiB", m.ServerPeakRSSMiB, 1)
	line("PostgreSQL CPU", " s", m.PostgresCPUSeconds, 2)
	line("connect", " s", m.ConnectSeconds, 2)
	line("RSS per connection", " KiB", m.RSSPerConnKiB, 1)
	if m.OK {
		fmt.Fprintln(w, "result: OK in every run")
	} else {
		fmt.Fprintln(w, "result: FAILED in at least one run")
	}
}
