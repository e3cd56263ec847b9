package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// testSecret is the HS256 secret of most tests and of FuzzVerify; the
// checked-in fuzz seeds are signed with it.
var testSecret = []byte("pgpush-test-secret-do-not-use-0123456789")

func newVerifier(t testing.TB, cfg Config) *Verifier {
	t.Helper()
	v, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// claims returns a sub and an exp ttl from now, plus extra.
func claims(sub string, ttl time.Duration, extra map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{"exp": time.Now().Add(ttl).Unix()}
	if sub != "" {
		c["sub"] = sub
	}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

// unsigned builds a token by hand, with whatever header and signature, as an
// attacker would.
func unsigned(t testing.TB, header, payload map[string]any, sig string) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(header) + "." + enc(payload) + "." + sig
}

// mustVerify verifies tok and returns its claims, failing the test on error.
func mustVerify(t testing.TB, v *Verifier, tok string) Claims {
	t.Helper()
	c, err := v.Verify(tok)
	if err != nil {
		t.Fatalf("Verify: %v, want success", err)
	}
	return c
}

// mustReject checks that v rejects tok with the message want, that the error
// matches ErrUnauthorized, and that it does not quote the token.
func mustReject(t testing.TB, v *Verifier, tok, want string) error {
	t.Helper()
	c, err := v.Verify(tok)
	if err == nil {
		t.Fatalf("Verify accepted the token (sub %q), want %q", c.Subject, want)
	}
	if !errors.Is(err, ErrUnauthorized) {
		t.Errorf("error %v does not match ErrUnauthorized", err)
	}
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if len(tok) > 8 && strings.Contains(err.Error(), tok) {
		t.Errorf("error quotes the token")
	}
	if c != (Claims{}) {
		t.Errorf("claims %+v returned with an error", c)
	}
	return err
}

// waitFor polls cond until it holds, failing the test after a deadline.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
