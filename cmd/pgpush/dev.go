package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/pgpush/pgpush/db"
	"github.com/pgpush/pgpush/db/pgcluster"
	"github.com/pgpush/pgpush/migrations"
	"github.com/pgpush/pgpush/push"
	"github.com/pgpush/pgpush/push/auth"
	"github.com/pgpush/pgpush/web"
)

// demoUsers get ready-made tokens.
var demoUsers = []string{"alice", "bob"}

// runDev is the zero-setup demo: a throwaway PostgreSQL cluster, migrated,
// and a push server that also serves the demo page and two dev-only
// endpoints (a token for any demo user, and an insert form). None of that
// exists in serve.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var addr, logLevel, origins string
	fs := newFlagSet("dev", stderr)
	fs.StringVar(&addr, "addr", "127.0.0.1:8080", "listen address of the demo (PGPUSH_ADDR is not read: the demo stays on loopback unless told)")
	fs.StringVar(&logLevel, "log-level", "warn", "server log level")
	fs.StringVar(&origins, "allowed-origins", "", "comma-separated host patterns of other pages allowed to connect, e.g. 127.0.0.1:3000 for examples/react (default: the demo's origin only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	logger, err := newLogger(stderr, logLevel, "text")
	if err != nil {
		return err
	}
	step := func(n int, msg string) { fmt.Fprintf(stdout, "[%d/5] %s\n", n, msg) }

	step(1, "starting a throwaway PostgreSQL cluster (from this machine's PostgreSQL binaries)")
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{Logger: logger})
	if err != nil {
		return fmt.Errorf("start PostgreSQL: %w (make dev installs the server binaries; or set PGPUSH_PG_BIN)", err)
	}
	defer cluster.Close()
	if err := cluster.CreateDatabase(ctx, "pgpush", ""); err != nil {
		return err
	}
	dbURL := cluster.URL("pgpush")
	fmt.Fprintf(stdout, "      PostgreSQL is up on 127.0.0.1:%d (deleted on exit)\n", cluster.Port())

	step(2, "migrating the database")
	pool, err := openPool(ctx, dbURL, 10)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := migrations.Up(ctx, pool, nil); err != nil {
		return err
	}

	step(3, "minting a signing secret and demo tokens")
	secret := make([]byte, 32)
	rand.Read(secret)
	secretText := base64.RawURLEncoding.EncodeToString(secret)
	verifier, err := auth.New(ctx, auth.Config{Secret: []byte(secretText), Logger: logger})
	if err != nil {
		return err
	}
	defer verifier.Close()
	mint := func(user string) (string, error) {
		return auth.Mint([]byte(secretText), user, 24*time.Hour, "", "")
	}

	step(4, "starting the push server")
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(stdout, "      %s is taken (%v); using a free port\n", addr, err)
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return err
		}
	}
	base := "http://" + ln.Addr().String()

	step(5, "ready")
	fmt.Fprintf(stdout, "\n  Open the demo:   %s/?user=alice   (and %s/?user=bob)\n\n", base, base)
	for _, u := range demoUsers {
		tok, err := mint(u)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "  Token for %-5s  %s\n", u+":", tok)
	}
	fmt.Fprintf(stdout, "\n  Watch raw frames: websocat '%s/v1/ws?token=<token>'\n", "ws"+base[len("http"):])
	fmt.Fprintf(stdout, "  Insert from SQL:  psql '%s' -c \"INSERT INTO notifications (user_id, title, body) VALUES ('alice', 'Hello from psql', 'Any writer causes a push');\"\n", dbURL)
	fmt.Fprintf(stdout, "  Signing secret:   PGPUSH_JWT_SECRET=%s (for pgpush token)\n\n  Ctrl-C stops the server and deletes the cluster.\n", secretText)

	cfg := push.Config{Logger: logger, AllowedOrigins: splitList(origins)}
	return serve(ctx, ln, pool, verifier, cfg, 2*time.Second, web.DevRoutes(db.New(pool), mint, logger), logger)
}
