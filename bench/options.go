package bench

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Scenario names a kind of run.
type Scenario string

// The scenarios.
const (
	// Steady holds one WebSocket per user while writers insert one row per
	// transaction at a fixed, open-loop rate.
	Steady Scenario = "steady"
	// Burst inserts many rows with one statement and times their delivery.
	Burst Scenario = "burst"
	// Idle opens many connections that receive nothing, to measure the
	// server's memory per connection and the time to connect them all; one
	// row per connection then proves they are all live.
	Idle Scenario = "idle"
	// Fanout is Steady with several connections per user.
	Fanout Scenario = "fanout"
)

// CompareFloor is Options.Compare's baseline: a minimal forwarder (one
// LISTEN, the row itself in the NOTIFY payload, no fetch, no auth) on a table
// of its own; see ServeFloor.
const CompareFloor = "floor"

// Scenarios lists the scenarios in the order the CLI documents them.
var Scenarios = []Scenario{Steady, Burst, Idle, Fanout}

// Limits that keep every run bounded in memory and time.
const (
	maxConns      = 1_000_000
	maxRows       = 10_000_000
	maxDeliveries = 50_000_000
	maxDuration   = time.Hour
	maxBodySize   = 1 << 20
	// maxFloorBody keeps the floor's payload (the row as JSON) under
	// NOTIFY's 8,000 bytes.
	maxFloorBody = 7000
)

// Options configure a run. Start from Defaults(scenario); Validate says what
// is wrong.
type Options struct {
	Scenario Scenario

	// Users is how many users the run connects; ConnsPerUser is how many
	// WebSockets each holds. For Idle, Users is the number of connections
	// (one each).
	Users        int
	ConnsPerUser int

	// Writers, Rate and Duration drive Steady and Fanout: Writers
	// connections insert Rate rows per second in all, one row per
	// transaction, for Duration, at times fixed in advance (open loop).
	// A durable commit waits for the disk (2-5 ms on a shared machine's
	// virtual disk), so a writer sends a few hundred rows a second at most:
	// the default of 16 offers 2,000 rows/s where 4 could not offer 1,000.
	Writers  int
	Rate     float64
	Duration time.Duration
	// Rows is how many rows Burst inserts in one statement.
	Rows int
	// BodySize is the length in bytes of every row's body.
	BodySize int

	// Hold is how long Idle keeps its connections open before it reads the
	// server's memory.
	Hold time.Duration
	// DialConcurrency bounds the WebSocket handshakes in flight.
	DialConcurrency int
	// ConnsPerSourceAddr is how many connections share one source address
	// when the server is on an IPv4 loopback address: past it they spread
	// over 127.0.0.1, 127.0.0.2, … One source and destination pair has about
	// 28,000 ephemeral ports (32768-60999 by default).
	ConnsPerSourceAddr int
	// ConnectTimeout bounds the time to open every connection.
	ConnectTimeout time.Duration
	// DrainTimeout is how long, after the last row is committed, the run
	// waits for deliveries; rows missing then count as lost.
	DrainTimeout time.Duration

	// URL is a running server's base URL (http://127.0.0.1:8080). Empty
	// means self-contained: the run starts PostgreSQL and a server itself.
	URL string
	// DatabaseURL is the running server's database; the run inserts there.
	// Required with URL, refused without it.
	DatabaseURL string
	// JWTSecret signs the run's HS256 tokens; required with URL.
	JWTSecret string
	// JWTIssuer and JWTAudience go into the tokens when the server checks
	// them.
	JWTIssuer, JWTAudience string
	// ServerPID is the running server's process id, for CPU and memory
	// readings from /proc; 0 skips them.
	ServerPID int
	// KeepRows keeps the run's rows in a running server's table; by default
	// they are deleted at the end.
	KeepRows bool

	// ServerBinary is the pgpush binary a self-contained run executes as
	// `serve`. Empty means this process's own executable.
	ServerBinary string
	// ServerEnv is added to the self-contained server's environment, e.g.
	// PGPUSH_DB_MAX_CONNS=20.
	ServerEnv []string

	// Fast runs the self-contained cluster with fsync, synchronous_commit
	// and full_page_writes off. By default it keeps them on, as users run
	// PostgreSQL: commits then wait for the disk.
	Fast bool
	// History is how many older rows a self-contained run inserts for its
	// users before it measures (spread over the users, created over the
	// last 90 days, nine in ten unread), then vacuums and analyzes the
	// table. 0 measures a just-migrated table that was never analyzed.
	History int
	// Compare names a baseline that a self-contained run measures after
	// pgpush, with the same load on the same cluster: "" for none, or
	// CompareFloor.
	Compare string
	// PGProfile loads pg_stat_statements and auto_explain into the
	// self-contained cluster and reports, per measured phase, the
	// statements that cost PostgreSQL the most; auto_explain logs the plans
	// of statements slower than 5 ms to the cluster's log.
	PGProfile bool

	// Progress receives a progress line every ProgressInterval; nil or a
	// zero interval prints none.
	Progress         io.Writer
	ProgressInterval time.Duration
	// Logger receives setup events; nil discards them.
	Logger *slog.Logger
}

// Defaults returns the options of scenario at the sizes of the performance
// issue, or an error for an unknown scenario.
func Defaults(s Scenario) (Options, error) {
	o := Options{
		Scenario:           s,
		Users:              1000,
		ConnsPerUser:       1,
		Writers:            16,
		Rate:               2000,
		Duration:           20 * time.Second,
		Rows:               100_000,
		BodySize:           200,
		Hold:               5 * time.Second,
		DialConcurrency:    128,
		ConnsPerSourceAddr: 20_000,
		ConnectTimeout:     2 * time.Minute,
		DrainTimeout:       10 * time.Second,
		ProgressInterval:   time.Second,
	}
	switch s {
	case Steady, Burst:
	case Idle:
		o.Users = 10_000
	case Fanout:
		o.Users = 100
		o.ConnsPerUser = 10
	default:
		return Options{}, fmt.Errorf("unknown scenario %q: use %s", s, scenarioList())
	}
	return o, nil
}

func scenarioList() string {
	names := make([]string, len(Scenarios))
	for i, s := range Scenarios {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

// selfContained reports whether the run starts its own server.
func (o *Options) selfContained() bool { return o.URL == "" }

// conns is the number of WebSockets the run opens.
func (o *Options) conns() int { return o.Users * o.ConnsPerUser }

// rows is the number of rows the run means to insert.
func (o *Options) rows() int {
	switch o.Scenario {
	case Steady, Fanout:
		return int(o.Rate*o.Duration.Seconds() + 0.5)
	case Idle:
		return o.Users
	default:
		return o.Rows
	}
}

// Validate reports every invalid option.
func (o *Options) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, err := Defaults(o.Scenario); err != nil {
		return err
	}
	if o.Users < 1 || o.Users > maxConns {
		bad("users must be from 1 to %d", maxConns)
	}
	if o.ConnsPerUser < 1 || o.ConnsPerUser > 10_000 {
		bad("connections per user must be from 1 to 10000")
	}
	if o.conns() > maxConns {
		bad("%d connections is more than the %d a run opens at most", o.conns(), maxConns)
	}
	if o.BodySize < 0 || o.BodySize > maxBodySize {
		bad("body size must be from 0 to %d bytes", maxBodySize)
	}
	switch o.Scenario {
	case Steady, Fanout:
		if o.Writers < 1 || o.Writers > 256 {
			bad("writers must be from 1 to 256")
		}
		if !(o.Rate > 0 && o.Rate <= 1e6) {
			bad("rate must be above 0 and at most 1000000 rows/s")
		}
		if o.Duration <= 0 || o.Duration > maxDuration {
			bad("duration must be positive and at most %s", maxDuration)
		}
	case Burst:
		if o.Rows < 1 {
			bad("rows must be at least 1")
		}
	case Idle:
		if o.ConnsPerUser != 1 {
			bad("idle opens one connection per user")
		}
		if o.Hold < 0 || o.Hold > maxDuration {
			bad("hold must be from 0 to %s", maxDuration)
		}
	}
	if n := o.rows(); n < 1 || n > maxRows {
		bad("the run would insert %d rows; it must be from 1 to %d", n, maxRows)
	} else if d := int64(n) * int64(o.ConnsPerUser); d > maxDeliveries {
		bad("the run would expect %d deliveries, more than %d", d, maxDeliveries)
	}
	if o.DialConcurrency < 1 || o.DialConcurrency > 10_000 {
		bad("dial concurrency must be from 1 to 10000")
	}
	if o.ConnsPerSourceAddr < 1 || o.ConnsPerSourceAddr > 28_000 {
		bad("connections per source address must be from 1 to 28000")
	}
	if o.ConnectTimeout <= 0 || o.ConnectTimeout > maxDuration {
		bad("connect timeout must be positive and at most %s", maxDuration)
	}
	if o.DrainTimeout <= 0 || o.DrainTimeout > maxDuration {
		bad("drain timeout must be positive and at most %s", maxDuration)
	}
	if o.History < 0 || o.History > maxRows {
		bad("history must be from 0 to %d rows", maxRows)
	}
	switch o.Compare {
	case "":
	case CompareFloor:
		if o.BodySize > maxFloorBody {
			bad("--compare floor carries each row in its NOTIFY payload, which holds 8,000 bytes: body size must be at most %d", maxFloorBody)
		}
	default:
		bad("compare %q: the only baseline is %q", o.Compare, CompareFloor)
	}
	if o.selfContained() {
		if o.DatabaseURL != "" || o.ServerPID != 0 {
			bad("--database-url and --server-pid go with --url; without --url the run starts its own server")
		}
	} else {
		if o.Fast || o.History > 0 || o.Compare != "" || o.PGProfile {
			bad("--fast, --history, --compare and --pg-profile shape the cluster a self-contained run starts; a server at --url runs on its own database")
		}
		if err := checkServerURL(o.URL); err != nil {
			bad("url: %w", err)
		}
		if o.DatabaseURL == "" {
			bad("--database-url (DATABASE_URL) is required with --url: the run inserts the rows itself")
		} else if err := checkDatabaseURL(o.DatabaseURL); err != nil {
			bad("database url: %w", err)
		}
		if o.JWTSecret == "" {
			bad("--jwt-secret (PGPUSH_JWT_SECRET) is required with --url: the run signs its users' tokens")
		}
		if o.ServerPID < 0 {
			bad("server pid must be positive")
		}
		if len(o.ServerEnv) > 0 {
			bad("--server-env applies to the server a self-contained run starts, not to one at --url")
		}
	}
	return errors.Join(errs...)
}

// checkServerURL accepts http URLs of loopback hosts only: a load generator
// pointed at a shared machine by mistake does real harm.
func checkServerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "http" {
		return fmt.Errorf("%q: use http://host:port (loopback only)", s)
	}
	return checkLoopback(u.Hostname())
}

func checkDatabaseURL(s string) error {
	cfg, err := pgconn.ParseConfig(s)
	if err != nil {
		// The message may quote a password: do not repeat it.
		return errors.New("not a valid PostgreSQL URL or keyword string")
	}
	hosts := []string{cfg.Host}
	for _, f := range cfg.Fallbacks {
		hosts = append(hosts, f.Host)
	}
	for _, h := range hosts {
		if strings.HasPrefix(h, "/") {
			continue // a Unix socket is local
		}
		if err := checkLoopback(h); err != nil {
			return err
		}
	}
	return nil
}

func checkLoopback(host string) error {
	if host == "" {
		return errors.New("no host")
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("host %q is not a loopback address; bench sends traffic to this machine only", host)
	}
	return nil
}
