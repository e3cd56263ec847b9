package push

import (
	"context"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgxlisten"

	"github.com/pgpush/pgpush/db"
)

// listener holds the node's one LISTEN connection (pgxlisten). It only parses
// payloads and hands them to the dispatcher without ever waiting: when the
// dispatcher's queue is full it drops notifications and, as soon as there is
// room, queues a resync marker so the dispatcher reads what was dropped from
// the table. A reconnect does the same for whatever was sent while it was
// away. Its own heartbeat NOTIFY proves the connection still receives; missed
// heartbeats force a reconnect even when the socket looks healthy.
type listener struct {
	s       *Server
	channel string
	node    string

	connected atomic.Bool
	lastHeard atomic.Int64 // unix nanoseconds of the last own heartbeat
	downSince time.Time    // owned by the listen goroutine
	attempt   int          // owned by the listen goroutine
	dropping  bool         // owned by the listen goroutine
	started   bool         // owned by the listen goroutine
	// firstConnect is closed once the first LISTEN is active.
	firstConnect chan struct{}
}

func (l *listener) run(ctx context.Context) {
	for ctx.Err() == nil {
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			l.watch(lctx, cancel)
		}()
		pl := &pgxlisten.Listener{
			Connect:        l.connect,
			LogError:       l.logError,
			ReconnectDelay: -1, // connect applies a jittered exponential backoff itself
		}
		pl.Handle(l.channel, l)
		pl.Listen(lctx)
		cancel()
		<-done
		if ctx.Err() == nil {
			l.lost(nil)
		}
	}
	l.connected.Store(false)
}

// watch sends heartbeats and cancels the listen context when the node's own
// heartbeats stop arriving on a connection that claims to be up.
func (l *listener) watch(ctx context.Context, cancel context.CancelFunc) {
	interval := l.s.cfg.HeartbeatInterval
	t := time.NewTicker(interval)
	defer t.Stop()
	q := l.s.q
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		hctx, hcancel := context.WithTimeout(ctx, interval)
		err := q.NotificationHeartbeat(hctx, db.NotificationHeartbeatParams{Channel: l.channel, Node: l.node})
		hcancel()
		if err != nil {
			l.s.log.Debug("heartbeat failed", "err", err)
		}
		if l.connected.Load() && time.Since(time.Unix(0, l.lastHeard.Load())) > 3*interval {
			l.s.log.Warn("listener missed its heartbeats; reconnecting")
			cancel()
			return
		}
	}
}

func (l *listener) connect(ctx context.Context) (*pgx.Conn, error) {
	if l.attempt > 0 {
		// Full jitter: a fleet of nodes does not reconnect in lockstep.
		ceiling := min(l.s.cfg.ReconnectMin<<min(l.attempt-1, 20), l.s.cfg.ReconnectMax)
		delay := l.s.cfg.ReconnectMin/2 + rand.N(ceiling)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
	}
	l.attempt++
	cfg := l.s.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = "pgpush-listener"
	// TCP keepalives find a dead peer even if heartbeats cannot be sent.
	dialer := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: 5 * time.Second, Interval: 2 * time.Second, Count: 3,
	}}
	cfg.DialFunc = dialer.DialContext
	cfg.ConnectTimeout = 5 * time.Second
	return pgx.ConnectConfig(ctx, cfg)
}

// HandleBacklog runs after every (re)connect once LISTEN is active.
func (l *listener) HandleBacklog(ctx context.Context, channel string, conn *pgx.Conn) error {
	l.attempt = 0
	l.lastHeard.Store(time.Now().UnixNano())
	l.connected.Store(true)
	l.s.metrics.listenerUp.Set(1)
	if !l.started {
		l.started = true
		close(l.firstConnect)
		l.s.log.Info("listening", "channel", l.channel, "node", l.node)
	} else if !l.downSince.IsZero() {
		l.s.log.Info("listener reconnected", "down_for", time.Since(l.downSince).Round(time.Millisecond).String())
		l.downSince = time.Time{}
	}
	// Whatever was sent while no LISTEN was active is read from the table.
	l.dropping = true
	l.tryResync()
	return nil
}

// HandleNotification parses a payload and queues it without blocking.
func (l *listener) HandleNotification(ctx context.Context, n *pgconn.Notification, conn *pgx.Conn) error {
	now := time.Now()
	h, err := parseHint(n.Payload)
	if err != nil {
		// A stray NOTIFY on our channel is not ours to act on.
		l.s.metrics.badHints.Inc()
		l.s.log.Warn("ignoring a malformed notification", "channel", n.Channel, "err", err)
		return nil
	}
	if h.Op == "h" && h.Node == l.node {
		l.lastHeard.Store(now.UnixNano())
	}
	if l.dropping && !l.tryResync() {
		return nil
	}
	select {
	case l.s.disp.in <- item{h: h, at: now}:
	default:
		l.s.metrics.dropped.Inc()
		l.dropping = true
	}
	return nil
}

// tryResync queues a resync marker if there is room, ending a drop.
func (l *listener) tryResync() bool {
	select {
	case l.s.disp.in <- item{resync: true}:
		l.dropping = false
		return true
	default:
		return false
	}
}

func (l *listener) logError(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	l.lost(err)
}

// lost records that the connection is down, logging once per outage.
func (l *listener) lost(err error) {
	if !l.connected.Swap(false) {
		if err != nil {
			l.s.log.Debug("listener still down", "err", err)
		}
		return
	}
	l.downSince = time.Now()
	l.s.metrics.listenerUp.Set(0)
	l.s.metrics.reconnects.Inc()
	if err != nil {
		l.s.log.Warn("listener connection lost; reconnecting", "err", err)
	} else {
		l.s.log.Warn("listener connection lost; reconnecting")
	}
}
