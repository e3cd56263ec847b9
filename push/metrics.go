package push

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the Server's Prometheus collectors, on a registry of its own so
// that several servers can live in one process (tests, bench). User ids are
// never labels: their number is unbounded.
type metrics struct {
	registry    *prometheus.Registry
	connections prometheus.GaugeFunc
	delivered   prometheus.Counter
	latency     prometheus.Histogram
	fetch       prometheus.Histogram
	listenerUp  prometheus.Gauge
	reconnects  prometheus.Counter
	catchUps    prometheus.Counter
	dropped     prometheus.Counter
	skipped     prometheus.Counter
	badHints    prometheus.Counter
	unverified  prometheus.Counter
	slowClosed  prometheus.Counter
	farClosed   prometheus.Counter
	resyncs     prometheus.Counter
	rejected    *prometheus.CounterVec
}

func newMetrics(connections func() float64) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		connections: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pgpush_connections", Help: "Open WebSocket connections.",
		}, connections),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgpush_events_delivered_total", Help: "created/updated/deleted frames written to clients, live or by a replay.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pgpush_delivery_latency_seconds",
			Help:    "From a notification's arrival at the listener (just after its commit) to its frame written to a client.",
			Buckets: []float64{.0005, .001, .002, .004, .008, .016, .032, .064, .128, .256, .512, 1, 2, 5},
		}),
		fetch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pgpush_fetch_duration_seconds",
			Help:    "Time to fetch the rows behind one batch of hints (rows the hints carry are not fetched).",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
		}),
		listenerUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pgpush_listener_connected", Help: "1 while the LISTEN connection is up.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgpush_listener_reconnects_total", Help: "Times the LISTEN connection was lost.",
		}),
		catchUps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgpush_catchups_total", Help: "Reads of missed rows from the table after a reconnect or overflow.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgpush_notifications_dropped_total", Help: "Notifications the listener dropped because the dispatcher's queue was full; every connection then catches up from the table, deletions included.",
		}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgpush_frames_skipped_total", Help: "Frames not written because the client held that version of the row already, and that unread count or a later frame of the same batch brings the count (a replay overlapping live frames).",
		}),
		badHints: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgpush_notifications_malformed_total", Help: "Notifications on the channel whose payload was not a pgpush hint.",
		}),
		unverified: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgpush_hints_unverified_total", Help: "Hints whose signature did not verify (the key was rotated, or a forged or altered payload); their rows and counts were read from the table instead.",
		}),
		slowClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgpush_slow_consumer_closes_total", Help: "Connections closed with 1013 because a write to them timed out (the client stopped reading).",
		}),
		farClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgpush_too_far_behind_closes_total", Help: "Connections closed with 1013 because catching them up from the table could not be exact or would be too long (deletions since their cursor pruned or truncated, or too many); the client resumes to a fresh snapshot.",
		}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgpush_resume_resyncs_total", Help: "Resumes too far behind to replay, answered with a fresh snapshot.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgpush_requests_rejected_total", Help: "Requests refused, by reason.",
		}, []string{"reason"}),
	}
	m.registry.MustRegister(m.connections, m.delivered, m.latency, m.fetch, m.listenerUp,
		m.reconnects, m.catchUps, m.dropped, m.skipped, m.badHints, m.unverified, m.slowClosed, m.farClosed, m.resyncs, m.rejected,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
