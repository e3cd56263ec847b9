package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
)

const (
	// jwksFetchTimeout bounds one JWKS request, including the wait of a
	// token whose unknown kid triggered it.
	jwksFetchTimeout = 10 * time.Second
	// maxJWKSBytes caps a JWKS document; real ones are a few KiB.
	maxJWKSBytes = 1 << 20
	// minRSABits is the smallest RSA modulus accepted from a JWKS.
	minRSABits = 2048
)

// jwksCache holds the public keys of a JWKS endpoint and keeps them fresh. It
// is safe for concurrent use.
//
// It does its own fetching instead of using jwkset's HTTP storage, whose
// refresh goroutine cannot be waited for and whose unknown-kid limiter makes
// every caller wait for its turn instead of failing fast; keyfunc and jwkset
// still parse the keys and pick the one a token names.
type jwksCache struct {
	url       string
	client    *http.Client
	transport *http.Transport // ours to close; nil when the client was given
	store     *jwkset.MemoryJWKSet
	kf        keyfunc.Keyfunc
	limiter   *rate.Limiter // unknown-kid fetches
	flight    singleflight.Group
	fetchMu   sync.Mutex      // one fetch at a time, so an older answer never overwrites a newer one
	ctx       context.Context // the Verifier's lifetime, for fetches a token triggers; done after Close
	log       *slog.Logger
}

func newJWKSCache(ctx context.Context, cfg Config) (*jwksCache, error) {
	j := &jwksCache{
		url:     cfg.JWKSURL,
		client:  cfg.HTTPClient,
		store:   jwkset.NewMemoryStorage(),
		limiter: rate.NewLimiter(rate.Every(cfg.JWKSUnknownKIDRateLimit), 1),
		ctx:     ctx,
		log:     cfg.Logger.With("jwks_url", redactURL(cfg.JWKSURL)),
	}
	if j.client == nil {
		j.transport = http.DefaultTransport.(*http.Transport).Clone()
		j.client = &http.Client{Transport: j.transport}
	}
	kf, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: j.store})
	if err != nil {
		return nil, fmt.Errorf("new keyfunc: %w", err)
	}
	j.kf = kf
	return j, nil
}

// closeIdle releases the connections of a client the cache created.
func (j *jwksCache) closeIdle() {
	if j.transport != nil {
		j.transport.CloseIdleConnections()
	}
}

// refreshLoop fetches the set every interval until ctx is done. A failed
// fetch keeps the keys already held.
func (j *jwksCache) refreshLoop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := j.fetch(ctx); err != nil && ctx.Err() == nil {
				j.log.Warn("jwks refresh failed; keeping the previous keys", "error", err)
			}
		}
	}
}

// fetch downloads the set and replaces the cached keys with its usable ones.
// A set with no usable key is an error and leaves the cache as it was.
func (j *jwksCache) fetch(ctx context.Context) error {
	j.fetchMu.Lock()
	defer j.fetchMu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, jwksFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return fmt.Errorf("new jwks request: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := j.client.Do(req)
	if err != nil {
		return fmt.Errorf("get jwks: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return fmt.Errorf("read jwks: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get jwks: status %s", resp.Status)
	}
	if len(body) > maxJWKSBytes {
		return fmt.Errorf("jwks is larger than %d bytes", maxJWKSBytes)
	}
	var set jwkset.JWKSMarshal
	if err := json.Unmarshal(body, &set); err != nil {
		return fmt.Errorf("decode jwks: %w", err)
	}

	keys := make([]jwkset.JWK, 0, len(set.Keys))
	for _, m := range set.Keys {
		k, err := usableKey(m)
		if err != nil {
			j.log.Warn("jwks key skipped", "kid", m.KID, "reason", err.Error())
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return fmt.Errorf("jwks has no usable signing key (%d keys listed)", len(set.Keys))
	}
	if err := j.store.KeyReplaceAll(ctx, keys); err != nil {
		return fmt.Errorf("store jwks: %w", err)
	}
	j.log.Debug("jwks loaded", "keys", len(keys))
	return nil
}

// usableKey turns one JWK of the set into a verification key, or says why it
// cannot be one. Only public signature keys of the types the asymmetric
// algorithms use are kept: in particular never an "oct" (symmetric) key.
func usableKey(m jwkset.JWKMarshal) (jwkset.JWK, error) {
	if m.USE == jwkset.UseEnc {
		return jwkset.JWK{}, errors.New("encryption key")
	}
	switch m.KTY {
	case jwkset.KtyRSA, jwkset.KtyEC, jwkset.KtyOKP:
	default:
		return jwkset.JWK{}, fmt.Errorf("key type %q is not used for token signatures", m.KTY)
	}
	// Private: false keeps only the public half, should a private one be
	// published by mistake.
	k, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
	if err != nil {
		return jwkset.JWK{}, err
	}
	switch pub := k.Key().(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() < minRSABits {
			return jwkset.JWK{}, fmt.Errorf("RSA key has %d bits, fewer than %d", pub.N.BitLen(), minRSABits)
		}
	case *ecdsa.PublicKey, ed25519.PublicKey:
	default:
		return jwkset.JWK{}, fmt.Errorf("unsupported key %T", pub)
	}
	return k, nil
}

// key returns the key that verifies t: the one its kid names, or, for a token
// without a kid, every cached key to try in turn. An unknown kid triggers one
// rate-limited fetch before the token is rejected.
func (j *jwksCache) key(t *jwt.Token) (any, error) {
	kid, hasKID := t.Header["kid"]
	if !hasKID {
		set, err := j.kf.VerificationKeySet(j.ctx)
		if err != nil || len(set.Keys) == 0 {
			return nil, errUnknownKey
		}
		return set, nil
	}
	if _, ok := kid.(string); !ok {
		return nil, errBadHeader
	}
	kf := j.kf.KeyfuncCtx(j.ctx)
	k, err := kf(t)
	if errors.Is(err, jwkset.ErrKeyNotFound) {
		j.refreshForUnknownKID()
		// Read again even if this call's refresh was refused: another
		// caller's refresh may have brought the key meanwhile.
		k, err = kf(t)
	}
	switch {
	case errors.Is(err, jwkset.ErrKeyNotFound):
		return nil, errUnknownKey
	case err != nil:
		// The JWK's own "alg" differs from the token's.
		return nil, errKeyMismatch
	}
	return k, nil
}

// refreshForUnknownKID fetches the set if the rate limiter allows. Callers
// that arrive while a fetch runs wait for it and share it, so a burst of
// tokens signed with a newly rotated key costs one request; callers after it
// within the limit are refused at once rather than queued.
func (j *jwksCache) refreshForUnknownKID() {
	_, _, _ = j.flight.Do("unknown-kid", func() (any, error) {
		if j.ctx.Err() != nil || !j.limiter.Allow() {
			return nil, nil // closed, or rate limited
		}
		j.log.Debug("token names an unknown kid; fetching jwks")
		if err := j.fetch(j.ctx); err != nil && j.ctx.Err() == nil {
			j.log.Warn("jwks refresh for an unknown kid failed", "error", err)
		}
		return nil, nil
	})
}
