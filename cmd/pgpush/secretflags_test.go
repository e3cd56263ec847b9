package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestSecretFlagsNeverShowTheirValue: the usage text that a mistyped flag
// prints lists every flag's default, and must not show the database password
// or the JWT secret taken from the environment. The variable still fills the
// setting, and the flag still wins over it.
func TestSecretFlagsNeverShowTheirValue(t *testing.T) {
	const dbURL, secret = "postgres://pgpush:db-pw-5c1f9a@db.internal/app", "jwt-secret-9d2e-0123456789abcdef0123"
	t.Setenv("DATABASE_URL", dbURL)
	t.Setenv("PGPUSH_JWT_SECRET", secret)

	parse := func(args ...string) (settings, string, error) {
		var s settings
		var out bytes.Buffer
		e := &envFlags{fs: newFlagSet("serve", &out)}
		s.bindServe(e)
		err := e.parse(args)
		return s, out.String(), err
	}

	_, usage, err := parse("--no-such-flag")
	if err == nil || !strings.Contains(usage, "-jwt-secret") {
		t.Fatalf("a bad flag: err %v, usage %q", err, usage)
	}
	for _, v := range []string{"db-pw-5c1f9a", secret} {
		if strings.Contains(usage, v) {
			t.Errorf("the usage text shows %q", v)
		}
	}

	s, _, err := parse()
	if err != nil || s.DatabaseURL != dbURL || s.JWTSecret != secret {
		t.Fatalf("from the environment: %v, %q, %q", err, s.DatabaseURL, s.JWTSecret)
	}
	s, _, err = parse("--jwt-secret", "from-the-flag-0123456789abcdef0123", "--database-url", "postgres:///other")
	if err != nil || s.JWTSecret != "from-the-flag-0123456789abcdef0123" || s.DatabaseURL != "postgres:///other" {
		t.Fatalf("the flag must win: %v, %q, %q", err, s.DatabaseURL, s.JWTSecret)
	}
}
