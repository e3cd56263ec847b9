package auth

import (
	"net/http"
	"strings"
)

// FromRequest returns the bearer token of r: from the Authorization header
// ("Bearer <token>", scheme matched case-insensitively) or, when allowQuery is
// true and the header is absent, from the "token" query parameter, which the
// WebSocket route allows because browsers cannot set headers on a WebSocket.
// The token is not checked beyond its length; pass it to [Verifier.Verify].
// Errors match ErrUnauthorized and never contain the token.
func FromRequest(r *http.Request, allowQuery bool) (string, error) {
	if h := r.Header.Values("Authorization"); len(h) > 0 {
		if len(h) > 1 {
			return "", unauthorized("more than one Authorization header")
		}
		v := strings.TrimSpace(h[0])
		if v == "" {
			return "", unauthorized("missing token")
		}
		scheme, tok, _ := strings.Cut(v, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return "", unauthorized("authorization scheme must be Bearer")
		}
		return checkLength(strings.TrimSpace(tok))
	}
	if allowQuery {
		switch q := r.URL.Query()["token"]; len(q) {
		case 0:
		case 1:
			return checkLength(q[0])
		default:
			return "", unauthorized("more than one token parameter")
		}
	}
	return "", unauthorized("missing token")
}

func checkLength(tok string) (string, error) {
	switch {
	case tok == "":
		return "", unauthorized("missing token")
	case len(tok) > MaxTokenLength:
		return "", unauthorized("token too long")
	}
	return tok, nil
}
