package push

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgpush/pgpush/db"
	"github.com/pgpush/pgpush/push/auth"
)

// Verifier checks bearer tokens. *auth.Verifier implements it.
type Verifier interface {
	Verify(token string) (auth.Claims, error)
}

// Server is one pgpush node: the listener, the dispatcher, the hub and the
// HTTP/WebSocket handlers. Start it, serve Handler, then Shutdown. It is safe
// for concurrent use.
type Server struct {
	cfg      Config
	log      *slog.Logger
	pool     *pgxpool.Pool
	q        *db.Queries
	verifier Verifier
	hub      *hub
	disp     *dispatcher
	lis      *listener
	metrics  *metrics
	handler  http.Handler

	// pages holds a token per replay page a connection holds (see
	// Config.ReplayPages).
	pages chan struct{}

	// base is the context of every connection; cancelling it drops them all.
	base       context.Context
	cancelBase context.CancelFunc

	// key is the hint key (see hintkey.go); keyReload asks keepHintKey to
	// read it again, and keyWarned is set once a failure to read it was
	// logged (keepHintKey's and Start's).
	key       atomic.Pointer[[]byte]
	keyReload chan struct{}
	keyWarned bool

	mu       sync.Mutex
	started  bool
	closed   bool
	stopBg   context.CancelFunc
	bg       sync.WaitGroup // listener, dispatcher, pruner and folder
	sessions sync.WaitGroup // WebSocket handlers
	draining bool
}

// New returns a Server for the database behind pool. cfg is copied and its
// defaults filled in.
func New(pool *pgxpool.Pool, verifier Verifier, cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("push config: %w", err)
	}
	if verifier == nil {
		return nil, errors.New("push: a token verifier is required")
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		pool:     pool,
		q:        db.New(pool),
		verifier: verifier,
		hub:      newHub(cfg.MaxConnsPerUser, cfg.MaxConns),
		pages:    make(chan struct{}, cfg.ReplayPages),

		keyReload: make(chan struct{}, 1),
	}
	s.base, s.cancelBase = context.WithCancel(context.Background())
	s.metrics = newMetrics(func() float64 { return float64(s.hub.count()) })
	s.disp = newDispatcher(s)
	s.hub.watermark = s.disp.watermark
	s.handler = s.routes()
	return s, nil
}

// Start resolves the notification channel and starts the listener and the
// dispatcher. They run until Shutdown or Close.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return errors.New("push: server already started")
	}
	schema, err := s.q.CurrentSchema(ctx)
	if err != nil {
		return fmt.Errorf("read current schema: %w", err)
	}
	s.loadHintKey(ctx)
	node := make([]byte, 8)
	rand.Read(node)
	s.lis = &listener{s: s, channel: "pgpush." + schema, node: hex.EncodeToString(node), firstConnect: make(chan struct{})}
	bg, stop := context.WithCancel(context.Background())
	s.stopBg = stop
	s.bg.Go(func() { s.disp.run(bg) })
	s.bg.Go(func() { s.lis.run(bg) })
	s.bg.Go(func() { s.prune(bg) })
	s.bg.Go(func() { s.foldUnread(bg) })
	s.bg.Go(func() { s.keepHintKey(bg) })
	s.started = true
	// Wait (bounded by ctx) for the first LISTEN, so that the node is
	// ready when Start returns; if the database is slow, Start returns
	// anyway and /readyz stays 503 until the listener connects.
	select {
	case <-s.lis.firstConnect:
	case <-ctx.Done():
	}
	return nil
}

// Handler serves the HTTP API, the WebSocket and the browser client.
func (s *Server) Handler() http.Handler { return s.handler }

// Ready reports whether the listener is connected; /readyz also pings the
// database.
func (s *Server) Ready() bool { return s.lis != nil && s.lis.connected.Load() }

// Shutdown stops taking connections, closes every open one with 1001 (going
// away) so clients reconnect elsewhere with their cursors, and waits for them
// until ctx ends, then stops the listener. It is idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	s.hub.closeAll(websocket.StatusGoingAway, "server shutting down")
	done := make(chan struct{})
	go func() {
		s.sessions.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("drain: %w", ctx.Err())
	}
	s.Close()
	return err
}

// Close drops every connection at once and stops the background goroutines.
// It is idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	s.draining = true
	alreadyClosed := s.closed
	s.closed = true
	s.mu.Unlock()
	if alreadyClosed {
		return
	}
	s.cancelBase()
	s.sessions.Wait()
	if s.stopBg != nil {
		s.stopBg()
	}
	s.bg.Wait()
}

// admit registers a session unless the server is draining.
func (s *Server) admit() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.sessions.Add(1)
	return true
}

// takePage waits for room to hold one more replay page; releasePage gives
// it back once the page is written.
func (s *Server) takePage(ctx context.Context) error {
	select {
	case s.pages <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Server) releasePage() { <-s.pages }

// markRead marks ids (or all) of userID read and returns how many changed
// and the unread count after.
//
// Its UPDATE can deadlock with a writer (or another device of the user)
// updating the same rows in another order, and PostgreSQL then aborts one of
// them; the statement is retried, since it is idempotent.
func (s *Server) markRead(ctx context.Context, userID string, ids []int64, all bool) (updated, unread int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		if all {
			var r db.NotificationMarkAllReadRow
			r, err = s.q.NotificationMarkAllRead(ctx, userID)
			updated, unread = r.Updated, r.Unread
		} else {
			var r db.NotificationMarkReadRow
			r, err = s.q.NotificationMarkRead(ctx, db.NotificationMarkReadParams{UserID: userID, Ids: ids})
			updated, unread = r.Updated, r.Unread
		}
		if err == nil || attempt == 5 || !retryable(err) || ctx.Err() != nil {
			return updated, unread, err
		}
	}
}

// retryable reports whether err is a deadlock or serialization failure, which
// the same statement may well not meet again.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}
