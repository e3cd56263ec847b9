// Package pgcluster starts throwaway PostgreSQL clusters from the machine's
// PostgreSQL server binaries, for tests, `pgpush dev` and `pgpush bench`.
//
// A cluster lives in a folder of its own (data directory, server log, Unix
// socket), listens on 127.0.0.1 only and lets the superuser "postgres" in
// without a password. It is for local, disposable data only.
//
// PostgreSQL refuses to run as root. When this process is root, initdb and
// postgres run as the OS user "postgres" if it exists, else as "nobody", and
// the cluster's folder is handed to that user; Options.Dir and its ancestors
// must then be enterable by that user (os.TempDir is; a t.TempDir, mode 0700,
// is not).
//
// postgres runs as a direct child of this process, not under pg_ctl, and the
// kernel kills it if this process dies, so a crashed test or dev session
// leaves no server behind (its folder does stay behind in that case).
package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrClosed is returned by Cluster.Start and Cluster.Restart after Close.
var ErrClosed = errors.New("pgcluster: cluster is closed")

// errPortInUse marks a start that failed because another process holds the
// port; Start then retries on another port if it chose the port itself.
var errPortInUse = errors.New("port already in use")

const (
	// defaultReadyTimeout bounds a start whose context has no deadline.
	defaultReadyTimeout = time.Minute
	// pollInterval is how often a starting server is probed.
	pollInterval = 20 * time.Millisecond
	// closeTimeout bounds the fast shutdown in Close before postgres is killed.
	closeTimeout = 30 * time.Second
	// portAttempts is how many free ports Start tries when it picks them.
	portAttempts = 5
	// logName is the server log's file name in the cluster's folder.
	logName = "postgres.log"
)

// Options configure a cluster. The zero value is a fast, non-durable cluster
// in os.TempDir on a free port.
type Options struct {
	// Dir is the folder in which the cluster's own folder is made; it
	// defaults to os.TempDir(). When this process is root, the server's OS
	// user must be able to enter it (see the package documentation).
	Dir string
	// Port is the TCP port on 127.0.0.1 to listen on; 0 picks a free one.
	Port int
	// Logger receives start and stop events; nil discards them. The
	// server's own log goes to a file in the cluster's folder (LogFile).
	Logger *slog.Logger
	// Settings are extra postgresql.conf settings, such as "work_mem":
	// "16MB". They override pgcluster's defaults (max_connections=500,
	// shared_buffers=64MB, and, unless Durable, fsync, synchronous_commit
	// and full_page_writes off). "port" is not allowed: use Port.
	Settings map[string]string
	// Durable keeps PostgreSQL's crash-safety settings. By default they are
	// off, which makes commits and CREATE DATABASE much faster; an OS crash
	// can then corrupt the cluster, which for throwaway data does not matter.
	Durable bool
}

// Cluster is a PostgreSQL server started by Start. It is safe for concurrent
// use: Start, Stop, Restart and Close are serialised, and the other methods
// may be called at any time.
type Cluster struct {
	bins    binaries
	user    *serverUser // nil when the server runs as this process's user
	dir     string      // the cluster's folder
	dataDir string
	logPath string
	port    int // fixed once Start returns
	logger  *slog.Logger

	mu     sync.Mutex
	proc   *process // nil when stopped
	closed bool
}

// process is one run of postgres.
type process struct {
	os   *os.Process
	done chan struct{} // closed once postgres has exited and been reaped
	err  error         // its exit status; read only after done is closed
}

// Start creates a new cluster with initdb, starts postgres and returns once
// it accepts connections. ctx bounds the whole start; without a deadline the
// wait for the server is bounded to a minute. On error nothing is left
// running and the cluster's folder is removed. Close the cluster when done.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	begin := time.Now()
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.Port < 0 || opts.Port > 65535 {
		return nil, fmt.Errorf("port %d out of range", opts.Port)
	}
	if _, err := settings(opts, "", 0); err != nil {
		return nil, err
	}
	bins, err := findBinaries()
	if err != nil {
		return nil, err
	}
	user, err := lookupServerUser()
	if err != nil {
		return nil, err
	}
	parent := opts.Dir
	if parent == "" {
		parent = os.TempDir()
	}
	if parent, err = filepath.Abs(parent); err != nil {
		return nil, fmt.Errorf("cluster dir: %w", err)
	}
	if err := user.checkSearchable(parent); err != nil {
		return nil, err
	}
	folder, err := os.MkdirTemp(parent, "pgcluster-")
	if err != nil {
		return nil, fmt.Errorf("make cluster folder: %w", err)
	}
	c := &Cluster{
		bins:    bins,
		user:    user,
		dir:     folder,
		dataDir: filepath.Join(folder, "data"),
		logPath: filepath.Join(folder, logName),
		logger:  logger,
	}
	if err := c.create(ctx, opts); err != nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.killLocked()
		return nil, errors.Join(err, os.RemoveAll(folder))
	}
	userName := ""
	if user != nil {
		userName = user.name
	}
	logger.Info("postgres cluster started", "port", c.port, "dir", c.dir,
		"os_user", userName, "initdb", bins.initdb, "elapsed", time.Since(begin))
	return c, nil
}

// create runs initdb, writes the settings and starts the server, choosing
// another port if the chosen one turns out to be taken.
func (c *Cluster) create(ctx context.Context, opts Options) error {
	if err := c.user.chown(c.dir); err != nil {
		return err
	}
	if err := c.initdb(ctx, opts.Durable); err != nil {
		return err
	}
	if err := includeSettings(c.dataDir); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for attempt := 1; ; attempt++ {
		port := opts.Port
		if port == 0 {
			var err error
			if port, err = FreePort(); err != nil {
				return err
			}
		}
		s, err := settings(opts, c.dir, port)
		if err != nil {
			return err
		}
		if err := writeSettings(c.dataDir, s, c.user); err != nil {
			return err
		}
		c.port = port
		err = c.startLocked(ctx)
		// Between FreePort closing its listener and postgres binding, another
		// process (say, a parallel test binary) may take the port.
		if opts.Port == 0 && errors.Is(err, errPortInUse) && attempt < portAttempts {
			c.logger.Debug("postgres port taken, trying another", "port", port)
			continue
		}
		return err
	}
}

// initdb creates the data directory.
func (c *Cluster) initdb(ctx context.Context, durable bool) error {
	args := []string{
		"--pgdata", c.dataDir,
		"--username", "postgres",
		"--auth", "trust",
		"--encoding", "UTF8",
		// The C locale exists everywhere and suits UTF8; the machine's
		// locale may be missing or unsuitable.
		"--locale", "C",
	}
	if !durable {
		args = append(args, "--no-sync")
	}
	cmd := exec.CommandContext(ctx, c.bins.initdb, args...)
	cmd.Dir = c.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.user.credential()}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb: %w; output:\n%s", err, tail(out))
	}
	return nil
}

// Start starts the server again after Stop, on the same port and data
// directory, and returns once it accepts connections. It does nothing if the
// server is running; if the server died on its own, Start starts it again.
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if c.proc != nil {
		select {
		case <-c.proc.done:
			c.proc = nil
		default:
			return nil
		}
	}
	return c.startLocked(ctx)
}

// Stop shuts the server down the way a database outage looks to clients:
// a fast shutdown (SIGINT) ends every session and closes the port, and Stop
// returns once postgres has exited and the port is free. If ctx ends first,
// postgres is killed. Stop does nothing if the server is not running; it
// reports an error if postgres exits abnormally, or had done so on its own.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopLocked(ctx)
}

// Restart stops the server, as Stop does, and starts it again, as Start does.
func (c *Cluster) Restart(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if err := c.stopLocked(ctx); err != nil {
		return err
	}
	return c.startLocked(ctx)
}

// Close stops the server if it is running and removes the cluster's folder
// with all its data. Calls after the first do nothing and return nil.
func (c *Cluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	err := c.stopLocked(ctx)
	if rerr := os.RemoveAll(c.dir); rerr != nil {
		err = errors.Join(err, fmt.Errorf("remove cluster folder: %w", rerr))
	}
	c.logger.Info("postgres cluster closed", "port", c.port, "dir", c.dir)
	return err
}

// URL returns the connection URL of database dbname as the superuser
// postgres over TCP, e.g. postgres://postgres@127.0.0.1:54321/app?sslmode=disable.
func (c *Cluster) URL(dbname string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort("127.0.0.1", fmt.Sprint(c.port)),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port returns the TCP port the server listens on. It does not change over
// the cluster's life, across Stop and Start included.
func (c *Cluster) Port() int { return c.port }

// LogFile returns the path of the server's log file, which every run of the
// server appends to. It is removed by Close.
func (c *Cluster) LogFile() string { return c.logPath }

// CreateDatabase creates database name, copied from template ("" means
// PostgreSQL's default, template1). CREATE DATABASE fails while anyone else
// is connected to the template.
func (c *Cluster) CreateDatabase(ctx context.Context, name, template string) error {
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		sql += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	if err := c.exec(ctx, sql); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// DropDatabase drops database name, disconnecting its sessions first. It does
// nothing if the database does not exist.
func (c *Cluster) DropDatabase(ctx context.Context, name string) error {
	if err := c.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// exec runs one statement in the maintenance database "postgres".
func (c *Cluster) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// startLocked starts postgres and waits until it accepts connections; on
// error it leaves nothing running. c.mu must be held and c.proc be nil.
func (c *Cluster) startLocked(ctx context.Context) error {
	logFile, err := os.OpenFile(c.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open server log: %w", err)
	}
	logStart, err := logFile.Seek(0, io.SeekEnd)
	if err != nil {
		logFile.Close()
		return fmt.Errorf("open server log: %w", err)
	}
	cmd := exec.Command(c.bins.postgres, "-D", c.dataDir)
	cmd.Dir = c.dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: c.user.credential(),
		// If this process dies, the kernel kills postgres; its sessions
		// then notice the postmaster is gone and exit too.
		Pdeathsig: syscall.SIGKILL,
		// A Ctrl-C in the terminal goes to this process alone, so a dev
		// server can shut down while its database is still up.
		Setpgid: true,
	}
	p := &process{done: make(chan struct{})}
	started := make(chan error, 1)
	// This goroutine owns the process: it starts it, waits for it and
	// closes p.done. The kernel sends Pdeathsig when the *thread* that
	// forked postgres exits (go.dev/issue/27505), and Go ends a thread when
	// a goroutine locked to it returns still locked. Holding the forking
	// thread here until postgres exits keeps it out of other goroutines'
	// hands.
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer close(p.done)
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.os = cmd.Process
		started <- nil
		p.err = cmd.Wait()
	}()
	err = <-started
	logFile.Close() // postgres has its own copy.
	if err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	c.proc = p
	if err := c.waitReady(ctx, p, logStart); err != nil {
		c.killLocked()
		return err
	}
	c.logger.Debug("postgres accepting connections", "port", c.port, "pid", p.os.Pid)
	return nil
}

// waitReady polls the server until it answers a query, it exits, or ctx
// ends. Errors carry the tail of the server log written since logStart.
func (c *Cluster) waitReady(ctx context.Context, p *process, logStart int64) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultReadyTimeout)
		defer cancel()
	}
	// A probe must not outlive the process: if another program holds the
	// port, a connection to it may hang instead of being refused.
	pingCtx, cancelPing := context.WithCancel(ctx)
	defer cancelPing()
	go func() {
		select {
		case <-p.done:
			cancelPing()
		case <-pingCtx.Done():
		}
	}()
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		err := c.ping(pingCtx)
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			log := c.logTail(logStart)
			if strings.Contains(log, "could not bind") || strings.Contains(log, "Address already in use") {
				return fmt.Errorf("start postgres on port %d: %w; server log:\n%s", c.port, errPortInUse, log)
			}
			return fmt.Errorf("postgres exited while starting (%v); server log:\n%s", p.err, log)
		case <-ctx.Done():
			return fmt.Errorf("wait for postgres on port %d: %w (last attempt: %v); server log:\n%s",
				c.port, ctx.Err(), err, c.logTail(logStart))
		case <-ticker.C:
		}
	}
}

// ping connects to the maintenance database and checks, by its data
// directory, that the server answering is this cluster's: until our postgres
// fails to bind a taken port, another server on it (say, a system PostgreSQL
// on 5432) would answer.
func (c *Cluster) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var dataDir string
	if err := conn.QueryRow(ctx, "SELECT current_setting('data_directory')").Scan(&dataDir); err != nil {
		return err
	}
	if dataDir != c.dataDir {
		return fmt.Errorf("port %d is served by another cluster, in %s", c.port, dataDir)
	}
	return nil
}

// stopLocked is Stop; c.mu must be held.
func (c *Cluster) stopLocked(ctx context.Context) error {
	p := c.proc
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
		c.proc = nil
		if p.err != nil {
			return fmt.Errorf("postgres had exited on its own: %w", p.err)
		}
		return nil
	default:
	}
	// SIGINT is PostgreSQL's fast shutdown: roll back open transactions,
	// end every session, checkpoint, exit. SIGTERM (smart) would wait for
	// clients to disconnect, which a pool never does.
	if err := p.os.Signal(os.Interrupt); err != nil && !errors.Is(err, os.ErrProcessDone) {
		c.killLocked()
		return fmt.Errorf("signal postgres: %w", err)
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		c.killLocked()
		return fmt.Errorf("stop postgres: %w; killed it", ctx.Err())
	}
	c.proc = nil
	c.logger.Info("postgres stopped", "port", c.port)
	if p.err != nil {
		return fmt.Errorf("postgres shutdown: %w; server log:\n%s", p.err, c.logTail(0))
	}
	return nil
}

// killLocked kills postgres, if running, and waits until it has exited.
// c.mu must be held.
func (c *Cluster) killLocked() {
	p := c.proc
	if p == nil {
		return
	}
	c.proc = nil
	_ = p.os.Kill() // Fails only if it has already exited.
	<-p.done
}

// logTail returns the end of the server log from offset on.
func (c *Cluster) logTail(offset int64) string {
	f, err := os.Open(c.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", c.logPath, err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", c.logPath, err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", c.logPath, err)
	}
	return tail(b)
}

// tail returns about the last 20 lines of b.
func tail(b []byte) string {
	const maxBytes, maxLines = 4096, 20
	b = bytes.TrimRight(b, "\n")
	if len(b) > maxBytes {
		b = b[len(b)-maxBytes:]
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return strings.Join(lines, "\n")
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
