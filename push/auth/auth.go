// Package auth verifies the JSON Web Tokens that authenticate pgpush clients.
//
// Every /v1 HTTP request and every WebSocket upgrade carries a token; the
// server takes it from the request with [FromRequest] and checks it with
// [Verifier.Verify] before it answers or upgrades, so a bad token gets a 401
// while a 401 is still possible. The token's "sub" claim is the user id that
// rows of the notifications table are addressed to.
//
// Two kinds of key are supported, alone or together: an HS256 shared secret
// (PGPUSH_JWT_SECRET) and the public keys of a JWKS endpoint (PGPUSH_JWKS_URL)
// for RS256, ES256 and EdDSA tokens. Each allowed algorithm is pinned to one
// kind of key, so a token can never choose how it is checked: an HMAC token is
// only ever checked with the secret and an asymmetric one only with a JWKS key,
// which defeats the "HS256 signed with the RSA public key" confusion attack, and
// "none" is never allowed.
//
// Errors from this package never contain the token. Their Error text is a short
// message meant for the "message" field of a 401 body.
package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// MaxTokenLength is the longest token accepted, in bytes. Real tokens are a
// few hundred bytes; the cap keeps a hostile client from making the server
// parse and hash megabytes.
const MaxTokenLength = 8 << 10

// Defaults for the zero values of [Config].
const (
	// DefaultLeeway is the clock skew tolerated when checking exp, nbf and iat.
	DefaultLeeway = 30 * time.Second
	// DefaultJWKSRefreshInterval is how often the JWKS is fetched again in the
	// background.
	DefaultJWKSRefreshInterval = 5 * time.Minute
	// DefaultJWKSUnknownKIDRateLimit is the shortest time between two JWKS
	// fetches triggered by tokens whose kid is not in the cached set.
	DefaultJWKSUnknownKIDRateLimit = 10 * time.Second
)

// MinSecretLength is the shortest HS256 secret accepted, in bytes: RFC 7518
// §3.2 requires an HMAC key at least as long as the hash output. HS384 and
// HS512, when allowed, need 48 and 64 bytes.
const MinSecretLength = 32

var (
	// ErrUnauthorized is matched (with errors.Is) by every error that
	// [Verifier.Verify] and [FromRequest] return: the request gets a 401.
	ErrUnauthorized = errors.New("unauthorized")

	// ErrExpired is matched, in addition to ErrUnauthorized, by the error for
	// a token whose exp has passed, so that an open WebSocket can close with
	// 4001 and the client knows to fetch a fresh token.
	ErrExpired = errors.New("token expired")

	// ErrInvalidConfig is matched by the errors of [Config.Validate] and [New]
	// for a configuration that cannot work.
	ErrInvalidConfig = errors.New("invalid auth config")
)

// authError is the error of a rejected token. Its text is only the short
// message, so the HTTP layer can put Error() in the 401 body as it is.
type authError struct {
	msg     string
	expired bool
}

func (e *authError) Error() string { return e.msg }

func (e *authError) Unwrap() []error {
	if e.expired {
		return []error{ErrUnauthorized, ErrExpired}
	}
	return []error{ErrUnauthorized}
}

func unauthorized(msg string) error { return &authError{msg: msg} }

// Config configures a [Verifier]. Zero values mean the documented default;
// Validate says what is wrong with a configuration. At least one of Secret and
// JWKSURL must be set: pgpush has no open mode. A Config is a plain value: New
// copies what it keeps, so changing a Config (or its Secret) afterwards does
// not affect the Verifier. Its String and LogValue redact the secret.
type Config struct {
	// Secret is the HS256 shared secret (PGPUSH_JWT_SECRET). It must be at
	// least MinSecretLength (32) bytes, and should be random
	// (e.g. `openssl rand -base64 48`). Empty: HMAC tokens are not accepted.
	Secret []byte

	// JWKSURL is an http(s) URL serving a JSON Web Key Set (PGPUSH_JWKS_URL)
	// whose RSA, EC and Ed25519 keys verify RS256, ES256 and EdDSA tokens.
	// The set is fetched once by New (which fails if it cannot be fetched),
	// then every JWKSRefreshInterval in the background, and again, rate
	// limited, when a token names a kid the cached set lacks (key rotation).
	// A failed refresh keeps the previous keys. Empty: no JWKS.
	JWKSURL string

	// Issuer, when set, must equal the token's "iss" (PGPUSH_JWT_ISSUER).
	Issuer string
	// Audience, when set, must be one of the token's "aud" values
	// (PGPUSH_JWT_AUDIENCE).
	Audience string

	// Algorithms are the accepted "alg" values. Default: HS256 when Secret is
	// set, plus RS256, ES256 and EdDSA when JWKSURL is set. Known values are
	// HS256, HS384, HS512 (need Secret) and RS256, RS384, RS512, PS256,
	// PS384, PS512, ES256, ES384, ES512, EdDSA (need JWKSURL). "none" is
	// never accepted.
	Algorithms []string

	// Leeway is the clock skew tolerated when checking exp, nbf and iat.
	// Default DefaultLeeway (30s); at most 5 minutes.
	Leeway time.Duration

	// JWKSRefreshInterval is how often the JWKS is fetched in the background.
	// Default DefaultJWKSRefreshInterval (5m).
	JWKSRefreshInterval time.Duration

	// JWKSUnknownKIDRateLimit is the shortest time between two JWKS fetches
	// caused by tokens with an unknown kid, so a flood of made-up kids cannot
	// turn into a flood of requests to the identity provider. Tokens that
	// arrive while such a fetch runs wait for it; later ones within the
	// interval are rejected at once. Default DefaultJWKSUnknownKIDRateLimit
	// (10s).
	JWKSUnknownKIDRateLimit time.Duration

	// HTTPClient fetches the JWKS. Default: a client of the Verifier's own
	// (a clone of http.DefaultTransport), whose idle connections Close closes.
	// Each fetch is bounded by a 10s timeout regardless.
	HTTPClient *http.Client

	// Logger receives JWKS refresh events and, at debug level, the reason a
	// token was rejected (never the token). Default: discard.
	Logger *slog.Logger
}

// hmacAlgs and asymmetricAlgs are every algorithm this package can pin. Each
// maps to the minimum secret length or to nothing.
var (
	hmacAlgs       = map[string]int{"HS256": 32, "HS384": 48, "HS512": 64}
	asymmetricAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

func isHMAC(alg string) bool {
	_, ok := hmacAlgs[alg]
	return ok
}

func isAsymmetric(alg string) bool { return slices.Contains(asymmetricAlgs, alg) }

// algorithms returns the configured algorithms or the default for the keys set.
func (c Config) algorithms() []string {
	if len(c.Algorithms) > 0 {
		return c.Algorithms
	}
	var algs []string
	if len(c.Secret) > 0 {
		algs = append(algs, "HS256")
	}
	if c.JWKSURL != "" {
		algs = append(algs, "RS256", "ES256", "EdDSA")
	}
	return algs
}

// withDefaults returns c with every zero field replaced by its default.
func (c Config) withDefaults() Config {
	c.Algorithms = c.algorithms()
	if c.Leeway == 0 {
		c.Leeway = DefaultLeeway
	}
	if c.JWKSRefreshInterval == 0 {
		c.JWKSRefreshInterval = DefaultJWKSRefreshInterval
	}
	if c.JWKSUnknownKIDRateLimit == 0 {
		c.JWKSUnknownKIDRateLimit = DefaultJWKSUnknownKIDRateLimit
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

const maxLeeway = 5 * time.Minute

// Validate reports every problem with c in one error matching
// ErrInvalidConfig, or nil. It never includes the secret.
func (c Config) Validate() error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	if len(c.Secret) == 0 && c.JWKSURL == "" {
		add("neither a JWT secret (PGPUSH_JWT_SECRET) nor a JWKS URL (PGPUSH_JWKS_URL) is set; " +
			"pgpush refuses to run without token verification")
	}
	if c.JWKSURL != "" {
		u, err := url.Parse(c.JWKSURL)
		switch {
		case err != nil:
			add("JWKS URL (PGPUSH_JWKS_URL) does not parse")
		case u.Scheme != "https" && u.Scheme != "http":
			add("JWKS URL (PGPUSH_JWKS_URL) must be an http or https URL, not %q", u.Scheme)
		case u.Host == "":
			add("JWKS URL (PGPUSH_JWKS_URL) has no host")
		}
	}

	minSecret := 0
	if len(c.Secret) > 0 {
		minSecret = MinSecretLength
	}
	for _, alg := range c.Algorithms {
		switch {
		case strings.EqualFold(alg, "none"):
			add(`algorithm "none" is never allowed: it accepts unsigned tokens`)
		case isHMAC(alg):
			if len(c.Secret) == 0 {
				add("algorithm %s needs a JWT secret (PGPUSH_JWT_SECRET)", alg)
			}
			minSecret = max(minSecret, hmacAlgs[alg])
		case isAsymmetric(alg):
			if c.JWKSURL == "" {
				add("algorithm %s needs a JWKS URL (PGPUSH_JWKS_URL)", alg)
			}
		default:
			add("unknown algorithm %q (known: HS256, HS384, HS512, %s)", alg, strings.Join(asymmetricAlgs, ", "))
		}
	}
	if len(c.Secret) > 0 && len(c.Secret) < minSecret {
		add("JWT secret (PGPUSH_JWT_SECRET) is %d bytes; it must be at least %d random bytes "+
			"(generate one with: openssl rand -base64 48)", len(c.Secret), minSecret)
	}

	if c.Leeway < 0 {
		add("Leeway must not be negative")
	} else if c.Leeway > maxLeeway {
		add("Leeway %v is more than %v; clock skew that large is a broken clock", c.Leeway, maxLeeway)
	}
	if c.JWKSRefreshInterval < 0 {
		add("JWKSRefreshInterval must not be negative")
	}
	if c.JWKSUnknownKIDRateLimit < 0 {
		add("JWKSUnknownKIDRateLimit must not be negative")
	}

	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrInvalidConfig, strings.Join(problems, "; "))
}

// String describes c for humans with the secret redacted, so printing or
// logging a Config never leaks it.
func (c Config) String() string {
	secret := "unset"
	if len(c.Secret) > 0 {
		secret = fmt.Sprintf("[%d bytes redacted]", len(c.Secret))
	}
	return fmt.Sprintf("auth.Config{Secret: %s, JWKSURL: %q, Issuer: %q, Audience: %q, Algorithms: %v, Leeway: %v, "+
		"JWKSRefreshInterval: %v, JWKSUnknownKIDRateLimit: %v}",
		secret, redactURL(c.JWKSURL), c.Issuer, c.Audience, c.Algorithms, c.Leeway,
		c.JWKSRefreshInterval, c.JWKSUnknownKIDRateLimit)
}

// LogValue implements slog.LogValuer with the secret redacted.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int("secret_bytes", len(c.Secret)),
		slog.String("jwks_url", redactURL(c.JWKSURL)),
		slog.String("issuer", c.Issuer),
		slog.String("audience", c.Audience),
		slog.Any("algorithms", c.Algorithms),
		slog.Duration("leeway", c.Leeway),
	)
}

// redactURL hides a password in the URL's userinfo; a JWKS URL is public
// otherwise.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable)"
	}
	return u.Redacted()
}
