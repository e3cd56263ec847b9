package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Mint returns an HS256 token for subject, signed with secret, with iat now
// and exp after ttl, and iss and aud when issuer and audience are not empty.
// It backs `pgpush token` and tests; production tokens normally come from the
// application's own login. The secret must be at least MinSecretLength bytes,
// as Config.Validate requires.
func Mint(secret []byte, subject string, ttl time.Duration, issuer, audience string) (string, error) {
	switch {
	case len(secret) < MinSecretLength:
		return "", fmt.Errorf("mint token: secret is %d bytes; it must be at least %d", len(secret), MinSecretLength)
	case subject == "":
		return "", errors.New("mint token: empty subject")
	case ttl <= 0:
		return "", fmt.Errorf("mint token: ttl %v is not positive", ttl)
	}
	now := time.Now()
	claims := jwt.RegisteredClaims{
		Subject:   subject,
		Issuer:    issuer,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}
	if audience != "" {
		claims.Audience = jwt.ClaimStrings{audience}
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return tok, nil
}
