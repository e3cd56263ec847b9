package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgpush/pgpush/db/pgcluster"
	"github.com/pgpush/pgpush/migrations"
)

const (
	// benchDatabase is the database a self-contained run creates.
	benchDatabase = "pgpush_bench"
	// readyTimeout bounds the wait for a server's /readyz.
	readyTimeout = 30 * time.Second
	// stopTimeout bounds a self-contained server's shutdown before it is
	// killed.
	stopTimeout = 15 * time.Second
	// serverLogTail is how much of a self-contained server's log is kept.
	serverLogTail = 64 << 10
)

// target is the server and database a run measures.
type target struct {
	selfContained bool
	baseURL       *url.URL
	databaseURL   string
	secret        []byte
	issuer        string
	audience      string
	serverPID     int               // 0: no /proc readings of the server
	postmaster    int               // 0: no /proc readings of PostgreSQL
	pgVersion     string            // server_version
	pgSettings    map[string]string // durabilitySettings as the server reports them
	pool          *pgxpool.Pool

	cluster *pgcluster.Cluster // self-contained only
	logPath string             // the cluster's server log; self-contained only
	server  *serverProcess     // self-contained only
}

// startTarget starts, or checks, what the run measures. A self-contained
// run calls prepare (if not nil) on the migrated database before it starts
// the server. On error nothing is left running.
func startTarget(ctx context.Context, o *Options, logger *slog.Logger, prepare func(context.Context, *pgxpool.Pool) error) (_ *target, err error) {
	t := &target{selfContained: o.selfContained()}
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	if t.selfContained {
		if err := t.startSelfContained(ctx, o, logger, prepare); err != nil {
			return nil, err
		}
	} else {
		if t.baseURL, err = url.Parse(strings.TrimSuffix(o.URL, "/")); err != nil {
			return nil, err
		}
		t.databaseURL = o.DatabaseURL
		t.secret = []byte(o.JWTSecret)
		t.issuer, t.audience = o.JWTIssuer, o.JWTAudience
		t.serverPID = o.ServerPID
		if t.serverPID != 0 {
			if _, err := readProcStat(t.serverPID); err != nil {
				return nil, fmt.Errorf("--server-pid %d: %w", t.serverPID, err)
			}
		}
		if err := waitReady(ctx, t.baseURL, nil); err != nil {
			return nil, err
		}
	}

	if t.pool == nil {
		cfg, err := pgxpool.ParseConfig(t.databaseURL)
		if err != nil {
			return nil, errors.New("database url: not a valid PostgreSQL URL or keyword string")
		}
		cfg.MaxConns = 2
		if t.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
			return nil, fmt.Errorf("database: %w", err)
		}
	}
	if err := migrations.Check(ctx, t.pool); err != nil {
		return nil, err
	}
	if err := t.describe(ctx, logger); err != nil {
		return nil, err
	}
	return t, nil
}

// durabilitySettings are the settings that decide whether a commit survives
// an OS crash, and what each costs a commit.
var durabilitySettings = []string{"fsync", "synchronous_commit", "full_page_writes"}

// describe reads the server's version, durability settings and postmaster.
func (t *target) describe(ctx context.Context, logger *slog.Logger) error {
	return t.pool.AcquireFunc(ctx, func(c *pgxpool.Conn) error {
		if err := c.QueryRow(ctx, "SHOW server_version").Scan(&t.pgVersion); err != nil {
			return fmt.Errorf("database: %w", err)
		}
		t.pgSettings = make(map[string]string, len(durabilitySettings))
		for _, name := range durabilitySettings {
			var v string
			if err := c.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
				return fmt.Errorf("database: %s: %w", name, err)
			}
			t.pgSettings[name] = v
		}
		pm, err := findPostmaster(ctx, c.Conn())
		if err != nil {
			logger.Info("no PostgreSQL CPU readings", "reason", err)
		}
		t.postmaster = pm
		return nil
	})
}

// durable reports whether the settings describe make a commit survive an
// OS crash: fsync and full_page_writes on, synchronous_commit not off.
func (t *target) durable() bool {
	s := t.pgSettings
	return s["fsync"] == "on" && s["full_page_writes"] == "on" && s["synchronous_commit"] != "off"
}

// clusterSettings are the self-contained cluster's settings besides
// pgcluster's defaults.
func clusterSettings(o *Options) map[string]string {
	if !o.PGProfile {
		return nil
	}
	return map[string]string{
		"shared_preload_libraries":           "pg_stat_statements,auto_explain",
		"pg_stat_statements.track":           "all", // the trigger functions' statements too
		"pg_stat_statements.track_planning":  "on",
		"auto_explain.log_min_duration":      "5ms",
		"auto_explain.log_nested_statements": "on",
	}
}

func (t *target) startSelfContained(ctx context.Context, o *Options, logger *slog.Logger, prepare func(context.Context, *pgxpool.Pool) error) error {
	bin, err := serverBinary(o)
	if err != nil {
		return err
	}
	// Durable unless --fast: a cluster without fsync flatters insert
	// latency and hides what a commit costs, so the output says which.
	c, err := pgcluster.Start(ctx, pgcluster.Options{Logger: logger, Durable: !o.Fast, Settings: clusterSettings(o)})
	if err != nil {
		return fmt.Errorf("start PostgreSQL: %w", err)
	}
	t.cluster = c
	t.logPath = c.LogFile()
	if err := c.CreateDatabase(ctx, benchDatabase, ""); err != nil {
		return err
	}
	t.databaseURL = c.URL(benchDatabase)
	if t.pool, err = pgxpool.New(ctx, t.databaseURL); err != nil {
		return fmt.Errorf("database: %w", err)
	}
	if err := migrations.Up(ctx, t.pool, logger); err != nil {
		return err
	}
	if o.PGProfile {
		if _, err := t.pool.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
			return fmt.Errorf("pg_stat_statements: %w", err)
		}
	}
	if prepare != nil {
		if err := prepare(ctx, t.pool); err != nil {
			return err
		}
	}

	t.secret = make([]byte, 32)
	rand.Read(t.secret)
	t.secret = []byte(hex.EncodeToString(t.secret))
	port, err := pgcluster.FreePort()
	if err != nil {
		return err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	t.baseURL = &url.URL{Scheme: "http", Host: addr}

	env := []string{
		"DATABASE_URL=" + t.databaseURL,
		"PGPUSH_JWT_SECRET=" + string(t.secret),
		"PGPUSH_MAX_CONNS_PER_USER=" + strconv.Itoa(max(32, o.ConnsPerUser)),
		"PGPUSH_MAX_CONNS=" + strconv.Itoa(max(100_000, o.conns()+1000)),
		"PGPUSH_LOG_LEVEL=warn",
	}
	env = append(env, o.ServerEnv...)
	t.server, err = startServer(bin, []string{"serve", "--addr", addr}, env)
	if err != nil {
		return err
	}
	t.serverPID = t.server.cmd.Process.Pid
	logger.Info("pgpush server started", "pid", t.serverPID, "addr", addr, "binary", bin)
	return waitReady(ctx, t.baseURL, t.server)
}

// serverBinary is the pgpush binary a self-contained run executes.
func serverBinary(o *Options) (string, error) {
	if o.ServerBinary != "" {
		return o.ServerBinary, nil
	}
	bin, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find the pgpush binary: %w", err)
	}
	return bin, nil
}

// stopServer stops a self-contained run's server, leaving PostgreSQL
// running. It is idempotent.
func (t *target) stopServer() error {
	if t.server == nil {
		return nil
	}
	err := t.server.stop()
	t.server, t.serverPID = nil, 0
	return err
}

// close stops what startTarget started. It is idempotent.
func (t *target) close() error {
	errs := []error{t.stopServer()}
	if t.pool != nil {
		t.pool.Close()
		t.pool = nil
	}
	if t.cluster != nil {
		errs = append(errs, t.cluster.Close())
		t.cluster = nil
	}
	return errors.Join(errs...)
}

// wsURL is the WebSocket endpoint with token in the query.
func (t *target) wsURL(token string) string {
	return "ws://" + t.baseURL.Host + "/v1/ws?token=" + url.QueryEscape(token)
}

// serverProcess is a pgpush server this run started.
type serverProcess struct {
	cmd  *exec.Cmd
	log  *tailBuffer
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // its exit status; read after done
}

func startServer(bin string, args, extraEnv []string) (*serverProcess, error) {
	cmd := exec.Command(bin, args...)
	// The caller's own DATABASE_URL and PGPUSH_* settings are not the
	// throwaway cluster's: drop them.
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "DATABASE_URL=") || strings.HasPrefix(kv, "PGPUSH_") {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, extraEnv...)
	log := &tailBuffer{max: serverLogTail}
	cmd.Stdout, cmd.Stderr = log, log
	// If the bench dies, so does its server (see pgcluster for the caveat
	// about the forking thread; bench locks no threads).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s %s: %w", bin, args[0], err)
	}
	p := &serverProcess{cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// stop asks the server to drain (SIGTERM) and kills it if it takes too long.
func (p *serverProcess) stop() error {
	select {
	case <-p.done:
		return fmt.Errorf("pgpush server had exited on its own (%v); its log:\n%s", p.err, p.log)
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("pgpush server did not stop within %s of SIGTERM; killed it", stopTimeout)
	}
}

// waitReady polls /readyz until it answers 200, the server exits or the
// wait times out.
func waitReady(ctx context.Context, base *url.URL, p *serverProcess) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	readyz := base.JoinPath("/readyz").String()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, readyz, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		var exited <-chan struct{}
		if p != nil {
			exited = p.done
		}
		select {
		case <-exited:
			return fmt.Errorf("pgpush server exited while starting (%v); its log:\n%s", p.err, p.log)
		case <-ctx.Done():
			msg := fmt.Sprintf("server at %s not ready within %s (last answer: %s)", base, readyTimeout, last)
			if p != nil {
				msg += "; its log:\n" + p.log.String()
			}
			return errors.New(msg)
		case <-tick.C:
		}
	}
}

// tailBuffer keeps the last max bytes written to it. It is safe for
// concurrent use.
type tailBuffer struct {
	max int

	mu       sync.Mutex
	b        []byte
	warnings int // lines logged at WARN or ERROR
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.warnings += strings.Count(string(p), "level=WARN") + strings.Count(string(p), "level=ERROR")
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// warningCount returns how many WARN and ERROR lines were written.
func (t *tailBuffer) warningCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.warnings
}

// lastLines returns up to n of the last lines written.
func (t *tailBuffer) lastLines(n int) []string {
	lines := strings.Split(strings.TrimRight(t.String(), "\n"), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return nil
	}
	return lines[max(0, len(lines)-n):]
}
