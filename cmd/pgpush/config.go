package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pgpush/pgpush/push"
	"github.com/pgpush/pgpush/push/auth"
)

// settings are the configuration of serve (and, in part, of the other
// commands). Each field is an environment variable and a flag; the flag wins.
type settings struct {
	DatabaseURL     string
	Addr            string
	JWTSecret       string
	JWKSURL         string
	JWTIssuer       string
	JWTAudience     string
	JWTAlgorithms   string
	JWTLeeway       time.Duration
	AllowedOrigins  string
	MaxConnsPerUser int
	MaxConns        int
	DrainTimeout    time.Duration
	DBMaxConns      int
	DeletionsKeep   time.Duration
	LogLevel        string
	LogFormat       string
	Migrate         bool
}

// newFlagSet returns a flag set whose usage lists each flag's variable.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("pgpush "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// envFlags binds s to fs, with defaults taken from the environment.
type envFlags struct {
	fs   *flag.FlagSet
	errs []error
	// secrets are flags filled from the environment after parsing; see
	// secret.
	secrets []secretFlag
}

type secretFlag struct {
	p         *string
	name, env string
}

func (e *envFlags) str(p *string, name, env, def, help string) {
	if v, ok := os.LookupEnv(env); ok {
		def = v
	}
	e.fs.StringVar(p, name, def, help+" ("+env+")")
}

// secret binds a flag whose value must never be printed (a password, a
// signing secret). Its environment variable is not made the flag's default,
// because the usage text, which a mistyped flag prints, shows defaults; it
// fills the value after parsing unless the flag was given.
func (e *envFlags) secret(p *string, name, env, help string) {
	e.fs.StringVar(p, name, "", help+" ("+env+"; its value is never shown)")
	e.secrets = append(e.secrets, secretFlag{p: p, name: name, env: env})
}

func (e *envFlags) int(p *int, name, env string, def int, help string) {
	if v, ok := os.LookupEnv(env); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("%s=%q is not a whole number", env, v))
		} else {
			def = n
		}
	}
	e.fs.IntVar(p, name, def, help+" ("+env+")")
}

func (e *envFlags) dur(p *time.Duration, name, env string, def time.Duration, help string) {
	if v, ok := os.LookupEnv(env); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("%s=%q is not a duration like 10s", env, v))
		} else {
			def = d
		}
	}
	e.fs.DurationVar(p, name, def, help+" ("+env+")")
}

func (e *envFlags) bool(p *bool, name, env string, def bool, help string) {
	if v, ok := os.LookupEnv(env); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("%s=%q is not true or false", env, v))
		} else {
			def = b
		}
	}
	e.fs.BoolVar(p, name, def, help+" ("+env+")")
}

// bindDatabase binds the settings every database command needs.
func (s *settings) bindDatabase(e *envFlags) {
	e.secret(&s.DatabaseURL, "database-url", "DATABASE_URL", "PostgreSQL URL or keyword string; search_path in it places the tables in another schema")
	e.str(&s.LogLevel, "log-level", "PGPUSH_LOG_LEVEL", "info", "log level: debug, info, warn, error")
	e.str(&s.LogFormat, "log-format", "PGPUSH_LOG_FORMAT", "text", "log format: text or json")
}

// bindAuth binds the token settings.
func (s *settings) bindAuth(e *envFlags) {
	e.secret(&s.JWTSecret, "jwt-secret", "PGPUSH_JWT_SECRET", "HS256 shared secret, at least 32 bytes (prefer the variable: flags show in ps)")
	e.str(&s.JWKSURL, "jwks-url", "PGPUSH_JWKS_URL", "", "JWKS endpoint for RS256/ES256/EdDSA tokens")
	e.str(&s.JWTIssuer, "jwt-issuer", "PGPUSH_JWT_ISSUER", "", "required token issuer (iss), checked when set")
	e.str(&s.JWTAudience, "jwt-audience", "PGPUSH_JWT_AUDIENCE", "", "required token audience (aud), checked when set")
	e.str(&s.JWTAlgorithms, "jwt-algorithms", "PGPUSH_JWT_ALGORITHMS", "", "comma-separated accepted algorithms (default: HS256 with a secret; RS256,ES256,EdDSA with JWKS)")
	e.dur(&s.JWTLeeway, "jwt-leeway", "PGPUSH_JWT_LEEWAY", auth.DefaultLeeway, "clock skew tolerated on exp/nbf/iat")
}

// bindServe binds everything serve takes.
func (s *settings) bindServe(e *envFlags) {
	s.bindDatabase(e)
	s.bindAuth(e)
	e.str(&s.Addr, "addr", "PGPUSH_ADDR", ":8080", "listen address")
	e.str(&s.AllowedOrigins, "allowed-origins", "PGPUSH_ALLOWED_ORIGINS", "", "comma-separated host patterns allowed as WebSocket Origin and for CORS, e.g. app.example.com,*.example.com (default: same origin only)")
	e.int(&s.MaxConnsPerUser, "max-conns-per-user", "PGPUSH_MAX_CONNS_PER_USER", 32, "concurrent WebSocket connections one user may hold")
	e.int(&s.MaxConns, "max-conns", "PGPUSH_MAX_CONNS", 100_000, "WebSocket connections this node holds at most")
	e.dur(&s.DrainTimeout, "drain-timeout", "PGPUSH_DRAIN_TIMEOUT", 5*time.Second, "on SIGTERM, how long to wait for clients to close")
	e.int(&s.DBMaxConns, "db-max-conns", "PGPUSH_DB_MAX_CONNS", 10, "database connections in the pool (plus one for LISTEN)")
	e.bool(&s.Migrate, "migrate", "PGPUSH_MIGRATE", false, "apply pending migrations before serving")
	e.dur(&s.DeletionsKeep, "deletions-retention", "PGPUSH_DELETIONS_RETENTION", 7*24*time.Hour, "how long deleted rows' ids stay recorded for clients that were offline (older cursors get a fresh snapshot)")
}

func (s *settings) authConfig(logger *slog.Logger) auth.Config {
	c := auth.Config{
		JWKSURL:  s.JWKSURL,
		Issuer:   s.JWTIssuer,
		Audience: s.JWTAudience,
		Leeway:   s.JWTLeeway,
		Logger:   logger,
	}
	if s.JWTSecret != "" {
		c.Secret = []byte(s.JWTSecret)
	}
	c.Algorithms = splitList(s.JWTAlgorithms)
	return c
}

func (s *settings) pushConfig(logger *slog.Logger) push.Config {
	return push.Config{
		AllowedOrigins:     splitList(s.AllowedOrigins),
		MaxConnsPerUser:    s.MaxConnsPerUser,
		MaxConns:           s.MaxConns,
		DeletionsRetention: s.DeletionsKeep,
		Logger:             logger,
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parse parses args into fs and reports environment errors too.
func (e *envFlags) parse(args []string) error {
	if err := e.fs.Parse(args); err != nil {
		return err
	}
	if e.fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", e.fs.Arg(0))
	}
	given := map[string]bool{}
	e.fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, sf := range e.secrets {
		if !given[sf.name] {
			*sf.p = os.Getenv(sf.env)
		}
	}
	return errors.Join(e.errs...)
}

// newLogger builds the process logger. Nothing logged by pgpush contains a
// token, a secret or a database password.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: use text or json", format)
	}
}
