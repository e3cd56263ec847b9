package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/pgpush/pgpush/push/auth"
)

func runToken(args []string, stdout, stderr io.Writer) error {
	var s settings
	var user string
	var ttl time.Duration
	e := &envFlags{fs: newFlagSet("token", stderr)}
	e.secret(&s.JWTSecret, "jwt-secret", "PGPUSH_JWT_SECRET", "HS256 shared secret")
	e.str(&s.JWTIssuer, "jwt-issuer", "PGPUSH_JWT_ISSUER", "", "issuer (iss) to put in the token")
	e.str(&s.JWTAudience, "jwt-audience", "PGPUSH_JWT_AUDIENCE", "", "audience (aud) to put in the token")
	e.fs.StringVar(&user, "user", "", "the user id (the token's sub)")
	e.fs.DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	if err := e.parse(args); err != nil {
		return err
	}
	if user == "" {
		return errors.New("--user is required")
	}
	if s.JWTSecret == "" {
		return errors.New("PGPUSH_JWT_SECRET is not set (or pass --jwt-secret)")
	}
	if ttl <= 0 {
		return errors.New("--ttl must be positive")
	}
	tok, err := auth.Mint([]byte(s.JWTSecret), user, ttl, s.JWTIssuer, s.JWTAudience)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
