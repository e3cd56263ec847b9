package push

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgpush/pgpush/db"
)

const (
	// listenSetupTimeout bounds connecting, LISTEN and the session checks of
	// one attempt: a server that accepts TCP but never answers is given up.
	listenSetupTimeout = 10 * time.Second
	// listenCloseTimeout bounds the goodbye to a connection being dropped.
	listenCloseTimeout = time.Second
)

// listener holds the node's one LISTEN connection. It only parses payloads
// and hands them to the dispatcher without ever waiting: when the
// dispatcher's queue is full it drops notifications and, as soon as there is
// room, queues a resync marker so the dispatcher reads what was dropped from
// the table. A reconnect does the same for whatever was sent while it was
// away, because NOTIFY is not durable.
//
// The connection proves itself: after a heartbeat interval without a
// notification the listener sends a heartbeat NOTIFY on that same
// connection, a round trip bounded by a timeout, so a dead server, a dropped
// network path or a proxy that silently stopped forwarding is found within
// about two intervals even when nothing else is sent. (pgxlisten cannot do
// this: it waits for notifications without a deadline.) The heartbeat also
// reaches every node of the deployment and advances its watermark while no
// rows are written.
//
// It is not safe for concurrent use, except connected, which anyone may read.
type listener struct {
	s       *Server
	channel string
	node    string

	connected atomic.Bool
	// firstConnect is closed once the first LISTEN is active.
	firstConnect chan struct{}

	// Owned by the run goroutine.
	downSince time.Time
	attempt   int  // reconnect attempts since the last working session
	dropping  bool // notifications were dropped and no marker is queued yet
	started   bool
	prev      db.ListenerBackendRow // the last session's backend
}

// run keeps a LISTEN session up until ctx ends, reconnecting with a capped,
// jittered exponential backoff.
func (l *listener) run(ctx context.Context) {
	defer l.setConnected(false)
	for {
		err := l.session(ctx)
		if ctx.Err() != nil {
			return
		}
		l.lost(err)
		t := time.NewTimer(l.backoff())
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
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

// session connects, listens, and receives until the connection fails or ctx
// ends. It returns why the session ended (nil when ctx ended).
func (l *listener) session(ctx context.Context) error {
	cfg := l.s.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = "pgpush-listener"
	// TCP keepalives find a dead peer even between heartbeats.
	dialer := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: 5 * time.Second, Interval: 2 * time.Second, Count: 3,
	}}
	cfg.DialFunc = dialer.DialContext
	cfg.ConnectTimeout = listenSetupTimeout / 2

	sctx, cancel := context.WithTimeout(ctx, listenSetupTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(sctx, cfg)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), listenCloseTimeout)
		defer cancel()
		conn.Close(cctx)
	}()
	// LISTEN takes an identifier, which sqlc cannot parameterise.
	if _, err := conn.Exec(sctx, "LISTEN "+pgx.Identifier{l.channel}.Sanitize()); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	q := db.New(conn)
	l.endPrevious(sctx, q)
	cancel()

	l.listening()
	return l.receive(ctx, conn, q)
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

// receive hands notifications to the dispatcher and sends a heartbeat after
// every quiet interval. Any error ends the session.
func (l *listener) receive(ctx context.Context, conn *pgx.Conn, q *db.Queries) error {
	interval := l.s.cfg.HeartbeatInterval
	// A heartbeat is one trivial statement; a server too busy to answer it
	// in this time is treated as gone.
	timeout := max(2*interval, time.Second)
	for {
		wctx, cancel := context.WithTimeout(ctx, interval)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if n != nil {
			l.handle(n)
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			continue
		case !errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("wait for notifications: %w", err)
		}
		// A quiet interval (a timed-out wait leaves the connection
		// usable): prove that the connection still works.
		hctx, cancel := context.WithTimeout(ctx, timeout)
		err = q.NotificationHeartbeat(hctx, db.NotificationHeartbeatParams{Channel: l.channel, Node: l.node})
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("heartbeat: %w", err)
		}
	}
}

// listening runs once LISTEN is active on a new connection.
func (l *listener) listening() {
	l.attempt = 0
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
	h, err := parseHint(n.Payload)
	if err != nil {
		// A stray NOTIFY on our channel is not ours to act on.
		l.s.metrics.badHints.Inc()
		l.s.log.Warn("ignoring a malformed notification", "channel", n.Channel, "err", err)
		return
	}
	if l.dropping && !l.tryResync() {
		l.s.metrics.dropped.Inc()
		return
	}
	select {
	case l.s.disp.in <- item{h: h, at: now}:
	default:
		l.s.metrics.dropped.Inc()
		l.dropping = true
	}
}

// tryResync queues a resync marker if there is room, ending a drop. The
// marker covers the connections registered by now: one registered later
// reads the table after every dropped notification's commit anyway.
func (l *listener) tryResync() bool {
	select {
	case l.s.disp.in <- item{resync: true, upTo: l.s.hub.lastSeq()}:
		l.dropping = false
		return true
	default:
		return false
	}
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
}
