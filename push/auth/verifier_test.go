package auth

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pgpush/pgpush/internal/testkit"
)

func TestVerifyHS256(t *testing.T) {
	t.Parallel()
	v := newVerifier(t, Config{Secret: testSecret})

	t.Run("good", func(t *testing.T) {
		tok, err := Mint(testSecret, "alice", time.Hour, "", "")
		if err != nil {
			t.Fatal(err)
		}
		c := mustVerify(t, v, tok)
		if c.Subject != "alice" {
			t.Errorf("subject %q, want alice", c.Subject)
		}
		if d := time.Until(c.ExpiresAt); d < 59*time.Minute || d > time.Hour {
			t.Errorf("expires in %v, want about 1h", d)
		}
		if d := c.ValidUntil.Sub(c.ExpiresAt); d != DefaultLeeway {
			t.Errorf("valid until %v after exp, want the leeway %v", d, DefaultLeeway)
		}
	})
	t.Run("no exp", func(t *testing.T) {
		tok := testkit.Sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "bob"}, nil)
		c := mustVerify(t, v, tok)
		if c.Subject != "bob" || !c.ExpiresAt.IsZero() || !c.ValidUntil.IsZero() {
			t.Errorf("claims %+v, want bob with zero ExpiresAt and ValidUntil", c)
		}
	})
	t.Run("kid is ignored for HS256", func(t *testing.T) {
		tok := testkit.Sign(t, jwt.SigningMethodHS256, testSecret, claims("carol", time.Hour, nil), map[string]any{"kid": "whatever"})
		mustVerify(t, v, tok)
	})
}

func TestVerifyRejects(t *testing.T) {
	t.Parallel()
	v := newVerifier(t, Config{Secret: testSecret})
	good := testkit.Sign(t, jwt.SigningMethodHS256, testSecret, claims("alice", time.Hour, nil), nil)
	parts := strings.Split(good, ".")
	garbage := make([]byte, 300)
	rand.Read(garbage)
	hs256 := map[string]any{"alg": "HS256", "typ": "JWT"}
	alice := map[string]any{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}

	otherSecret := []byte(strings.Repeat("x", 40))
	tampered := unsigned(t, hs256, map[string]any{"sub": "mallory", "exp": time.Now().Add(time.Hour).Unix()}, parts[2])

	tests := []struct {
		name, tok, want string
	}{
		{"missing", "", "missing token"},
		{"too long", strings.Repeat("a", MaxTokenLength+1), "token too long"},
		{"one segment", "abcdef", "malformed token"},
		{"two segments", parts[0] + "." + parts[1], "malformed token"},
		{"four segments", good + ".x", "malformed token"},
		{"dots", "..", "malformed token"},
		{"garbage bytes", string(garbage), "malformed token"},
		{"garbage base64", base64.RawURLEncoding.EncodeToString(garbage[:30]) + "." +
			base64.RawURLEncoding.EncodeToString(garbage[30:60]) + "." +
			base64.RawURLEncoding.EncodeToString(garbage[60:90]), "malformed token"},
		{"header not json", base64.RawURLEncoding.EncodeToString([]byte("nope")) + "." + parts[1] + "." + parts[2], "malformed token"},
		{"padded base64", parts[0] + "=." + parts[1] + "." + parts[2], "malformed token"},
		{"sub not a string", testkit.Sign(t, jwt.SigningMethodHS256, testSecret, claims("", time.Hour, map[string]any{"sub": 42}), nil), "malformed token"},
		{"exp not a number", testkit.Sign(t, jwt.SigningMethodHS256, testSecret, claims("alice", 0, map[string]any{"exp": "tomorrow"}), nil), "malformed token"},
		{"wrong secret", testkit.Sign(t, jwt.SigningMethodHS256, otherSecret, claims("alice", time.Hour, nil), nil), "token signature invalid"},
		{"tampered payload", tampered, "token signature invalid"},
		{"signature stripped", parts[0] + "." + parts[1] + ".", "token signature invalid"},
		{"alg none", unsigned(t, map[string]any{"alg": "none", "typ": "JWT"}, alice, ""), "token algorithm not allowed"},
		{"alg None", unsigned(t, map[string]any{"alg": "None"}, alice, ""), "token algorithm not allowed"},
		{"alg NONE with signature", unsigned(t, map[string]any{"alg": "NONE"}, alice, parts[2]), "token algorithm not allowed"},
		{"alg none with signature", unsigned(t, map[string]any{"alg": "none"}, alice, parts[2]), "token algorithm not allowed"},
		{"no alg", unsigned(t, map[string]any{"typ": "JWT"}, alice, parts[2]), "token algorithm not allowed"},
		{"alg not a string", unsigned(t, map[string]any{"alg": 256}, alice, parts[2]), "token algorithm not allowed"},
		{"HS512 not allowed", testkit.Sign(t, jwt.SigningMethodHS512, testSecret, claims("alice", time.Hour, nil), nil), "token algorithm not allowed"},
		{"RS256 without JWKS", testkit.RSAKey("k").Sign(t, claims("alice", time.Hour, nil)), "token algorithm not allowed"},
		{"no sub", testkit.Sign(t, jwt.SigningMethodHS256, testSecret, claims("", time.Hour, nil), nil), "token has no sub"},
		{"empty sub", testkit.Sign(t, jwt.SigningMethodHS256, testSecret, claims("", time.Hour, map[string]any{"sub": ""}), nil), "token has no sub"},
		{"nbf beyond leeway", testkit.Sign(t, jwt.SigningMethodHS256, testSecret, claims("alice", time.Hour, map[string]any{"nbf": time.Now().Add(time.Minute).Unix()}), nil), "token not valid yet"},
		{"iat beyond leeway", testkit.Sign(t, jwt.SigningMethodHS256, testSecret, claims("alice", time.Hour, map[string]any{"iat": time.Now().Add(time.Minute).Unix()}), nil), "token issued in the future"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mustReject(t, v, tt.tok, tt.want)
		})
	}
}

func TestVerifyExpiry(t *testing.T) {
	t.Parallel()
	v := newVerifier(t, Config{Secret: testSecret})

	expired := testkit.Sign(t, jwt.SigningMethodHS256, testSecret, claims("alice", -time.Minute, nil), nil)
	err := mustReject(t, v, expired, "token expired")
	if !errors.Is(err, ErrExpired) {
		t.Errorf("error %v does not match ErrExpired", err)
	}

	// Other rejections are not ErrExpired.
	_, err = v.Verify(testkit.Sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("y", 32)), claims("alice", -time.Minute, nil), nil))
	if errors.Is(err, ErrExpired) {
		t.Errorf("a forged expired token matches ErrExpired: the signature must fail first")
	}

	// Within the default 30s leeway.
	mustVerify(t, v, testkit.Sign(t, jwt.SigningMethodHS256, testSecret, claims("alice", -10*time.Second, nil), nil))
	mustVerify(t, v, testkit.Sign(t, jwt.SigningMethodHS256, testSecret,
		claims("alice", time.Hour, map[string]any{"nbf": time.Now().Add(10 * time.Second).Unix(), "iat": time.Now().Add(10 * time.Second).Unix()}), nil))

	// A tighter leeway rejects the same token.
	strict := newVerifier(t, Config{Secret: testSecret, Leeway: time.Second})
	mustReject(t, strict, testkit.Sign(t, jwt.SigningMethodHS256, testSecret, claims("alice", -10*time.Second, nil), nil), "token expired")
	mustReject(t, strict, testkit.Sign(t, jwt.SigningMethodHS256, testSecret,
		claims("alice", time.Hour, map[string]any{"nbf": time.Now().Add(10 * time.Second).Unix()}), nil), "token not valid yet")
}

func TestVerifyIssuerAudience(t *testing.T) {
	t.Parallel()
	v := newVerifier(t, Config{Secret: testSecret, Issuer: "https://id.example.com", Audience: "pgpush"})
	sign := func(extra map[string]any) string {
		return testkit.Sign(t, jwt.SigningMethodHS256, testSecret, claims("alice", time.Hour, extra), nil)
	}

	mustVerify(t, v, sign(map[string]any{"iss": "https://id.example.com", "aud": "pgpush"}))
	mustVerify(t, v, sign(map[string]any{"iss": "https://id.example.com", "aud": []string{"api", "pgpush"}}))
	tok, err := Mint(testSecret, "alice", time.Minute, "https://id.example.com", "pgpush")
	if err != nil {
		t.Fatal(err)
	}
	mustVerify(t, v, tok)

	mustReject(t, v, sign(map[string]any{"iss": "https://evil.example.com", "aud": "pgpush"}), "token has wrong issuer")
	mustReject(t, v, sign(map[string]any{"aud": "pgpush"}), "token has wrong issuer")
	mustReject(t, v, sign(map[string]any{"iss": "https://id.example.com", "aud": "other"}), "token has wrong audience")
	mustReject(t, v, sign(map[string]any{"iss": "https://id.example.com", "aud": []string{"a", "b"}}), "token has wrong audience")
	mustReject(t, v, sign(map[string]any{"iss": "https://id.example.com"}), "token has wrong audience")

	// Without Issuer and Audience configured, any iss and aud pass.
	open := newVerifier(t, Config{Secret: testSecret})
	mustVerify(t, open, sign(map[string]any{"iss": "anyone", "aud": "anything"}))
}

func TestCloseIdempotent(t *testing.T) {
	t.Parallel()
	v, err := New(t.Context(), Config{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := Mint(testSecret, "alice", time.Hour, "", "")
	v.Close()
	v.Close()
	// Verification needs no background work and still answers.
	mustVerify(t, v, tok)
}

func TestMint(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		secret []byte
		sub    string
		ttl    time.Duration
		want   string
	}{
		{"short secret", []byte("short"), "alice", time.Hour, "secret is 5 bytes"},
		{"no subject", testSecret, "", time.Hour, "empty subject"},
		{"zero ttl", testSecret, "alice", 0, "ttl 0s is not positive"},
		{"negative ttl", testSecret, "alice", -time.Second, "is not positive"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Mint(tt.secret, tt.sub, tt.ttl, "", "")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Mint error %v, want one containing %q", err, tt.want)
			}
		})
	}

	tok, err := Mint(testSecret, "alice", time.Hour, "iss-x", "aud-y")
	if err != nil {
		t.Fatal(err)
	}
	var rc jwt.RegisteredClaims
	if _, err := jwt.ParseWithClaims(tok, &rc, func(*jwt.Token) (any, error) { return testSecret, nil },
		jwt.WithValidMethods([]string{"HS256"})); err != nil {
		t.Fatal(err)
	}
	if rc.Subject != "alice" || rc.Issuer != "iss-x" || len(rc.Audience) != 1 || rc.Audience[0] != "aud-y" ||
		rc.IssuedAt == nil || rc.ExpiresAt == nil {
		t.Errorf("claims %+v", rc)
	}
}
