package auth

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Every Verifier's refresh goroutine and every HTTP connection of the
	// test JWKS servers must be gone when the tests end.
	goleak.VerifyTestMain(m)
}
