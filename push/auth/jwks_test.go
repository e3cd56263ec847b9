package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pgpush/pgpush/internal/testkit"
)

// A long unknown-kid limit, so a test sees exactly the refreshes it causes.
const noSecondRefresh = time.Hour

func TestJWKSAlgorithms(t *testing.T) {
	t.Parallel()
	rsaK, ecK, edK := testkit.RSAKey("rsa-1"), testkit.ECKey(t, "ec-1"), testkit.EdKey(t, "ed-1")
	srv := testkit.NewJWKSServer(t, false, rsaK, ecK, edK)
	v := newVerifier(t, Config{JWKSURL: srv.URL, JWKSUnknownKIDRateLimit: noSecondRefresh})

	for _, k := range []testkit.Key{rsaK, ecK, edK} {
		t.Run(k.Method.Alg(), func(t *testing.T) {
			c := mustVerify(t, v, k.Sign(t, claims("user-"+k.Kid, time.Hour, nil)))
			if c.Subject != "user-"+k.Kid {
				t.Errorf("subject %q", c.Subject)
			}
		})
	}
	t.Run("no kid", func(t *testing.T) {
		noKID := ecK
		noKID.Kid = ""
		mustVerify(t, v, noKID.Sign(t, claims("alice", time.Hour, nil)))
	})
	t.Run("no kid, unknown key", func(t *testing.T) {
		mustReject(t, v, testkit.ECKey(t, "").Sign(t, claims("alice", time.Hour, nil)), "token signature invalid")
	})
	t.Run("kid of another key", func(t *testing.T) {
		// Signed by an EC key the set lacks, naming a key the set has.
		mustReject(t, v, testkit.ECKey(t, "ec-1").Sign(t, claims("alice", time.Hour, nil)), "token signature invalid")
	})
	t.Run("kid of a key for another alg", func(t *testing.T) {
		k := rsaK
		k.Kid = "ec-1"
		mustReject(t, v, k.Sign(t, claims("alice", time.Hour, nil)), "token signature invalid")
	})
	t.Run("kid not a string", func(t *testing.T) {
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims("alice", time.Hour, nil))
		tok.Header["kid"] = 7
		s, err := tok.SignedString(ecK.Priv)
		if err != nil {
			t.Fatal(err)
		}
		mustReject(t, v, s, "malformed token")
	})
	t.Run("alg not in the default list", func(t *testing.T) {
		k := rsaK
		k.Method = jwt.SigningMethodPS256
		mustReject(t, v, k.Sign(t, claims("alice", time.Hour, nil)), "token algorithm not allowed")
	})
	t.Run("HS256 not allowed without a secret", func(t *testing.T) {
		mustReject(t, v, testkit.Sign(t, jwt.SigningMethodHS256, testSecret, claims("alice", time.Hour, nil), nil), "token algorithm not allowed")
	})
	t.Run("expired", func(t *testing.T) {
		err := mustReject(t, v, edK.Sign(t, claims("alice", -time.Hour, nil)), "token expired")
		if !errors.Is(err, ErrExpired) {
			t.Errorf("error %v does not match ErrExpired", err)
		}
	})
	t.Run("no sub", func(t *testing.T) {
		mustReject(t, v, rsaK.Sign(t, claims("", time.Hour, nil)), "token has no sub")
	})

	if n := srv.Requests.Load(); n != 1 {
		t.Errorf("%d JWKS requests, want 1 (the known keys need no refresh)", n)
	}
}

func TestJWKSAndSecretTogether(t *testing.T) {
	t.Parallel()
	k := testkit.ECKey(t, "ec-1")
	srv := testkit.NewJWKSServer(t, false, k)
	v := newVerifier(t, Config{Secret: testSecret, JWKSURL: srv.URL})
	mustVerify(t, v, k.Sign(t, claims("alice", time.Hour, nil)))
	tok, err := Mint(testSecret, "bob", time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	mustVerify(t, v, tok)
}

// TestAlgorithmConfusion signs HS256 tokens with the RSA public key the JWKS
// serves as the HMAC secret, in every encoding an attacker might try. A
// verifier that let the token's alg pick how the JWKS key is used would
// accept them.
func TestAlgorithmConfusion(t *testing.T) {
	t.Parallel()
	k := testkit.RSAKey("rsa-1")
	srv := testkit.NewJWKSServer(t, false, k)
	jwksOnly := newVerifier(t, Config{JWKSURL: srv.URL})
	withSecret := newVerifier(t, Config{JWKSURL: srv.URL, Secret: testSecret})

	pub := &testkit.RSAPrivateKey().PublicKey
	pkix, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := x509.MarshalPKCS1PublicKey(pub)
	secrets := map[string][]byte{
		"PKIX PEM":  pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}),
		"PKCS1 PEM": pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: pkcs1}),
		"PKIX DER":  pkix,
		"PKCS1 DER": pkcs1,
		"modulus":   pub.N.Bytes(),
		"JWKS JSON": testkit.JWKS(t, k),
	}
	for name, secret := range secrets {
		t.Run(name, func(t *testing.T) {
			for _, method := range []jwt.SigningMethod{jwt.SigningMethodHS256, jwt.SigningMethodHS512} {
				tok := testkit.Sign(t, method, secret, claims("mallory", time.Hour, nil), map[string]any{"kid": "rsa-1"})
				mustReject(t, jwksOnly, tok, "token algorithm not allowed")
			}
			tok := testkit.Sign(t, jwt.SigningMethodHS256, secret, claims("mallory", time.Hour, nil), map[string]any{"kid": "rsa-1"})
			mustReject(t, withSecret, tok, "token signature invalid")
		})
	}
	// The real key still works on both.
	mustVerify(t, jwksOnly, k.Sign(t, claims("alice", time.Hour, nil)))
	mustVerify(t, withSecret, k.Sign(t, claims("alice", time.Hour, nil)))
}

func TestJWKSKeyRotation(t *testing.T) {
	t.Parallel()
	oldK, newK := testkit.ECKey(t, "2026-01"), testkit.EdKey(t, "2026-02")
	srv := testkit.NewJWKSServer(t, false, oldK)
	v := newVerifier(t, Config{JWKSURL: srv.URL, JWKSRefreshInterval: time.Hour, JWKSUnknownKIDRateLimit: noSecondRefresh})

	oldTok := oldK.Sign(t, claims("alice", time.Hour, nil))
	mustVerify(t, v, oldTok)

	// The identity provider rotates: the old key is withdrawn, a new one
	// published under a new kid. The first token naming it makes the
	// verifier fetch the set again; no restart.
	srv.SetKeys(t, newK)
	mustVerify(t, v, newK.Sign(t, claims("alice", time.Hour, nil)))
	if n := srv.Requests.Load(); n != 2 {
		t.Errorf("%d JWKS requests, want 2 (initial, one for the new kid)", n)
	}
	mustVerify(t, v, newK.Sign(t, claims("bob", time.Hour, nil)))

	// The withdrawn key is gone with the refresh, and asking for it again
	// within the rate limit fetches nothing.
	mustReject(t, v, oldTok, "token signing key unknown")
	if n := srv.Requests.Load(); n != 2 {
		t.Errorf("%d JWKS requests, want still 2", n)
	}
}

// TestJWKSRotationBurst sends many tokens signed with a freshly rotated key
// at once: they share one fetch, and none is refused for the rate limit.
func TestJWKSRotationBurst(t *testing.T) {
	t.Parallel()
	oldK, newK := testkit.ECKey(t, "old"), testkit.ECKey(t, "new")
	srv := testkit.NewJWKSServer(t, false, oldK)
	v := newVerifier(t, Config{JWKSURL: srv.URL, JWKSRefreshInterval: time.Hour, JWKSUnknownKIDRateLimit: noSecondRefresh})
	srv.SetKeys(t, oldK, newK)

	tok := newK.Sign(t, claims("alice", time.Hour, nil))
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			_, err := v.Verify(tok)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Verify during rotation: %v", err)
		}
	}
	if n := srv.Requests.Load(); n != 2 {
		t.Errorf("%d JWKS requests, want 2", n)
	}
}

// TestJWKSUnknownKIDFlood sends many tokens with made-up kids: the identity
// provider must see no more fetches than the rate limit allows.
func TestJWKSUnknownKIDFlood(t *testing.T) {
	t.Parallel()
	known := testkit.ECKey(t, "known")
	attacker := testkit.ECKey(t, "")
	flood := func(t *testing.T, v *Verifier, n int) {
		t.Helper()
		toks := make(chan string, n)
		for i := range n {
			k := attacker
			k.Kid = fmt.Sprintf("made-up-%d", i)
			toks <- k.Sign(t, claims("mallory", time.Hour, nil))
		}
		close(toks)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for tok := range toks {
					if _, err := v.Verify(tok); err == nil {
						t.Error("token with an unknown kid accepted")
					} else if err.Error() != "token signing key unknown" {
						t.Errorf("error %q, want token signing key unknown", err)
					}
				}
			})
		}
		wg.Wait()
	}

	t.Run("one refresh per interval", func(t *testing.T) {
		srv := testkit.NewJWKSServer(t, false, known)
		v := newVerifier(t, Config{JWKSURL: srv.URL, JWKSRefreshInterval: time.Hour, JWKSUnknownKIDRateLimit: noSecondRefresh})
		flood(t, v, 400)
		if n := srv.Requests.Load(); n != 2 {
			t.Errorf("%d JWKS requests for 400 unknown kids, want 2 (initial, one refresh)", n)
		}
		mustVerify(t, v, known.Sign(t, claims("alice", time.Hour, nil)))
	})

	t.Run("short interval", func(t *testing.T) {
		const limit = 50 * time.Millisecond
		srv := testkit.NewJWKSServer(t, false, known)
		v := newVerifier(t, Config{JWKSURL: srv.URL, JWKSRefreshInterval: time.Hour, JWKSUnknownKIDRateLimit: limit})
		start := time.Now()
		for time.Since(start) < 6*limit {
			flood(t, v, 80)
		}
		elapsed := time.Since(start)
		// The initial fetch, one at once, then at most one per interval; and
		// the limit is a rate, not a one-off: refreshes resume.
		n, most := srv.Requests.Load(), 2+int64(elapsed/limit)
		if n > most || n < 3 {
			t.Errorf("%d JWKS requests in %v, want 3 to %d", n, elapsed, most)
		}
	})
}

func TestJWKSBackgroundRefresh(t *testing.T) {
	t.Parallel()
	oldK, newK := testkit.ECKey(t, "old"), testkit.ECKey(t, "new")
	srv := testkit.NewJWKSServer(t, false, oldK)
	v := newVerifier(t, Config{JWKSURL: srv.URL, JWKSRefreshInterval: 10 * time.Millisecond, JWKSUnknownKIDRateLimit: noSecondRefresh})

	// Spend the one unknown-kid refresh, so only the background loop can
	// bring the new key.
	mustReject(t, v, newK.Sign(t, claims("alice", time.Hour, nil)), "token signing key unknown")

	srv.SetKeys(t, oldK, newK)
	waitFor(t, "the background refresh to load the new key", func() bool {
		_, err := v.Verify(newK.Sign(t, claims("alice", time.Hour, nil)))
		return err == nil
	})

	// A failing identity provider leaves the cached keys in place.
	srv.Status.Store(500)
	failedFrom := srv.Requests.Load()
	waitFor(t, "failed refreshes", func() bool { return srv.Requests.Load() >= failedFrom+3 })
	mustVerify(t, v, newK.Sign(t, claims("alice", time.Hour, nil)))
	mustVerify(t, v, oldK.Sign(t, claims("alice", time.Hour, nil)))

	// So does a set with nothing usable in it.
	srv.Status.Store(200)
	srv.SetBody(`{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"old"}]}`)
	from := srv.Requests.Load()
	waitFor(t, "refreshes of the unusable set", func() bool { return srv.Requests.Load() >= from+3 })
	mustVerify(t, v, oldK.Sign(t, claims("alice", time.Hour, nil)))
}

func TestJWKSStopsWithContextAndClose(t *testing.T) {
	t.Parallel()
	k := testkit.ECKey(t, "k")
	srv := testkit.NewJWKSServer(t, false, k)

	// Requests are counted where they start, in the client: the server
	// may still see one that Close cancelled in flight.
	var started atomic.Int64
	client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		started.Add(1)
		return http.DefaultTransport.RoundTrip(r)
	})}
	ctx, cancel := context.WithCancel(context.Background())
	v, err := New(ctx, Config{JWKSURL: srv.URL, JWKSRefreshInterval: time.Millisecond, HTTPClient: client})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "background refreshes", func() bool { return started.Load() >= 3 })
	cancel()
	// Close after the context ended still waits for the goroutine, and twice
	// is fine; goleak in TestMain checks nothing is left.
	v.Close()
	v.Close()
	n := started.Load()
	// Cached keys still verify; an unknown kid can no longer fetch.
	mustVerify(t, v, k.Sign(t, claims("alice", time.Hour, nil)))
	mustReject(t, v, testkit.ECKey(t, "other").Sign(t, claims("alice", time.Hour, nil)), "token signing key unknown")
	if m := started.Load(); m != n {
		t.Errorf("%d JWKS requests after Close", m-n)
	}
}

func TestJWKSNewFails(t *testing.T) {
	t.Parallel()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"server error", 500, `{"keys":[]}`, "status 500"},
		{"not found", 404, `not here`, "status 404"},
		{"not json", 200, `<html>`, "decode jwks"},
		{"empty set", 200, `{"keys":[]}`, "no usable signing key (0 keys listed)"},
		{"only symmetric", 200, `{"keys":[{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0","kid":"h"}]}`, "no usable signing key (1 keys listed)"},
		{"only encryption", 200, string(testkit.JWKS(t, testkit.Key{Kid: "e", Method: jwt.SigningMethodES384, Priv: p384})), ""},
		{"only short RSA", 200, string(testkit.JWKS(t, testkit.Key{Kid: "s", Method: jwt.SigningMethodRS256, Priv: small})), "no usable signing key (1 keys listed)"},
		{"too large", 200, `{"keys":[` + strings.Repeat(" ", maxJWKSBytes) + `]}`, "larger than"},
	}
	for _, tt := range tests {
		if tt.name == "only encryption" {
			tt.body = strings.Replace(tt.body, `"use":"sig"`, `"use":"enc"`, 1)
			tt.want = "no usable signing key (1 keys listed)"
		}
		t.Run(tt.name, func(t *testing.T) {
			srv := testkit.NewJWKSServer(t, false)
			srv.Status.Store(int32(tt.status))
			srv.SetBody(tt.body)
			v, err := New(context.Background(), Config{JWKSURL: srv.URL})
			if err == nil {
				v.Close()
				t.Fatalf("New succeeded, want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New error %q, want one containing %q", err, tt.want)
			}
		})
	}

	t.Run("unreachable", func(t *testing.T) {
		srv := testkit.NewJWKSServer(t, false)
		url := srv.URL
		srv.Close()
		if _, err := New(context.Background(), Config{JWKSURL: url}); err == nil || !strings.Contains(err.Error(), "load jwks") {
			t.Errorf("New error %v, want load jwks", err)
		}
	})
	t.Run("cancelled context", func(t *testing.T) {
		srv := testkit.NewJWKSServer(t, false, testkit.ECKey(t, "k"))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := New(ctx, Config{JWKSURL: srv.URL}); !errors.Is(err, context.Canceled) {
			t.Errorf("New error %v, want context.Canceled", err)
		}
	})
}

func TestJWKSSkipsUnusableKeys(t *testing.T) {
	t.Parallel()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weak := testkit.Key{Kid: "weak", Method: jwt.SigningMethodRS256, Priv: small}
	good := testkit.ECKey(t, "good")
	srv := testkit.NewJWKSServer(t, false, weak, good)
	v := newVerifier(t, Config{JWKSURL: srv.URL})
	mustVerify(t, v, good.Sign(t, claims("alice", time.Hour, nil)))
	mustReject(t, v, weak.Sign(t, claims("alice", time.Hour, nil)), "token signing key unknown")
}

func TestJWKSOverTLS(t *testing.T) {
	t.Parallel()
	k := testkit.EdKey(t, "ed")
	srv := testkit.NewJWKSServer(t, true, k)

	// The default client does not trust the test CA: proof that HTTPClient
	// is the one used.
	if _, err := New(context.Background(), Config{JWKSURL: srv.URL}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("New with the default client: %v, want a certificate error", err)
	}
	v := newVerifier(t, Config{JWKSURL: srv.URL, HTTPClient: srv.Client()})
	mustVerify(t, v, k.Sign(t, claims("alice", time.Hour, nil)))
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
