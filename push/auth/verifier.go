package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims is what a verified token says about its bearer. It is a plain value,
// safe to copy and share.
type Claims struct {
	// Subject is the token's "sub": the user id rows are addressed to. Never
	// empty in Claims returned by Verify.
	Subject string
	// ExpiresAt is the token's "exp", or the zero time if the token has none
	// (such a token never expires; issuers should always set exp).
	ExpiresAt time.Time
	// ValidUntil is when Verify starts rejecting the token as expired:
	// ExpiresAt plus the configured leeway, or the zero time without exp. An
	// open WebSocket is closed at this instant, so a connection lives exactly
	// as long as its token would still open a new one.
	ValidUntil time.Time
}

// Verifier checks tokens against a [Config]. It is safe for concurrent use.
// Create it with [New] and release it with Close.
type Verifier struct {
	parser   *jwt.Parser
	secret   []byte
	allowed  []string
	leeway   time.Duration
	issuer   string
	audience string
	jwks     *jwksCache // nil without a JWKS URL
	log      *slog.Logger

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New validates cfg and returns a Verifier. With a JWKS URL it fetches the key
// set before returning (and fails if that fetch fails or yields no usable
// key), then refreshes it in a background goroutine that runs until ctx is
// done or Close is called; Close waits for it.
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()

	opts := []jwt.ParserOption{
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithIssuedAt(),
		// Canonical base64 only, so one token has one encoding.
		jwt.WithStrictDecoding(),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	// The allowed algorithms are enforced in keyFor rather than with
	// jwt.WithValidMethods, which would report them as a bad signature.

	ctx, cancel := context.WithCancel(ctx)
	v := &Verifier{
		parser:   jwt.NewParser(opts...),
		secret:   slices.Clone(cfg.Secret),
		allowed:  slices.Clone(cfg.Algorithms),
		leeway:   cfg.Leeway,
		issuer:   cfg.Issuer,
		audience: cfg.Audience,
		log:      cfg.Logger,
		cancel:   cancel,
	}
	if cfg.JWKSURL != "" {
		if strings.HasPrefix(cfg.JWKSURL, "http:") {
			v.log.Warn("JWKS URL is plain http: anyone on the path can swap the keys; use https outside a trusted network",
				"jwks_url", redactURL(cfg.JWKSURL))
		}
		j, err := newJWKSCache(ctx, cfg)
		if err != nil {
			cancel()
			return nil, err
		}
		if err := j.fetch(ctx); err != nil {
			j.closeIdle()
			cancel()
			return nil, fmt.Errorf("load jwks: %w", err)
		}
		v.jwks = j
		v.wg.Go(func() { j.refreshLoop(ctx, cfg.JWKSRefreshInterval) })
	}
	return v, nil
}

// Close stops the background JWKS refresh and waits for it to end. It is
// idempotent and always returns nil. Verify keeps working after Close with the
// keys it has, but no longer fetches new ones.
func (v *Verifier) Close() error {
	v.closeOnce.Do(func() {
		v.cancel()
		v.wg.Wait()
		if v.jwks != nil {
			v.jwks.closeIdle()
		}
	})
	return nil
}

// Sentinels that keyFor returns through the jwt parser, for reject.
var (
	errAlgNotAllowed = errors.New("algorithm not allowed")
	errUnknownKey    = errors.New("unknown signing key")
	errKeyMismatch   = errors.New("signing key does not fit algorithm")
	errBadHeader     = errors.New("bad token header")
)

// Verify checks token's signature, algorithm, exp, nbf, iat, iss and aud, and
// that it has a sub. On failure the error matches ErrUnauthorized (and
// ErrExpired for an expired token) and its text is a short reason without the
// token. A token with a kid the cached JWKS lacks may make Verify wait for one
// rate-limited JWKS fetch (each fetch is bounded by 10s); any other call does
// no I/O.
func (v *Verifier) Verify(token string) (Claims, error) {
	if token == "" {
		return Claims{}, unauthorized("missing token")
	}
	if len(token) > MaxTokenLength {
		return Claims{}, unauthorized("token too long")
	}
	var rc jwt.RegisteredClaims
	if _, err := v.parser.ParseWithClaims(token, &rc, v.keyFor); err != nil {
		return Claims{}, v.reject(err, &rc)
	}
	if rc.Subject == "" {
		return Claims{}, v.reject(nil, &rc)
	}
	c := Claims{Subject: rc.Subject}
	if rc.ExpiresAt != nil {
		c.ExpiresAt = rc.ExpiresAt.Time
		c.ValidUntil = c.ExpiresAt.Add(v.leeway)
	}
	return c, nil
}

// keyFor is the jwt.Keyfunc. It runs after the token is decoded and before
// its signature is checked, and pins each algorithm to one kind of key: the
// token's alg picks the allowed list entry, never the key.
func (v *Verifier) keyFor(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if !slices.Contains(v.allowed, alg) {
		return nil, errAlgNotAllowed
	}
	switch {
	case isHMAC(alg):
		if len(v.secret) == 0 { // Validate forbids this; stay closed anyway.
			return nil, errAlgNotAllowed
		}
		return v.secret, nil
	case isAsymmetric(alg):
		if v.jwks == nil {
			return nil, errAlgNotAllowed
		}
		return v.jwks.key(t)
	default:
		return nil, errAlgNotAllowed
	}
}

// reject maps a parse error (or nil for a missing sub) to the error Verify
// returns. rc holds whatever claims were decoded before the failure.
func (v *Verifier) reject(err error, rc *jwt.RegisteredClaims) error {
	var out error
	switch {
	case err == nil:
		out = unauthorized("token has no sub")
	case errors.Is(err, errAlgNotAllowed):
		out = unauthorized("token algorithm not allowed")
	case errors.Is(err, errUnknownKey):
		out = unauthorized("token signing key unknown")
	case errors.Is(err, errKeyMismatch), errors.Is(err, jwt.ErrTokenSignatureInvalid):
		out = unauthorized("token signature invalid")
	case errors.Is(err, errBadHeader), errors.Is(err, jwt.ErrTokenMalformed):
		out = unauthorized("malformed token")
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// The parser found no alg, or one it does not know (e.g. "None"),
		// before asking keyFor.
		out = unauthorized("token algorithm not allowed")
	// Past the signature: the claims are authentic, check them.
	case errors.Is(err, jwt.ErrTokenInvalidIssuer),
		errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && v.issuer != "" && rc.Issuer == "":
		out = unauthorized("token has wrong issuer")
	case errors.Is(err, jwt.ErrTokenInvalidAudience),
		errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && v.audience != "" && len(rc.Audience) == 0:
		out = unauthorized("token has wrong audience")
	case errors.Is(err, jwt.ErrTokenExpired):
		out = &authError{msg: "token expired", expired: true}
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		out = unauthorized("token not valid yet")
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		out = unauthorized("token issued in the future")
	default:
		out = unauthorized("token invalid")
	}
	// Only our fixed reason: the parser's detail may quote header values.
	v.log.Debug("token rejected", "reason", out.Error())
	return out
}
