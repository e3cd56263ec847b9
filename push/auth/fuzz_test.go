package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// FuzzVerify feeds arbitrary strings to an HS256 Verifier. It must never
// panic, must reject with ErrUnauthorized without quoting the input, and
// must accept only tokens that an independent check finds HS256-signed with
// testSecret and carrying a sub. The seeds in testdata/fuzz/FuzzVerify include
// a valid token (exp in 2126), an alg:none token and garbage.
func FuzzVerify(f *testing.F) {
	v := newVerifier(f, Config{Secret: testSecret})
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(token)
		if err != nil {
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("error %v does not match ErrUnauthorized", err)
			}
			if len(token) > 40 && strings.Contains(err.Error(), token) {
				t.Fatalf("error quotes the token")
			}
			return
		}
		if c.Subject == "" {
			t.Fatalf("accepted a token without sub")
		}
		if !signedWithTestSecret(token) {
			t.Fatalf("accepted a token not HS256-signed with the test secret: %q", token)
		}
	})
}

// signedWithTestSecret checks a token the slow, obvious way.
func signedWithTestSecret(token string) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return false
	}
	rawHeader, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return false
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(rawHeader, &header) != nil || header.Alg != "HS256" {
		return false
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, testSecret)
	mac.Write([]byte(parts[0] + "." + parts[1]))
	return hmac.Equal(sig, mac.Sum(nil))
}

// TestFuzzSeeds keeps the checked-in seeds meaningful: the valid ones must
// verify, so the fuzzer starts from an accepted token, and the others must not.
func TestFuzzSeeds(t *testing.T) {
	t.Parallel()
	v := newVerifier(t, Config{Secret: testSecret})
	want := map[string]string{
		"valid":           "",
		"valid_no_exp":    "",
		"alg_none":        "token algorithm not allowed",
		"alg_none_signed": "token algorithm not allowed",
		"hs512_header":    "token algorithm not allowed",
		"wrong_secret":    "token signature invalid",
		"no_sub":          "token has no sub",
		"expired":         "token expired",
		"garbage":         "malformed token",
		"dots":            "malformed token",
		"empty":           "missing token",
	}
	for name, msg := range want {
		raw, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzVerify", name))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		if len(lines) != 2 || lines[0] != "go test fuzz v1" {
			t.Fatalf("seed %s: not a go fuzz v1 file", name)
		}
		tok, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "string("), ")"))
		if err != nil {
			t.Fatalf("seed %s: %v", name, err)
		}
		if msg == "" {
			mustVerify(t, v, tok)
		} else {
			mustReject(t, v, tok, msg)
		}
	}
}
