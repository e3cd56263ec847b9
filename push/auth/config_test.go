package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	secret := testSecret
	const jwksURL = "https://id.example.com/.well-known/jwks.json"
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none means valid
	}{
		{"secret", Config{Secret: secret}, nil},
		{"jwks", Config{JWKSURL: jwksURL}, nil},
		{"both", Config{Secret: secret, JWKSURL: jwksURL, Issuer: "i", Audience: "a"}, nil},
		{"explicit algs", Config{Secret: make([]byte, 64), JWKSURL: jwksURL, Algorithms: []string{"HS512", "PS256", "ES384"}}, nil},
		{"http jwks", Config{JWKSURL: "http://127.0.0.1:9999/jwks"}, nil},

		{"open mode", Config{}, []string{"neither a JWT secret (PGPUSH_JWT_SECRET) nor a JWKS URL (PGPUSH_JWKS_URL) is set"}},
		{"short secret", Config{Secret: []byte("0123456789")}, []string{"JWT secret (PGPUSH_JWT_SECRET) is 10 bytes; it must be at least 32"}},
		{"31 bytes", Config{Secret: make([]byte, 31)}, []string{"is 31 bytes"}},
		{"HS512 secret", Config{Secret: make([]byte, 32), Algorithms: []string{"HS256", "HS512"}}, []string{"at least 64"}},
		{"alg none", Config{Secret: secret, Algorithms: []string{"HS256", "none"}}, []string{`algorithm "none" is never allowed`}},
		{"alg NONE", Config{Secret: secret, Algorithms: []string{"NONE"}}, []string{`"none" is never allowed`}},
		{"unknown alg", Config{Secret: secret, Algorithms: []string{"HS1"}}, []string{`unknown algorithm "HS1"`}},
		{"lower-case alg", Config{Secret: secret, Algorithms: []string{"hs256"}}, []string{`unknown algorithm "hs256"`}},
		{"RS256 without JWKS", Config{Secret: secret, Algorithms: []string{"RS256"}}, []string{"algorithm RS256 needs a JWKS URL (PGPUSH_JWKS_URL)"}},
		{"HS256 without secret", Config{JWKSURL: jwksURL, Algorithms: []string{"HS256", "RS256"}}, []string{"algorithm HS256 needs a JWT secret (PGPUSH_JWT_SECRET)"}},
		{"ftp jwks", Config{JWKSURL: "ftp://id.example.com/jwks"}, []string{`must be an http or https URL, not "ftp"`}},
		{"relative jwks", Config{JWKSURL: "/jwks.json"}, []string{"must be an http or https URL"}},
		{"hostless jwks", Config{JWKSURL: "https:///jwks.json"}, []string{"has no host"}},
		{"unparsable jwks", Config{JWKSURL: "https://id.example.com/%zz"}, []string{"does not parse"}},
		{"negative leeway", Config{Secret: secret, Leeway: -time.Second}, []string{"Leeway must not be negative"}},
		{"huge leeway", Config{Secret: secret, Leeway: time.Hour}, []string{"Leeway 1h0m0s is more than 5m0s"}},
		{"negative intervals", Config{JWKSURL: jwksURL, JWKSRefreshInterval: -1, JWKSUnknownKIDRateLimit: -1},
			[]string{"JWKSRefreshInterval must not be negative", "JWKSUnknownKIDRateLimit must not be negative"}},
		{"several problems", Config{Secret: []byte("short"), Algorithms: []string{"none", "RS256"}, Leeway: -1},
			[]string{"is 5 bytes", `"none" is never allowed`, "RS256 needs a JWKS URL", "Leeway must not be negative"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate: nil, want an error containing %q", tt.want)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not match ErrInvalidConfig", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is not one line", err)
			}
			if len(tt.cfg.Secret) > 0 && strings.Contains(err.Error(), string(tt.cfg.Secret)) {
				t.Errorf("error quotes the secret")
			}
			// New refuses the same config without touching the network.
			if _, nerr := New(context.Background(), tt.cfg); !errors.Is(nerr, ErrInvalidConfig) {
				t.Errorf("New: %v, want ErrInvalidConfig", nerr)
			}
		})
	}
}

func TestConfigNeverPrintsSecret(t *testing.T) {
	t.Parallel()
	cfg := Config{Secret: testSecret, JWKSURL: "https://user:hunter2@id.example.com/jwks"}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "auth", cfg)
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), cfg.String(), logged.String()} {
		if strings.Contains(s, string(testSecret)) || strings.Contains(s, "hunter2") {
			t.Errorf("secret printed: %s", s)
		}
		if !strings.Contains(s, "id.example.com") {
			t.Errorf("JWKS host missing from %s", s)
		}
	}
}
