package push

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path"
	"strings"
	"time"
)

// Config configures a Server. The zero value of every field means its
// default, filled in by New; Validate says what is wrong with a value.
type Config struct {
	// AllowedOrigins are host patterns (path.Match syntax, e.g.
	// "app.example.com", "*.example.com", or with a scheme,
	// "https://app.example.com") allowed as the Origin of a WebSocket
	// upgrade and for CORS on the HTTP API. A host pattern without a port
	// does not match an origin with one. Same-origin upgrades and requests
	// without an Origin (non-browser clients) are always allowed; a foreign
	// origin's upgrade gets a 403. Empty: same origin only. A pattern that
	// matches any host ("*", "*.*") is refused: it would let every web site
	// open sockets with a token it got hold of.
	AllowedOrigins []string

	// MaxConnsPerUser caps the concurrent WebSockets one user may hold on this
	// node. Default 32.
	MaxConnsPerUser int
	// MaxConns caps the WebSockets this node holds. Default 100,000.
	MaxConns int

	// QueueMessages and QueueBytes bound a connection's queue of frames not
	// yet written. A connection past either falls behind: it takes no more
	// frames until its writer has written the queue, then catches up from
	// the table (rows and deletions) at its client's pace. A client that
	// stops reading is closed with 1013 when a write times out (see
	// WriteTimeout). Defaults 1,024 messages and 8 MiB.
	QueueMessages int
	QueueBytes    int

	// WriteTimeout bounds each write to a client. Default 10s.
	WriteTimeout time.Duration
	// PingInterval is how often the server pings an idle client to find dead
	// connections. Default 30s.
	PingInterval time.Duration

	// ReadLimit caps an inbound client frame; past it the connection closes
	// with 1009. Default 16 KiB (a fresh token fits).
	ReadLimit int64
	// MaxReadIDs caps the ids of one "read" message or request. Default 1,000.
	MaxReadIDs int
	// MessageRate and MessageBurst bound client messages per connection
	// (token bucket): past them the client gets an "error", and a client that
	// keeps going is closed with 1008. Defaults 20/s and 60.
	MessageRate  float64
	MessageBurst int

	// ReplayLimit caps the changes (rows and deletions) replayed to one
	// reconnecting client. A client further behind gets a fresh snapshot
	// instead (its ready frame carries "resync": true). Default 1,000.
	ReplayLimit int
	// DeletionsRetention is how long deletions stay recorded in
	// notifications_deleted for clients that were offline. A client that
	// resumes with an older cursor gets a fresh snapshot. The server prunes
	// the table every PruneInterval. Defaults 7 days and 5 minutes.
	DeletionsRetention time.Duration
	PruneInterval      time.Duration
	// ReplayPages caps the replay pages (up to 128 rows each) that this
	// node's connections hold at once, read from the table and not yet
	// written: a burst for many users is caught up that many pages at a
	// time, so its memory does not grow with the users (a page of 200-byte
	// rows takes ~160 KiB). Default 256.
	ReplayPages int

	// HeartbeatInterval is how often the node sends itself a NOTIFY to prove
	// its LISTEN connection works; a listener that misses heartbeats for
	// 3 intervals is reconnected. Default 2s.
	HeartbeatInterval time.Duration
	// ReconnectMin and ReconnectMax bound the listener's exponential,
	// jittered reconnect backoff. Defaults 100ms and 10s.
	ReconnectMin, ReconnectMax time.Duration

	// StatementTimeout bounds every query pgpush runs. Default 10s.
	StatementTimeout time.Duration

	// RequestReadTimeout bounds the reading of an HTTP request body, so a
	// client that trickles one (slowloris) cannot hold a connection and a
	// handler; past it the request gets a 408. The http.Server's
	// ReadHeaderTimeout bounds the headers. Default 10s.
	RequestReadTimeout time.Duration

	// Logger receives structured logs. Default: discard.
	Logger *slog.Logger

	// batchItems overrides maxBatchItems in tests (0: the default), to cut
	// a transaction's hints into batches of its choosing; dispatchQueue the
	// dispatcher's queue of 1,024 notifications, to make the listener drop.
	batchItems    int
	dispatchQueue int
}

func (c *Config) setDefaults() {
	setDefault(&c.MaxConnsPerUser, 32)
	setDefault(&c.MaxConns, 100_000)
	setDefault(&c.QueueMessages, 1024)
	setDefault(&c.QueueBytes, 8<<20)
	setDefault(&c.WriteTimeout, 10*time.Second)
	setDefault(&c.PingInterval, 30*time.Second)
	setDefault(&c.ReadLimit, 16<<10)
	setDefault(&c.MaxReadIDs, 1000)
	setDefault(&c.MessageRate, 20)
	setDefault(&c.MessageBurst, 60)
	setDefault(&c.ReplayLimit, 1000)
	setDefault(&c.ReplayPages, 256)
	setDefault(&c.DeletionsRetention, 7*24*time.Hour)
	setDefault(&c.PruneInterval, 5*time.Minute)
	setDefault(&c.HeartbeatInterval, 2*time.Second)
	setDefault(&c.ReconnectMin, 100*time.Millisecond)
	setDefault(&c.ReconnectMax, 10*time.Second)
	setDefault(&c.StatementTimeout, 10*time.Second)
	setDefault(&c.RequestReadTimeout, 10*time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// Validate reports every invalid field.
func (c *Config) Validate() error {
	var errs []error
	positive := func(name string, ok bool) {
		if !ok {
			errs = append(errs, fmt.Errorf("%s must not be negative (0 means the default)", name))
		}
	}
	positive("MaxConnsPerUser", c.MaxConnsPerUser >= 0)
	positive("MaxConns", c.MaxConns >= 0)
	positive("QueueMessages", c.QueueMessages >= 0)
	positive("QueueBytes", c.QueueBytes >= 0)
	positive("WriteTimeout", c.WriteTimeout >= 0)
	positive("PingInterval", c.PingInterval >= 0)
	positive("ReadLimit", c.ReadLimit >= 0)
	positive("MaxReadIDs", c.MaxReadIDs >= 0)
	positive("MessageRate", c.MessageRate >= 0)
	positive("MessageBurst", c.MessageBurst >= 0)
	positive("ReplayLimit", c.ReplayLimit >= 0)
	positive("ReplayPages", c.ReplayPages >= 0)
	positive("DeletionsRetention", c.DeletionsRetention >= 0)
	positive("PruneInterval", c.PruneInterval >= 0)
	positive("HeartbeatInterval", c.HeartbeatInterval >= 0)
	positive("StatementTimeout", c.StatementTimeout >= 0)
	positive("RequestReadTimeout", c.RequestReadTimeout >= 0)
	if c.ReconnectMax != 0 && c.ReconnectMin > c.ReconnectMax {
		errs = append(errs, errors.New("ReconnectMin must not exceed ReconnectMax"))
	}
	for _, p := range c.AllowedOrigins {
		if err := checkOriginPattern(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// anyOrigins are origins no allow-list means to name: a pattern matching one
// of them matches (nearly) every site.
var anyOrigins = []string{"http://a", "https://a.b", "https://a.b.c", "http://a.b:1", "https://a.b.c:1"}

// checkOriginPattern says what is wrong with one AllowedOrigins pattern.
func checkOriginPattern(p string) error {
	if strings.TrimSpace(p) == "" {
		return errors.New("AllowedOrigins has an empty pattern")
	}
	if _, err := path.Match(p, ""); err != nil {
		return fmt.Errorf("AllowedOrigins pattern %q is not a valid pattern (path.Match syntax)", p)
	}
	for _, o := range anyOrigins {
		u, _ := url.Parse(o)
		if originMatches(p, u) {
			return fmt.Errorf("AllowedOrigins pattern %q matches any site, which would let every web page use "+
				"your users' tokens; list the hosts, e.g. app.example.com or *.example.com", p)
		}
	}
	return nil
}
