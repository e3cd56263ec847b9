package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ServerMetrics are differences of the server's own Prometheus counters over
// the measured phase. They split the latency: DeliveryMeanMs is the part
// inside the server (NOTIFY received → frame written), FetchMeanMs the part
// of it spent reading rows; the rest is the INSERT and commit before, and the
// network and client after.
type ServerMetrics struct {
	EventsDelivered      float64 `json:"events_delivered"`
	DeliveryMeanMs       float64 `json:"delivery_mean_ms"`
	Fetches              float64 `json:"fetches"`
	FetchMeanMs          float64 `json:"fetch_mean_ms"`
	NotificationsDropped float64 `json:"notifications_dropped"`
	CatchUps             float64 `json:"catch_ups"`
	SlowConsumerCloses   float64 `json:"slow_consumer_closes"`
}

// metricNames are the series bench reads from /metrics.
var metricNames = []string{
	"pgpush_events_delivered_total",
	"pgpush_delivery_latency_seconds_sum",
	"pgpush_delivery_latency_seconds_count",
	"pgpush_fetch_duration_seconds_sum",
	"pgpush_fetch_duration_seconds_count",
	"pgpush_notifications_dropped_total",
	"pgpush_catchups_total",
	"pgpush_slow_consumer_closes_total",
}

// scrapeMetrics reads the unlabelled series bench needs from /metrics. It
// returns nil if the server does not expose them.
func (t *target) scrapeMetrics(ctx context.Context) map[string]float64 {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.baseURL.JoinPath("/metrics").String(), nil)
	if err != nil {
		return nil
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	want := make(map[string]bool, len(metricNames))
	for _, n := range metricNames {
		want[n] = true
	}
	got := make(map[string]float64, len(metricNames))
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || !want[name] {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			got[name] = v
		}
	}
	if sc.Err() != nil || len(got) != len(metricNames) {
		return nil
	}
	return got
}

// serverMetrics is the difference between two scrapes.
func serverMetrics(before, after map[string]float64) *ServerMetrics {
	if before == nil || after == nil {
		return nil
	}
	d := func(name string) float64 { return after[name] - before[name] }
	meanMs := func(prefix string) float64 {
		n := d(prefix + "_count")
		if n == 0 {
			return 0
		}
		v, _ := strconv.ParseFloat(fmt.Sprintf("%.3f", d(prefix+"_sum")/n*1e3), 64)
		return v
	}
	return &ServerMetrics{
		EventsDelivered:      d("pgpush_events_delivered_total"),
		DeliveryMeanMs:       meanMs("pgpush_delivery_latency_seconds"),
		Fetches:              d("pgpush_fetch_duration_seconds_count"),
		FetchMeanMs:          meanMs("pgpush_fetch_duration_seconds"),
		NotificationsDropped: d("pgpush_notifications_dropped_total"),
		CatchUps:             d("pgpush_catchups_total"),
		SlowConsumerCloses:   d("pgpush_slow_consumer_closes_total"),
	}
}
