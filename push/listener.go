package push

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgxlisten"

	"github.com/pgpush/pgpush/db"
)

const (
	// listenSetupTimeout bounds connecting, LISTEN and the session checks of
	// one attempt: a server that accepts TCP but never answers is given up.
	listenSetupTimeout = 10 * time.Second
)

// listener holds the node's one LISTEN connection. It only parses payloads
// and hands them to the dispatcher without ever waiting: when the
// dispatcher's queue is full it drops notifications and, as soon as there is
// room, queues a resync marker so the dispatcher reads what was dropped from
// the table. A reconnect does the same for whatever was sent while it was
// away, because NOTIFY is not durable.
//
// The LISTEN loop is pgxlisten's. The connection has to prove itself: a
// watchdog sends a heartbeat NOTIFY through the pool after every quiet
// interval and, when a heartbeat it sent has not reached the LISTEN
// connection within two intervals, cancels the loop, which reconnects. So a
// dead server, a dropped network path or a proxy that silently stopped
// forwarding is found within seconds even when nothing else is sent, and the
// proof covers the whole path (a NOTIFY committed elsewhere arrives here). A
// heartbeat that could not be sent (the pool busy with catch-ups, the
// database slow) proves nothing either way, so it does not count: only
// silence for staleLimit, heartbeats or not, is taken as a dead connection.
// The heartbeat also reaches every node of the deployment and advances its
// watermark while no rows are written.
//
// It is not safe for concurrent use, except connected and lastHeard, which
// anyone may read.
type listener struct {
	s       *Server
	channel string
	node    string

	connected atomic.Bool
	// lastHeard is when the LISTEN connection last delivered anything
	// (unix nanoseconds); setupStart when the current attempt began.
	lastHeard  atomic.Int64
	setupStart atomic.Int64
	// lastBeat is when the watchdog last committed a heartbeat (watchdog
	// only).
	lastBeat time.Time
	// firstConnect is closed once the first LISTEN is active.
	firstConnect chan struct{}

	// Owned by the run goroutine.
	downSince time.Time
	attempt   int  // reconnect attempts since the last working session
	failed    bool // the last session failed: back off before the next
	dropping  bool // notifications were dropped and no marker is queued yet
	started   bool
	prev      db.ListenerBackendRow // the last session's backend
}

// errStale ends a session whose connection stopped delivering.
var errStale = errors.New("the LISTEN connection went silent: a heartbeat sent through the pool did not come back")

// run keeps a LISTEN session up until ctx ends. pgxlisten reconnects after a
// connection error (connect applies the backoff); the watchdog restarts it
// when the connection goes silent.
func (l *listener) run(ctx context.Context) {
	defer l.setConnected(false)
	for ctx.Err() == nil {
		sctx, cancel := context.WithCancel(ctx)
		stale := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { l.watch(sctx, cancel, stale) })
		pl := &pgxlisten.Listener{
			Connect:        l.connect,
			LogError:       l.logError,
			ReconnectDelay: -1, // connect backs off itself, with jitter
		}
		pl.Handle(l.channel, l)
		pl.Listen(sctx)
		cancel()
		wg.Wait()
		select {
		case <-stale:
			l.lost(errStale)
		default:
		}
	}
}

// watch sends a heartbeat through the pool after every quiet interval and
// cancels the session when the LISTEN connection has delivered nothing for
// three intervals, or when setting one up takes too long. It closes stale
// when it cancels.
func (l *listener) watch(ctx context.Context, cancel context.CancelFunc, stale chan<- struct{}) {
	interval := l.s.cfg.HeartbeatInterval
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		if !l.connected.Load() {
			if now.Sub(time.Unix(0, l.setupStart.Load())) > listenSetupTimeout {
				close(stale)
				cancel()
				return
			}
			continue
		}
		heard := time.Unix(0, l.lastHeard.Load())
		if isStale(now, heard, l.lastBeat, interval) {
			close(stale)
			cancel()
			return
		}
		if now.Sub(heard) >= interval {
			hctx, hcancel := context.WithTimeout(ctx, max(interval, time.Second))
			err := l.s.q.NotificationHeartbeat(hctx, db.NotificationHeartbeatParams{Channel: l.channel, Node: l.node})
			hcancel()
			switch {
			case err == nil:
				if l.lastBeat.Before(heard) {
					// The first heartbeat since the connection last
					// spoke: its arrival is awaited from now.
					l.lastBeat = time.Now()
				}
			case ctx.Err() == nil:
				l.s.log.Debug("heartbeat failed", "err", err)
			}
		}
	}
}

// isStale reports whether a LISTEN connection that last delivered something
// at heard is dead at now: a heartbeat committed at beat (after heard) has
// not arrived within two intervals, or nothing at all has for staleLimit.
func isStale(now, heard, beat time.Time, interval time.Duration) bool {
	if beat.After(heard) && now.Sub(beat) > 2*interval {
		return true
	}
	return now.Sub(heard) > staleLimit(interval)
}

// staleLimit is how long a LISTEN connection may stay silent while no
// heartbeat could be sent: long enough for a busy pool to free a
// connection, short enough that a silently dead path is replaced anyway.
func staleLimit(interval time.Duration) time.Duration {
	return max(15*interval, 10*time.Second)
}

// connect is pgxlisten's Connect: after a failed session it first waits out
// the backoff.
func (l *listener) connect(ctx context.Context) (*pgx.Conn, error) {
	if l.failed {
		t := time.NewTimer(l.backoff())
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	l.failed = true // until LISTEN is active
	l.setupStart.Store(time.Now().UnixNano())
	cfg := l.s.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = "pgpush-listener"
	// TCP keepalives find a dead peer even between heartbeats.
	dialer := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: 5 * time.Second, Interval: 2 * time.Second, Count: 3,
	}}
	cfg.DialFunc = dialer.DialContext
	cfg.ConnectTimeout = listenSetupTimeout / 2
	return pgx.ConnectConfig(ctx, cfg)
}

// HandleBacklog is called by pgxlisten once LISTEN is active on a new
// connection.
func (l *listener) HandleBacklog(ctx context.Context, channel string, conn *pgx.Conn) error {
	sctx, cancel := context.WithTimeout(ctx, listenSetupTimeout)
	defer cancel()
	l.endPrevious(sctx, db.New(conn))
	l.listening()
	return nil
}

// HandleNotification is called by pgxlisten for every notification; it must
// not wait, and does not.
func (l *listener) HandleNotification(ctx context.Context, n *pgconn.Notification, conn *pgx.Conn) error {
	l.handle(n)
	return nil
}

// logError is pgxlisten's LogError: every error it reports ends a session.
func (l *listener) logError(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	l.lost(err)
}

// backoff returns the wait before the next attempt: "equal jitter" of an
// exponentially growing ceiling, so it grows with every failure, never
// exceeds ReconnectMax, and a fleet of nodes that lost the database together
// does not come back in lockstep.
func (l *listener) backoff() time.Duration {
	ceiling := max(l.s.cfg.ReconnectMin, 1)
	for i := 0; i < l.attempt && ceiling < l.s.cfg.ReconnectMax; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, max(l.s.cfg.ReconnectMax, 1))
	l.attempt++
	return ceiling/2 + rand.N(ceiling/2+1)
}

// endPrevious ends the previous session's backend if the server still keeps
// it. A session abandoned because its network path went silent can linger on
// the server for as long as TCP takes to notice (hours, with default
// keepalives), and a listening backend that does not read holds back the
// NOTIFY queue of the whole cluster until NOTIFY fails for every database.
func (l *listener) endPrevious(ctx context.Context, q *db.Queries) {
	prev := l.prev
	me, err := q.ListenerBackend(ctx)
	if err != nil {
		l.s.log.Debug("cannot identify the listener session", "err", err)
		l.prev = db.ListenerBackendRow{}
	} else {
		l.prev = me
	}
	if prev.Pid == nil || !prev.BackendStart.Valid {
		return
	}
	ended, err := q.ListenerTerminate(ctx, db.ListenerTerminateParams{Pid: *prev.Pid, BackendStart: prev.BackendStart})
	switch {
	case err != nil:
		l.s.log.Warn("cannot end the previous listener session; it may hold back the NOTIFY queue",
			"pid", *prev.Pid, "err", err)
	case ended:
		l.s.log.Info("ended the previous listener session, which the server still kept", "pid", *prev.Pid)
	}
}

// listening runs once LISTEN is active on a new connection.
func (l *listener) listening() {
	l.attempt = 0
	l.failed = false
	l.lastHeard.Store(time.Now().UnixNano())
	l.setConnected(true)
	if !l.started {
		l.started = true
		close(l.firstConnect)
		l.s.log.Info("listening", "channel", l.channel, "node", l.node)
	} else if !l.downSince.IsZero() {
		l.s.log.Info("listener reconnected", "down_for", time.Since(l.downSince).Round(time.Millisecond).String())
	}
	l.downSince = time.Time{}
	// Whatever was sent while no LISTEN was active is read from the table.
	l.dropping = true
	l.tryResync()
}

// handle parses a payload and queues it without blocking.
func (l *listener) handle(n *pgconn.Notification) {
	now := time.Now()
	l.lastHeard.Store(now.UnixNano())
	h, err := parseHint(n.Payload)
	if err != nil {
		// A stray NOTIFY on our channel is not ours to act on.
		l.s.metrics.badHints.Inc()
		l.s.log.Warn("ignoring a malformed notification", "channel", n.Channel, "err", err)
		return
	}
	if h.verify(n.Payload, l.s.hintKey(), n.PID) {
		l.s.metrics.unverified.Inc()
		l.s.reloadHintKey()
	}
	h.decodeRows()
	if l.dropping && !l.tryResync() {
		l.s.metrics.dropped.Inc()
		return
	}
	if !l.s.disp.offer(item{h: h, at: now}) {
		l.s.metrics.dropped.Inc()
		l.dropping = true
		l.s.log.Warn("the dispatcher is behind: dropping notifications until it has room; every connection then catches up from the table")
	}
}

// tryResync queues a resync marker if there is room, ending a drop. The
// marker covers the connections registered by now: one registered later
// reads the table after every dropped notification's commit anyway.
func (l *listener) tryResync() bool {
	if !l.s.disp.offer(item{resync: true, upTo: l.s.hub.lastSeq()}) {
		return false
	}
	l.dropping = false
	return true
}

func (l *listener) setConnected(up bool) {
	l.connected.Store(up)
	if up {
		l.s.metrics.listenerUp.Set(1)
	} else {
		l.s.metrics.listenerUp.Set(0)
	}
}

// lost records that the session ended, logging once per outage: a warning
// when a working connection is lost, then only debug lines for the failed
// attempts until "listener reconnected".
func (l *listener) lost(err error) {
	if err == nil {
		err = errors.New("session ended")
	}
	l.failed = true
	if !l.connected.Load() {
		if !l.started && l.attempt == 0 {
			l.s.log.Warn("listener cannot connect; retrying", "err", err)
			return
		}
		l.s.log.Debug("listener still down", "attempt", l.attempt, "err", err)
		return
	}
	l.setConnected(false)
	l.downSince = time.Now()
	l.s.metrics.reconnects.Inc()
	l.s.log.Warn("listener connection lost; reconnecting and catching up from the table", "err", err)
	// The pool's idle connections most likely died the same way (a
	// restart, a failover, a cut network). The pool pings only those idle
	// for over a second before lending them, so after a quick restart the
	// first query on each would fail: a user's "read" would get an error.
	// Dropping them now costs a reconnect each, when next needed.
	l.s.pool.Reset()
}
