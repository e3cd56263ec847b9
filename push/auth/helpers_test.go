package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
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

func signHS(t testing.TB, method jwt.SigningMethod, key []byte, c jwt.Claims, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	for k, v := range header {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
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

// testKey is an asymmetric key that signs test tokens and is published by a
// jwksServer.
type testKey struct {
	kid    string
	method jwt.SigningMethod
	priv   crypto.Signer
}

func (k testKey) sign(t testing.TB, c jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(k.method, c)
	if k.kid != "" {
		tok.Header["kid"] = k.kid
	}
	s, err := tok.SignedString(k.priv)
	if err != nil {
		t.Fatalf("sign %s: %v", k.method.Alg(), err)
	}
	return s
}

// RSA keys are slow to make under -race: one per test binary.
var rsaKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func rsaTestKey(kid string) testKey {
	return testKey{kid: kid, method: jwt.SigningMethodRS256, priv: rsaKey()}
}

func ecTestKey(t testing.TB, kid string) testKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{kid: kid, method: jwt.SigningMethodES256, priv: k}
}

func edTestKey(t testing.TB, kid string) testKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{kid: kid, method: jwt.SigningMethodEdDSA, priv: k}
}

// jwksJSON is the public JWK Set of keys, as an identity provider serves it.
func jwksJSON(t testing.TB, keys ...testKey) []byte {
	t.Helper()
	ctx := context.Background()
	store := jwkset.NewMemoryStorage()
	for _, k := range keys {
		jwk, err := jwkset.NewJWKFromKey(k.priv.Public(), jwkset.JWKOptions{
			Metadata: jwkset.JWKMetadataOptions{KID: k.kid, ALG: jwkset.ALG(k.method.Alg()), USE: jwkset.UseSig},
		})
		if err != nil {
			t.Fatalf("jwk %s: %v", k.kid, err)
		}
		if err := store.KeyWrite(ctx, jwk); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := store.JSONPublic(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// jwksServer is a real HTTP JWKS endpoint whose document the test can swap,
// and which counts the requests it gets.
type jwksServer struct {
	*httptest.Server
	body     atomic.Pointer[[]byte]
	status   atomic.Int32
	requests atomic.Int64
}

func newJWKSServer(t testing.TB, tls bool, keys ...testKey) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	s.status.Store(http.StatusOK)
	s.setKeys(t, keys...)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.WriteHeader(int(s.status.Load()))
		w.Write(*s.body.Load())
	})
	if tls {
		s.Server = httptest.NewTLSServer(h)
	} else {
		s.Server = httptest.NewServer(h)
	}
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) setKeys(t testing.TB, keys ...testKey) {
	b := jwksJSON(t, keys...)
	s.body.Store(&b)
}

func (s *jwksServer) setBody(b string) {
	raw := []byte(b)
	s.body.Store(&raw)
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
