package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgpush/pgpush/migrations"
	"github.com/pgpush/pgpush/push"
	"github.com/pgpush/pgpush/push/auth"
)

func runServe(ctx context.Context, args []string, stderr io.Writer) error {
	var s settings
	e := &envFlags{fs: newFlagSet("serve", stderr)}
	s.bindServe(e)
	if err := e.parse(args); err != nil {
		return err
	}
	logger, err := newLogger(stderr, s.LogLevel, s.LogFormat)
	if err != nil {
		return err
	}
	ac := s.authConfig(logger)
	if err := ac.Validate(); err != nil {
		return fmt.Errorf("token configuration: %w (set PGPUSH_JWT_SECRET or PGPUSH_JWKS_URL)", err)
	}
	pool, err := openPool(ctx, s.DatabaseURL, s.DBMaxConns)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := prepareSchema(ctx, pool, s.Migrate, logger); err != nil {
		return err
	}
	verifier, err := auth.New(ctx, ac)
	if err != nil {
		return fmt.Errorf("tokens: %w", err)
	}
	defer verifier.Close()

	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.Addr, err)
	}
	return serve(ctx, ln, pool, verifier, s.pushConfig(logger), s.DrainTimeout, nil, logger)
}

// prepareSchema applies migrations or checks that none are pending.
func prepareSchema(ctx context.Context, pool *pgxpool.Pool, migrate bool, logger *slog.Logger) error {
	if migrate {
		if err := migrations.Up(ctx, pool, logger); err != nil {
			return err
		}
	}
	return migrations.Check(ctx, pool)
}

// serve runs a push server on ln until ctx ends, then drains it. extra, when
// set, serves routes the push server does not know (the dev demo).
func serve(ctx context.Context, ln net.Listener, pool *pgxpool.Pool, verifier push.Verifier,
	cfg push.Config, drain time.Duration, extra func(next http.Handler) http.Handler, logger *slog.Logger) error {
	srv, err := push.New(pool, verifier, cfg)
	if err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	handler := srv.Handler()
	if extra != nil {
		handler = extra(handler)
	}
	hs := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	logger.Info("serving", "addr", ln.Addr().String())

	select {
	case err := <-errc:
		srv.Close()
		return fmt.Errorf("http: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down", "drain_timeout", drain.String())
	dctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	// Stop accepting first, then close the WebSockets with 1001 so their
	// clients reconnect to another node with their cursors.
	hs.SetKeepAlivesEnabled(false)
	herr := make(chan error, 1)
	go func() { herr <- hs.Shutdown(dctx) }()
	serr := srv.Shutdown(dctx)
	if err := <-herr; err != nil && !errors.Is(err, context.DeadlineExceeded) {
		logger.Warn("http shutdown", "err", err)
	}
	hs.Close()
	if serr != nil {
		logger.Warn("some clients did not close in time", "err", serr)
	}
	logger.Info("stopped")
	return nil
}
