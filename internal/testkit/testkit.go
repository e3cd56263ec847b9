// Package testkit holds what the tests of several packages share: a buffer
// for a process's concurrent output, and asymmetric signing keys with a real
// JWKS endpoint that publishes them. Only tests import it.
package testkit

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// SyncBuffer is a bytes.Buffer that concurrent writers (a process's output,
// a logger) and a reader may share.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Key is an asymmetric key that signs test tokens and that a JWKSServer
// publishes.
type Key struct {
	Kid    string
	Method jwt.SigningMethod
	Priv   crypto.Signer
}

// Sign signs c with k, naming k's kid in the header unless it is empty.
func (k Key) Sign(t testing.TB, c jwt.Claims) string {
	t.Helper()
	var header map[string]any
	if k.Kid != "" {
		header = map[string]any{"kid": k.Kid}
	}
	return Sign(t, k.Method, k.Priv, c, header)
}

// Sign signs c with key by method, with header's entries added to the
// token's header.
func Sign(t testing.TB, method jwt.SigningMethod, key any, c jwt.Claims, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	for k, v := range header {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", method.Alg(), err)
	}
	return s
}

// RSAPrivateKey is one 2048-bit RSA key per test binary: they are slow to
// make under -race.
var RSAPrivateKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// RSAKey is RSAPrivateKey signing RS256 as kid.
func RSAKey(kid string) Key {
	return Key{Kid: kid, Method: jwt.SigningMethodRS256, Priv: RSAPrivateKey()}
}

// ECKey is a new P-256 key signing ES256 as kid.
func ECKey(t testing.TB, kid string) Key {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return Key{Kid: kid, Method: jwt.SigningMethodES256, Priv: k}
}

// EdKey is a new Ed25519 key signing EdDSA as kid.
func EdKey(t testing.TB, kid string) Key {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return Key{Kid: kid, Method: jwt.SigningMethodEdDSA, Priv: k}
}

// JWKS is the public JWK Set of keys, as an identity provider serves it.
func JWKS(t testing.TB, keys ...Key) []byte {
	t.Helper()
	ctx := context.Background()
	store := jwkset.NewMemoryStorage()
	for _, k := range keys {
		jwk, err := jwkset.NewJWKFromKey(k.Priv.Public(), jwkset.JWKOptions{
			Metadata: jwkset.JWKMetadataOptions{KID: k.Kid, ALG: jwkset.ALG(k.Method.Alg()), USE: jwkset.UseSig},
		})
		if err != nil {
			t.Fatalf("jwk %s: %v", k.Kid, err)
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

// JWKSServer is a real HTTP(S) JWKS endpoint whose document and status the
// test can change, and which counts the requests it gets.
type JWKSServer struct {
	*httptest.Server
	Status   atomic.Int32
	Requests atomic.Int64
	body     atomic.Pointer[[]byte]
}

// NewJWKSServer serves the public halves of keys, over TLS if tls; it closes
// when the test ends.
func NewJWKSServer(t testing.TB, tls bool, keys ...Key) *JWKSServer {
	t.Helper()
	s := &JWKSServer{}
	s.Status.Store(http.StatusOK)
	s.SetKeys(t, keys...)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.Requests.Add(1)
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.WriteHeader(int(s.Status.Load()))
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

// SetKeys replaces the served document with the public halves of keys: the
// identity provider rotates.
func (s *JWKSServer) SetKeys(t testing.TB, keys ...Key) {
	b := JWKS(t, keys...)
	s.body.Store(&b)
}

// SetBody replaces the served document with b, whatever it is.
func (s *JWKSServer) SetBody(b string) {
	raw := []byte(b)
	s.body.Store(&raw)
}
