package push_test

// Security tests (issue 4): every byte from a client is hostile. Each test
// drives the real http.Handler over real TCP and a real database.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgpush/pgpush/db/dbtest"
	"github.com/pgpush/pgpush/migrations"
	"github.com/pgpush/pgpush/push"
	"github.com/pgpush/pgpush/push/auth"

	"github.com/pgpush/pgpush/internal/testkit"
)

// ---- 1. Tokens -------------------------------------------------------------

// TestTokensAreCheckedOnEveryEndpoint sends every kind of bad token to the
// three authenticated endpoints, as a header and (for the WebSocket) as
// ?token=, and checks the 401 with its JSON body before any upgrade, and that
// nothing was written. Good tokens of each pinned kind pass, as do tokens
// within the clock-skew leeway.
func TestTokensAreCheckedOnEveryEndpoint(t *testing.T) {
	t.Parallel()
	const iss, aud = "https://id.example.com/", "pgpush"
	rsaK := testkit.RSAKey("rsa-1")
	ecK := testkit.ECKey(t, "ec-1")
	jwks := testkit.NewJWKSServer(t, false, rsaK, ecK)
	e := newAuthEnv(t, auth.Config{
		Secret: testSecret, JWKSURL: jwks.URL, Issuer: iss, Audience: aud,
		// ES256 keys are in the JWKS but not pinned: such tokens must fail.
		Algorithms: []string{"HS256", "RS256"},
		Leeway:     20 * time.Second,
	}, nil)
	unread := e.insert("alice", "must stay unread")

	now := time.Now()
	claims := func(extra map[string]any) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "alice", "iss": iss, "aud": aud, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		for k, v := range extra {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	hs := func(extra map[string]any) string {
		return testkit.Sign(t, jwt.SigningMethodHS256, testSecret, claims(extra), nil)
	}
	rsaPub, err := x509.MarshalPKIXPublicKey(rsaK.Priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaPub})
	goodHS := hs(nil)
	sigHS := goodHS[strings.LastIndexByte(goodHS, '.')+1:]
	hs256 := map[string]any{"alg": "HS256", "typ": "JWT"}

	accepted := map[string]string{
		"HS256":                     goodHS,
		"RS256 from the JWKS":       rsaK.Sign(t, claims(nil)),
		"expired within the leeway": hs(map[string]any{"exp": now.Add(-5 * time.Second).Unix()}),
		"nbf within the leeway":     hs(map[string]any{"nbf": now.Add(5 * time.Second).Unix()}),
	}
	rejected := []struct{ name, tok string }{
		{"missing", ""},
		{"not a JWT", "not-a-jwt"},
		{"three garbage parts", "a.b.c"},
		{"wrong secret", testkit.Sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("k", 40)), claims(nil), nil)},
		{"payload swapped under a good signature", rawToken(hs256, claims(map[string]any{"sub": "mallory"}), sigHS)},
		{"alg none", rawToken(map[string]any{"alg": "none", "typ": "JWT"}, claims(nil), "")},
		{"alg None with a signature", rawToken(map[string]any{"alg": "None"}, claims(nil), sigHS)},
		{"HS512 with the secret, not pinned", testkit.Sign(t, jwt.SigningMethodHS512, testSecret, claims(nil), nil)},
		{"ES256 from the JWKS, not pinned", ecK.Sign(t, claims(nil))},
		{"HS256 signed with the RSA public key (PEM)", testkit.Sign(t, jwt.SigningMethodHS256, rsaPEM, claims(nil), map[string]any{"kid": "rsa-1"})},
		{"HS256 signed with the RSA public key (DER)", testkit.Sign(t, jwt.SigningMethodHS256, rsaPub, claims(nil), map[string]any{"kid": "rsa-1"})},
		{"RS256 signed by a key not in the JWKS", testkit.Key{Kid: "rsa-1", Method: jwt.SigningMethodRS256, Priv: strangerRSA()}.Sign(t, claims(nil))},
		{"RS256 naming an unknown kid", testkit.Key{Kid: "nope", Method: jwt.SigningMethodRS256, Priv: rsaK.Priv}.Sign(t, claims(nil))},
		{"expired", hs(map[string]any{"exp": now.Add(-time.Minute).Unix()})},
		{"not valid yet", hs(map[string]any{"nbf": now.Add(time.Minute).Unix()})},
		{"issued in the future", hs(map[string]any{"iat": now.Add(time.Minute).Unix()})},
		{"wrong issuer", hs(map[string]any{"iss": "https://evil.example.com/"})},
		{"no issuer", hs(map[string]any{"iss": nil})},
		{"wrong audience", hs(map[string]any{"aud": "another-api"})},
		{"no audience", hs(map[string]any{"aud": nil})},
		{"no sub", hs(map[string]any{"sub": nil})},
		{"empty sub", hs(map[string]any{"sub": ""})},
		{"longer than any real token", hs(map[string]any{"pad": strings.Repeat("x", auth.MaxTokenLength)})},
	}

	for _, tc := range rejected {
		for _, r := range []struct{ method, path, body string }{
			{"GET", "/v1/notifications", ""},
			{"POST", "/v1/notifications/read", `{"all":true}`},
			{"GET", "/v1/ws", ""},
		} {
			res := e.do(r.method, r.path, tc.tok, r.body, nil)
			check401(t, tc.name+" on "+r.method+" "+r.path, res, tc.tok)
		}
		// The WebSocket handshake itself: the token as ?token= (what a
		// browser sends) and as a header.
		check401(t, tc.name+" dialling with ?token=", dial(t, e.wsURL(tc.tok, ""), nil), tc.tok)
		if tc.tok != "" {
			check401(t, tc.name+" dialling with a header", dial(t, e.wsURL("", ""), http.Header{"Authorization": {"Bearer " + tc.tok}}), tc.tok)
		}
	}
	// Other Authorization schemes are refused too.
	res := e.do("GET", "/v1/notifications", "", "", map[string]string{"Authorization": "Basic YWxpY2U6cHc="})
	check401(t, "Basic auth", res, "")

	// Nothing any of them sent was written.
	var readAt *time.Time
	if err := e.pool.QueryRow(context.Background(), `SELECT read_at FROM notifications WHERE id = $1`, unread).Scan(&readAt); err != nil {
		t.Fatal(err)
	}
	if readAt != nil {
		t.Fatal("a request with a bad token marked a row read")
	}

	for name, tok := range accepted {
		if res := e.get("/v1/notifications", tok); res.StatusCode != http.StatusOK {
			t.Errorf("%s: list: %d %s", name, res.StatusCode, res.Body)
		}
		if res := e.do("POST", "/v1/notifications/read", tok, `{"ids":[-1]}`, nil); res.StatusCode != http.StatusOK {
			t.Errorf("%s: read: %d %s", name, res.StatusCode, res.Body)
		}
		c := e.dialRaw(e.wsURL(tok, ""), nil)
		if m := c.next("ready"); m.UserID != "alice" {
			t.Errorf("%s: ready for %q", name, m.UserID)
		}
		c.ws.Close(websocket.StatusNormalClosure, "")
	}
}

// check401 asserts the SPEC §3 answer to a bad token.
func check401(t *testing.T, what string, res response, tok string) {
	t.Helper()
	var body struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if res.StatusCode != http.StatusUnauthorized || json.Unmarshal(res.Body, &body) != nil ||
		body.Error != "unauthorized" || body.Message == "" {
		t.Errorf("%s: %d %s, want 401 with the JSON error body", what, res.StatusCode, res.Body)
		return
	}
	if res.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("%s: 401 without WWW-Authenticate", what)
	}
	if len(tok) > 10 && bytes.Contains(res.Body, []byte(tok)) {
		t.Errorf("%s: the 401 body quotes the token", what)
	}
}

// TestJWKSRotationWithoutRestart rotates the keys of a local JWKS server: a
// token signed with the new key works at once (one refresh for its unknown
// kid), the old key stops working, and a flood of made-up kids costs no
// further fetch.
func TestJWKSRotationWithoutRestart(t *testing.T) {
	t.Parallel()
	k1, k2 := testkit.ECKey(t, "2026-01"), testkit.ECKey(t, "2026-02")
	jwks := testkit.NewJWKSServer(t, false, k1)
	e := newAuthEnv(t, auth.Config{JWKSURL: jwks.URL, JWKSRefreshInterval: time.Hour, JWKSUnknownKIDRateLimit: time.Hour}, nil)
	alice := func(k testkit.Key) string {
		return k.Sign(t, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()})
	}
	tok1, tok2 := alice(k1), alice(k2)

	if res := e.get("/v1/notifications", tok1); res.StatusCode != http.StatusOK {
		t.Fatalf("first key: %d %s", res.StatusCode, res.Body)
	}
	if n := jwks.Requests.Load(); n != 1 {
		t.Fatalf("%d JWKS fetches at start, want 1", n)
	}

	jwks.SetKeys(t, k2) // the identity provider rotates: k2 replaces k1
	if res := e.do("POST", "/v1/notifications/read", tok2, `{"all":true}`, nil); res.StatusCode != http.StatusOK {
		t.Fatalf("rotated key, read: %d %s", res.StatusCode, res.Body)
	}
	if res := e.get("/v1/notifications", tok2); res.StatusCode != http.StatusOK {
		t.Fatalf("rotated key, list: %d %s", res.StatusCode, res.Body)
	}
	c := e.dialRaw(e.wsURL(tok2, ""), nil)
	c.next("ready")
	if n := jwks.Requests.Load(); n != 2 {
		t.Fatalf("%d JWKS fetches after the rotation, want 2 (one for the new kid)", n)
	}

	// The retired key no longer opens anything.
	check401(t, "retired key", e.get("/v1/notifications", tok1), tok1)

	// Made-up kids: all refused, and the rate limit holds the fetches.
	for i := range 30 {
		k := testkit.Key{Kid: fmt.Sprintf("made-up-%d", i), Method: k2.Method, Priv: k2.Priv}
		tok := alice(k)
		switch i % 3 {
		case 0:
			check401(t, "made-up kid", e.get("/v1/notifications", tok), tok)
		case 1:
			check401(t, "made-up kid", e.do("POST", "/v1/notifications/read", tok, `{"all":true}`, nil), tok)
		default:
			if status, _ := dialStatus(t, e.wsURL(tok, ""), nil); status != http.StatusUnauthorized {
				t.Fatalf("made-up kid on /v1/ws: %d", status)
			}
		}
	}
	if n := jwks.Requests.Load(); n != 2 {
		t.Fatalf("%d JWKS fetches after 30 made-up kids, want still 2", n)
	}
}

// TestJWKSBackgroundRefresh shows that the periodic refresh alone (the
// unknown-kid refresh is used up first) brings a new key and retires an old
// one, without a restart.
func TestJWKSBackgroundRefresh(t *testing.T) {
	t.Parallel()
	k1, k2 := testkit.ECKey(t, "old"), testkit.ECKey(t, "new")
	jwks := testkit.NewJWKSServer(t, false, k1)
	e := newAuthEnv(t, auth.Config{JWKSURL: jwks.URL, JWKSRefreshInterval: 50 * time.Millisecond, JWKSUnknownKIDRateLimit: time.Hour}, nil)
	alice := func(k testkit.Key) string {
		return k.Sign(t, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()})
	}
	status := func(tok string) int { return e.get("/v1/notifications", tok).StatusCode }

	bogus := alice(testkit.Key{Kid: "bogus", Method: k1.Method, Priv: k1.Priv})
	if s := status(bogus); s != http.StatusUnauthorized {
		t.Fatalf("bogus Kid: %d", s)
	}
	jwks.SetKeys(t, k1, k2)
	waitUntil(t, 10*time.Second, "the background refresh to bring the new key", func() bool { return status(alice(k2)) == http.StatusOK })
	jwks.SetKeys(t, k2)
	waitUntil(t, 10*time.Second, "the background refresh to retire the old key", func() bool { return status(alice(k1)) == http.StatusUnauthorized })
	c := e.dialRaw(e.wsURL(alice(k2), ""), nil)
	c.next("ready")
}

// ---- 2. Expiry on open sockets ---------------------------------------------

// expiryLeeway is the clock skew the expiry tests allow: a socket closes at
// exp plus it, when Verify starts refusing the token.
const expiryLeeway = time.Second

func newExpiryEnv(t *testing.T) *env {
	return newAuthEnv(t, auth.Config{Secret: testSecret, Leeway: expiryLeeway}, nil)
}

// tokenUntil mints a token for sub whose exp is the whole second exp.
func tokenUntil(t *testing.T, sub string, exp int64) string {
	return testkit.Sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": sub, "exp": exp}, nil)
}

// closedAtExpiry waits for c to be closed with 4001 and checks that it was
// not before exp plus the leeway.
func closedAtExpiry(t *testing.T, c *client, exp int64) {
	t.Helper()
	if code := c.closed(); code != 4001 {
		t.Fatalf("closed with %d (%v), want 4001", code, c.closeErr())
	}
	var ce websocket.CloseError
	if errors.As(c.closeErr(), &ce) && ce.Reason != "token expired" {
		t.Errorf("close reason %q", ce.Reason)
	}
	if deadline := time.Unix(exp, 0).Add(expiryLeeway); time.Now().Before(deadline) {
		t.Fatalf("closed %v before exp plus the leeway", time.Until(deadline))
	}
}

func TestExpiredTokenClosesTheSocketWith4001(t *testing.T) {
	t.Parallel()
	e := newExpiryEnv(t)
	exp := time.Now().Add(3 * time.Second).Unix()
	c := e.dialRaw(e.wsURL(tokenUntil(t, "alice", exp), ""), nil)
	c.next("ready")
	closedAtExpiry(t, c, exp)
}

// A fresh token for the same user, sent as an "auth" message, keeps the
// socket open past the first token's expiry, until its own.
func TestAuthMessageExtendsTheSocket(t *testing.T) {
	t.Parallel()
	e := newExpiryEnv(t)
	exp := time.Now().Add(3 * time.Second).Unix()
	refreshed := e.dialRaw(e.wsURL(tokenUntil(t, "alice", exp), ""), nil)
	refreshed.next("ready")
	// control's token expires 2s after refreshed's first one: when control
	// is closed, refreshed would have been closed 2s ago without the
	// refresh.
	control := e.dialRaw(e.wsURL(tokenUntil(t, "alice", exp+2), ""), nil)
	control.next("ready")

	refreshed.send(map[string]any{"type": "auth", "token": tokenUntil(t, "alice", exp+4)})
	refreshed.send(map[string]any{"type": "ping"})
	refreshed.next("pong") // the reader has handed the new deadline over

	closedAtExpiry(t, control, exp+2)
	refreshed.send(map[string]any{"type": "ping"})
	refreshed.next("pong")
	e.insert("alice", "still here")
	if m := refreshed.next("created"); m.Notification.Title != "still here" {
		t.Fatalf("got %s", m.Raw)
	}
	closedAtExpiry(t, refreshed, exp+4)
}

// A refused "auth" — another user's token, an expired one, a forged one —
// gets an error and changes nothing: not the user, not the deadline.
func TestRefusedAuthMessageChangesNothing(t *testing.T) {
	t.Parallel()
	e := newExpiryEnv(t)
	exp := time.Now().Add(3 * time.Second).Unix()
	c := e.dialRaw(e.wsURL(tokenUntil(t, "alice", exp), ""), nil)
	c.next("ready")

	for _, tc := range []struct{ name, tok, msg string }{
		{"another user's", tokenUntil(t, "bob", exp+3600), "token is for another user"},
		{"expired", tokenUntil(t, "alice", time.Now().Add(-time.Minute).Unix()), "token expired"},
		{"forged", testkit.Sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("f", 40)), jwt.MapClaims{"sub": "alice", "exp": exp + 3600}, nil), "token signature invalid"},
		{"alg none", rawToken(map[string]any{"alg": "none"}, map[string]any{"sub": "alice", "exp": exp + 3600}, ""), "token algorithm not allowed"},
	} {
		c.send(map[string]any{"type": "auth", "token": tc.tok})
		m := c.next("error")
		if m.Error != "bad_token" || m.Message != tc.msg {
			t.Errorf("%s token: %s, want bad_token %q", tc.name, m.Raw, tc.msg)
		}
		if strings.Contains(string(m.Raw), tc.tok) {
			t.Errorf("%s token: the error quotes the token", tc.name)
		}
	}
	// Still Alice's socket, and Alice's only.
	e.insert("bob", "for bob")
	e.insert("alice", "marker")
	if m := c.next("created"); m.Notification.Title != "marker" {
		t.Fatalf("got %s, want alice's marker", m.Raw)
	}
	closedAtExpiry(t, c, exp)
}

// ---- 3. Isolation ----------------------------------------------------------

// TestIsolationOnEveryPath tries every crossing: listing, paging, marking
// read (by id and all, over HTTP and the socket), live events, a row moved
// between users, and resumes with real and forged cursors. Users whose ids
// differ only in case are different users.
func TestIsolationOnEveryPath(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	a1, a2 := e.insert("alice", "a1"), e.insert("alice", "a2")
	b1, b2 := e.insert("bob", "b1"), e.insert("bob", "b2")
	capital := e.insert("Alice", "not alice's")
	others := []int64{b1, b2, capital}
	unreadOthers := func() int {
		var n int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM notifications WHERE id = ANY($1) AND read_at IS NULL`, others).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	onlyAlice := func(where string, list []notification) {
		t.Helper()
		for _, n := range list {
			if n.UserID != "alice" {
				t.Fatalf("%s shows %s's row %d", where, n.UserID, n.ID)
			}
		}
	}

	alice, ready := e.dial("alice", "")
	onlyAlice("alice's ready", ready.Notifications)
	if len(ready.Notifications) != 2 || *ready.Unread != 2 {
		t.Fatalf("alice's ready: %s", ready.Raw)
	}
	bob, _ := e.dial("bob", "")
	tokA := token(t, "alice")
	// Events for these rows may come twice (the rows were written just
	// before the sockets opened); events for any other row may not.
	mineA, mineB := map[int64]bool{a1: true, a2: true}, map[int64]bool{b1: true, b2: true}

	// HTTP list, including pages that start above other users' ids.
	for _, path := range []string{"/v1/notifications", "/v1/notifications?limit=100", fmt.Sprintf("/v1/notifications?before=%d", capital+1), "/v1/notifications?limit=1&before=9223372036854775807"} {
		res := e.get(path, tokA)
		var body struct {
			Notifications []notification `json:"notifications"`
			Unread        int64          `json:"unread"`
		}
		if err := json.Unmarshal(res.Body, &body); err != nil || res.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, res.StatusCode, res.Body)
		}
		onlyAlice(path, body.Notifications)
		if body.Unread != 2 {
			t.Fatalf("%s: unread %d, want alice's 2", path, body.Unread)
		}
	}

	// Marking other users' rows, by id, over HTTP and the socket.
	res := e.do("POST", "/v1/notifications/read", tokA, fmt.Sprintf(`{"ids":[%d,%d,%d]}`, b1, b2, capital), nil)
	if body := res.json(t); res.StatusCode != 200 || body["updated"].(float64) != 0 || body["unread"].(float64) != 2 {
		t.Fatalf("alice marking others' rows over HTTP: %d %s", res.StatusCode, res.Body)
	}
	alice.send(map[string]any{"type": "read", "ids": others})
	// Alice's own row, marked after, proves the socket processed the
	// attempt: its "updated" must be the next frame for both sockets of
	// the test that see anything.
	alice.send(map[string]any{"type": "read", "ids": []int64{a1}})
	if m := expect(t, alice, "a1 marked read", mineA, is("updated", a1)); *m.Unread != 1 {
		t.Fatalf("alice got %s, want unread 1", m.Raw)
	}
	if n := unreadOthers(); n != 3 {
		t.Fatalf("%d of the other users' rows are unread, want 3", n)
	}

	// "All" means all of mine.
	res = e.do("POST", "/v1/notifications/read", tokA, `{"all":true}`, nil)
	if body := res.json(t); res.StatusCode != 200 || body["updated"].(float64) != 1 || body["unread"].(float64) != 0 {
		t.Fatalf("alice read all over HTTP: %d %s", res.StatusCode, res.Body)
	}
	expect(t, alice, "a2 marked read", mineA, is("updated", a2))
	a3 := e.insert("alice", "a3")
	expect(t, alice, "a3", mineA, is("created", a3))
	mineA[a3] = true
	alice.send(map[string]any{"type": "read_all"})
	expect(t, alice, "a3 marked read", mineA, is("updated", a3))
	if n := unreadOthers(); n != 3 {
		t.Fatalf("%d of the other users' rows are unread, want 3", n)
	}

	// Live: bob's and Alice's changes never reach alice; a row given to
	// alice arrives as created, and leaves bob as deleted.
	e.exec(`UPDATE notifications SET title = 'b1 changed' WHERE id = $1`, b1)
	e.exec(`UPDATE notifications SET title = 'capital changed' WHERE id = $1`, capital)
	if m := expect(t, bob, "b1 changed", mineB, is("updated", b1)); m.Notification.Title != "b1 changed" {
		t.Fatalf("bob got %s", m.Raw)
	}
	e.exec(`UPDATE notifications SET user_id = 'alice' WHERE id = $1`, b2)
	if m := expect(t, alice, "b2, now hers", mineA, is("created", b2)); m.Notification.UserID != "alice" {
		t.Fatalf("alice got %s", m.Raw)
	}
	expect(t, bob, "b2 deleted", mineB, is("deleted", b2))
	cursor := alice.last
	alice.ws.CloseNow()

	// Resume: while alice is away, others' rows change; her resume, from
	// her cursor or from a forged one that reaches back to the start,
	// replays only her rows.
	e.exec(`UPDATE notifications SET read_at = now() WHERE user_id <> 'alice'`)
	e.insert("bob", "b3")
	e.insert("Alice", "capital 2")
	mine := e.insert("alice", "while away")
	for _, cur := range []string{cursor, "1"} {
		c := e.dialRaw(e.wsURL(tokA, cur), nil)
		sawMine := false
		for {
			m := c.next("")
			if m.Type == "ready" {
				break
			}
			if m.Notification == nil || m.Notification.UserID != "alice" {
				t.Fatalf("resume from %q replayed %s", cur, m.Raw)
			}
			sawMine = sawMine || m.Notification.ID == mine
		}
		if !sawMine {
			t.Fatalf("resume from %q did not replay alice's new row", cur)
		}
		c.ws.CloseNow()
	}
}

// ---- 4. Origins ------------------------------------------------------------

func TestOriginsAndCORS(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *push.Config) {
		c.AllowedOrigins = []string{"app.example.com", "*.trusted.example", "https://secure.example.org"}
	})
	tok := token(t, "alice")
	self := e.http.URL // same origin: scheme://host:port of the server

	for origin, ok := range map[string]bool{
		"":                                true, // not a browser
		self:                              true,
		"https://app.example.com":         true,
		"http://app.example.com":          true,
		"https://APP.example.com":         true,
		"https://a.trusted.example":       true,
		"https://secure.example.org":      true,
		"http://secure.example.org":       false, // the pattern pins https
		"https://trusted.example":         false,
		"https://evil.example":            false,
		"https://app.example.com.evil.io": false,
		"https://evilapp.example.com":     false,
		"https://app.example.com:8443":    false,
		"null":                            false,
		"file://":                         false,
	} {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		status, body := dialStatus(t, e.wsURL(tok, ""), h)
		switch {
		case ok && status != http.StatusSwitchingProtocols:
			t.Errorf("origin %q: %d %s, want the upgrade", origin, status, body)
		case !ok && status != http.StatusForbidden:
			t.Errorf("origin %q: %d %s, want 403", origin, status, body)
		case !ok && !bytes.Contains(body, []byte(`"error":"origin_not_allowed"`)):
			t.Errorf("origin %q: 403 body %s", origin, body)
		}
	}
	// A foreign origin learns nothing, not even whether its token is good.
	if status, _ := dialStatus(t, e.wsURL("bad", ""), http.Header{"Origin": {"https://evil.example"}}); status != http.StatusForbidden {
		t.Errorf("foreign origin with a bad token: %d, want 403", status)
	}

	// CORS on the HTTP API: only for allowed origins, never with
	// credentials, always varying by Origin.
	for _, tc := range []struct {
		origin string
		allow  bool
	}{{"https://app.example.com", true}, {"https://a.trusted.example", true}, {"https://evil.example", false}, {"null", false}} {
		for _, r := range []struct{ method, path, tok, body string }{
			{"GET", "/v1/notifications", tok, ""},
			{"POST", "/v1/notifications/read", tok, `{"all":true}`},
			{"GET", "/v1/notifications", "", ""}, // the 401 too, so a page can see it must refresh its token
		} {
			res := e.do(r.method, r.path, r.tok, r.body, map[string]string{"Origin": tc.origin})
			acao := res.Header.Get("Access-Control-Allow-Origin")
			if (tc.allow && acao != tc.origin) || (!tc.allow && acao != "") {
				t.Errorf("%s %s from %s: Access-Control-Allow-Origin %q", r.method, r.path, tc.origin, acao)
			}
			if res.Header.Get("Access-Control-Allow-Credentials") != "" {
				t.Errorf("%s %s: Access-Control-Allow-Credentials is set", r.method, r.path)
			}
			if !strings.Contains(strings.Join(res.Header.Values("Vary"), ","), "Origin") {
				t.Errorf("%s %s: no Vary: Origin", r.method, r.path)
			}
		}
		res := e.do("OPTIONS", "/v1/notifications/read", "", "", map[string]string{
			"Origin": tc.origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type",
		})
		if tc.allow {
			if res.StatusCode != http.StatusNoContent || res.Header.Get("Access-Control-Allow-Origin") != tc.origin ||
				!strings.Contains(res.Header.Get("Access-Control-Allow-Methods"), "POST") ||
				!strings.Contains(strings.ToLower(res.Header.Get("Access-Control-Allow-Headers")), "authorization") {
				t.Errorf("preflight from %s: %d %v", tc.origin, res.StatusCode, res.Header)
			}
		} else if res.StatusCode != http.StatusForbidden || res.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("preflight from %s: %d %v, want 403 without CORS headers", tc.origin, res.StatusCode, res.Header)
		}
	}
	// Outside /v1 there is no CORS at all.
	if res := e.do("GET", "/metrics", "", "", map[string]string{"Origin": "https://app.example.com"}); res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("/metrics has CORS headers")
	}
}

// TestOriginPatternsAreValidated: a pattern that matches any site, or does
// not parse, stops the server from starting.
func TestOriginPatternsAreValidated(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"*", "*.*", "*:*", "*.*.*", "https://*", "?", "[", " "} {
		_, err := push.New(nil, nopVerifier{}, push.Config{AllowedOrigins: []string{p}})
		if err == nil {
			t.Errorf("AllowedOrigins %q accepted", p)
		}
	}
	for _, p := range []string{"app.example.com", "*.example.com", "https://app.example.com", "localhost:5173"} {
		if _, err := push.New(nil, nopVerifier{}, push.Config{AllowedOrigins: []string{p}}); err != nil {
			t.Errorf("AllowedOrigins %q refused: %v", p, err)
		}
	}
}

type nopVerifier struct{}

func (nopVerifier) Verify(string) (auth.Claims, error) { return auth.Claims{}, errors.New("no") }

// ---- 5. Limits on what a client controls -----------------------------------

func TestInboundFrameSizeLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *push.Config) { c.ReadLimit = 1024 })
	c, _ := e.dial("alice", "")
	c.sendRaw([]byte(`{"type":"ping","pad":"` + strings.Repeat("x", 1000) + `"}`)) // under the limit
	c.next("pong")
	c.sendRaw([]byte(`{"type":"ping","pad":"` + strings.Repeat("x", 2000) + `"}`))
	if code := c.closed(); code != websocket.StatusMessageTooBig {
		t.Fatalf("closed with %d, want 1009", code)
	}
}

func TestMessageRateLimit(t *testing.T) {
	t.Parallel()
	// One token per 1000s: after the burst, every message is over the rate.
	e := newEnv(t, func(c *push.Config) { c.MessageRate = 0.001; c.MessageBurst = 3 })
	c, _ := e.dial("alice", "")
	for range 3 {
		c.send(map[string]any{"type": "ping"})
		c.next("pong")
	}
	c.send(map[string]any{"type": "ping"})
	if m := c.next("error"); m.Error != "rate_limited" {
		t.Fatalf("got %s", m.Raw)
	}
	// Keep going: closed with 1008, with no further frames before it.
	for range 10 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.ws.Write(ctx, websocket.MessageText, []byte(`{"type":"ping"}`))
		cancel()
		if err != nil {
			break
		}
	}
	select {
	case m, ok := <-c.frames:
		if ok {
			t.Fatalf("got %s after the rate-limit error, want the close", m.Raw)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("not closed")
	}
	if code := websocket.CloseStatus(c.closeErr()); code != websocket.StatusPolicyViolation {
		t.Fatalf("closed with %d (%v), want 1008", code, c.closeErr())
	}
}

func TestReadIDsLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *push.Config) { c.MaxReadIDs = 5 })
	c, _ := e.dial("alice", "")
	six := []int64{1, 2, 3, 4, 5, 6}
	c.send(map[string]any{"type": "read", "ids": six})
	if m := c.next("error"); m.Error != "too_many_ids" {
		t.Fatalf("got %s", m.Raw)
	}
	c.send(map[string]any{"type": "ping"})
	c.next("pong")
	tok := token(t, "alice")
	if res := e.do("POST", "/v1/notifications/read", tok, `{"ids":[1,2,3,4,5,6]}`, nil); res.StatusCode != 400 || res.json(t)["error"] != "too_many_ids" {
		t.Fatalf("6 ids over HTTP: %d %s", res.StatusCode, res.Body)
	}
	if res := e.do("POST", "/v1/notifications/read", tok, `{"ids":[1,2,3,4,5]}`, nil); res.StatusCode != 200 {
		t.Fatalf("5 ids over HTTP: %d %s", res.StatusCode, res.Body)
	}
}

// TestConnectionLimits: past PGPUSH_MAX_CONNS_PER_USER a user's next socket
// is refused with 429 before the upgrade (a status a client can see; SPEC's
// 1008 would need an upgrade first), other users are unaffected, and a slot
// frees when a socket closes. Past the node's total, 503.
func TestConnectionLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *push.Config) { c.MaxConnsPerUser = 2; c.MaxConns = 4 })
	a1, _ := e.dial("alice", "")
	e.dial("alice", "")
	status, body := dialStatus(t, e.wsURL(token(t, "alice"), ""), nil)
	if status != http.StatusTooManyRequests || !bytes.Contains(body, []byte(`"error":"too_many_connections"`)) {
		t.Fatalf("alice's third socket: %d %s", status, body)
	}
	e.dial("bob", "")
	e.dial("carol", "")
	status, body = dialStatus(t, e.wsURL(token(t, "dave"), ""), nil)
	if status != http.StatusServiceUnavailable || !bytes.Contains(body, []byte(`"error":"node_full"`)) {
		t.Fatalf("the node's fifth socket: %d %s", status, body)
	}

	a1.ws.Close(websocket.StatusNormalClosure, "")
	// The server lets the slot go when its side of the socket has closed.
	waitUntil(t, 10*time.Second, "alice's slot to free", func() bool {
		return dial(t, e.wsURL(token(t, "alice"), ""), nil).StatusCode == http.StatusSwitchingProtocols
	})
}

func TestRequestBodyLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *push.Config) { c.RequestReadTimeout = 300 * time.Millisecond })
	tok := token(t, "alice")

	big := `{"ids":[` + strings.Repeat("1,", 40_000) + `1]}`
	if res := e.do("POST", "/v1/notifications/read", tok, big, nil); res.StatusCode != http.StatusRequestEntityTooLarge || res.json(t)["error"] != "too_large" {
		t.Fatalf("80 KB body: %d %s", res.StatusCode, res.Body)
	}

	for _, tc := range []struct{ name, req, want string }{
		{"POST body trickled", "POST /v1/notifications/read HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok +
			"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"all\"", "HTTP/1.1 408 "},
		// A handler that does not read the body: net/http discards it
		// after, which must be bounded too.
		{"GET with a trickled body", "GET /v1/notifications HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok +
			"\r\nContent-Length: 100\r\n\r\nab", "HTTP/1.1 200 "},
		{"unauthorized POST with a trickled body", "POST /v1/notifications/read HTTP/1.1\r\nHost: x\r\n" +
			"Content-Length: 100\r\n\r\n{", "HTTP/1.1 401 "},
	} {
		start := time.Now()
		got := slowRequest(t, e, tc.req)
		if !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
		t.Logf("%s: answered and closed after %v", tc.name, time.Since(start).Round(time.Millisecond))
	}
}

// slowRequest writes req, which promises more body than it sends, and
// returns everything the server writes until it closes the connection. It
// fails if the server holds the connection for 10s.
func slowRequest(t *testing.T, e *env, req string) string {
	t.Helper()
	conn, err := net.Dial("tcp", e.http.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(conn)
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		t.Fatalf("the server held a trickled request for 10s (got %q)", b)
	}
	return string(b)
}

func TestQueryParameterBounds(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tok := token(t, "alice")
	for _, q := range []string{"limit=0", "limit=101", "limit=-1", "limit=1e2", "limit=abc", "limit=99999999999999999999",
		"limit=%00", "before=0", "before=-9223372036854775808", "before=9223372036854775808", "before=1.5"} {
		res := e.get("/v1/notifications?"+q, tok)
		if res.StatusCode != 400 || res.json(t)["error"] != "bad_request" {
			t.Errorf("%s: %d %s", q, res.StatusCode, res.Body)
		}
	}
	for _, q := range []string{"limit=1", "limit=100", "before=1", "before=9223372036854775807"} {
		if res := e.get("/v1/notifications?"+q, tok); res.StatusCode != 200 {
			t.Errorf("%s: %d %s", q, res.StatusCode, res.Body)
		}
	}
	for _, cur := range []string{"x", "-1", "99999999999999999999999", strings.Repeat("9", 200)} {
		if status, body := dialStatus(t, e.wsURL(tok, cur), nil); status != 400 {
			t.Errorf("cursor %q: %d %s", cur, status, body)
		}
	}
}

// ---- 6. Malformed input ----------------------------------------------------

// TestMalformedClientMessages: each bad frame gets an error with a code, the
// socket stays usable, and nothing is written.
func TestMalformedClientMessages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	id := e.insert("alice", "stays unread")
	c, _ := e.dial("alice", "")
	deep := strings.Repeat("[", 5000) + strings.Repeat("]", 5000)
	frames := []struct {
		b    string
		code string
	}{
		{`not json`, "bad_message"},
		{``, "bad_message"},
		{`null`, "bad_message"},
		{`[]`, "bad_message"},
		{`"read_all"`, "bad_message"},
		{deep, "bad_message"},
		{`{"type":1}`, "bad_message"},
		{`{"type":["read_all"]}`, "bad_message"},
		{`{"type":"read","ids":"1"}`, "bad_message"},
		{`{"type":"read","ids":[1.5]}`, "bad_message"},
		{`{"type":"read","ids":[1e99]}`, "bad_message"},
		{`{"type":"read","ids":[99999999999999999999]}`, "bad_message"},
		{fmt.Sprintf(`{"type":"read","ids":[%d],"ids":"x"}`, id), "bad_message"},
		{`{"type":"read","ids":[]}`, "bad_message"},
		{`{"type":"read_all"} {"type":"read_all"}`, "bad_message"},
		{`{"type":"read_all"`, "bad_message"},
		{`{"type":"auth","token":42}`, "bad_message"},
		{`{"type":"READ_ALL"}`, "unknown_type"},
		{`{"type":"subscribe","user_id":"bob"}`, "unknown_type"},
		{"{\"type\":\"read_all\",\"x\":\"\xff\xfe\"}", "bad_message"},
		{"{\"type\":\"read_all\xc0\"}", "bad_message"},
	}
	mine := map[int64]bool{id: true}
	for _, f := range frames {
		c.sendRaw([]byte(f.b))
		m := expect(t, c, fmt.Sprintf("the error for %.60q", f.b), mine, is("error", 0))
		if m.Error != f.code || m.Message == "" {
			t.Errorf("%.60q: got %s, want an error %q with a message", f.b, m.Raw, f.code)
		}
	}
	// A binary frame, even a well-formed message, is not the protocol.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageBinary, []byte(`{"type":"read_all"}`)); err != nil {
		t.Fatal(err)
	}
	if m := expect(t, c, "the binary frame's error", mine, is("error", 0)); m.Error != "bad_message" {
		t.Errorf("binary frame: %s", m.Raw)
	}
	c.send(map[string]any{"type": "ping"})
	expect(t, c, "pong", mine, is("pong", 0)) // still usable, and no "updated" came before the pong

	var readAt *time.Time
	if err := e.pool.QueryRow(ctx, `SELECT read_at FROM notifications WHERE id = $1`, id).Scan(&readAt); err != nil {
		t.Fatal(err)
	}
	if readAt != nil {
		t.Fatal("a malformed message marked a row read")
	}

	// The same over HTTP: 400 with the error body, nothing written.
	tok := token(t, "alice")
	for _, body := range []string{"not json", "", "null", "[]", deep, `{"ids":[1e99]}`, `{"ids":[1.5]}`, `{"ids":"1"}`,
		`{"all":"true"}`, `{"all":1}`, fmt.Sprintf(`{"ids":[%d]} {"all":true}`, id), fmt.Sprintf(`{"ids":[%d]}x`, id),
		"{\"all\":true,\"x\":\"\xff\"}", `{"all":true,"all":false,"what":1}`} {
		res := e.do("POST", "/v1/notifications/read", tok, body, map[string]string{"Content-Type": "application/json"})
		if res.StatusCode != 400 || res.json(t)["error"] == nil || res.json(t)["message"] == nil {
			t.Errorf("body %.60q: %d %s", body, res.StatusCode, res.Body)
		}
	}
	if err := e.pool.QueryRow(ctx, `SELECT read_at FROM notifications WHERE id = $1`, id).Scan(&readAt); err != nil {
		t.Fatal(err)
	}
	if readAt != nil {
		t.Fatal("a malformed request marked a row read")
	}
}

// ---- 7. Secrets and logs ---------------------------------------------------

// TestSecretsStayOutOfLogsAndMetrics runs a server that logs at debug level
// into a buffer, connected as a role with a password, and exercises good and
// bad tokens and database failures (a revoked privilege, a role that may not
// log in while the listener reconnects). Neither the logs nor /metrics may
// contain a token, the JWT secret or the password; /metrics has no user ids.
func TestSecretsStayOutOfLogsAndMetrics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	logs := &testkit.SyncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	dbURL := dbtest.NewDB(t)
	admin := dbtest.Pool(t, dbURL)
	role, password := "pgpush_logs_"+randomHex(t, 4), "db-pw-"+randomHex(t, 12)
	createRoles(t, admin, role)
	mustExec(t, admin, fmt.Sprintf(`ALTER ROLE %s PASSWORD '%s'`, role, password))
	grantServing(t, admin, role, true)
	roleURL := withRole(t, dbURL, role, password, "")

	v, err := auth.New(ctx, auth.Config{Secret: testSecret, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	e := startEnv(t, roleURL, dbtest.Pool(t, roleURL), v, func(c *push.Config) { c.Logger = logger })

	const user, other = "user-7f3a9c21", "user-0b5d6e88"
	good := token(t, user)
	otherTok := token(t, other)
	now := time.Now().Unix()
	bad := []string{
		testkit.Sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("w", 40)), jwt.MapClaims{"sub": user, "exp": now + 3600}, nil),
		testkit.Sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": user, "exp": now - 3600}, nil),
		rawToken(map[string]any{"alg": "none"}, map[string]any{"sub": user}, ""),
		rawToken(map[string]any{"alg": "HS256", "kid": "../../etc/passwd"}, map[string]any{"sub": user}, "c2ln"),
	}

	c := e.dialRaw(e.wsURL(good, ""), nil)
	c.next("ready")
	var id int64
	if err := admin.QueryRow(ctx, `INSERT INTO notifications (user_id, title) VALUES ($1, 'hello') RETURNING id`, user).Scan(&id); err != nil {
		t.Fatal(err)
	}
	mine := map[int64]bool{id: true}
	expect(t, c, "created", mine, is("created", id))
	c.send(map[string]any{"type": "auth", "token": good})
	c.send(map[string]any{"type": "auth", "token": otherTok})
	expect(t, c, "an error for another user's token", mine, is("error", 0))
	for _, tok := range bad {
		check401(t, "bad token", e.get("/v1/notifications", tok), tok)
		if status, _ := dialStatus(t, e.wsURL(tok, ""), nil); status != 401 {
			t.Fatalf("bad token on /v1/ws: %d", status)
		}
		c.send(map[string]any{"type": "auth", "token": tok})
		expect(t, c, "an error for a bad token", mine, is("error", 0))
	}
	if res := e.get("/v1/notifications", good); res.StatusCode != 200 {
		t.Fatalf("list: %d %s", res.StatusCode, res.Body)
	}
	c.send(map[string]any{"type": "read", "ids": []int64{id}})
	expect(t, c, "marked read", mine, func(m msg) bool { return is("updated", id)(m) && m.Notification.ReadAt != nil })
	e.dial(other, "")

	// Database errors: the role loses SELECT, so listing, marking read and
	// a new socket's first read fail, and are logged.
	mustExec(t, admin, `REVOKE SELECT ON notifications FROM `+role)
	if res := e.get("/v1/notifications", good); res.StatusCode != 500 {
		t.Fatalf("list without SELECT: %d %s", res.StatusCode, res.Body)
	}
	c.send(map[string]any{"type": "read_all"})
	if m := expect(t, c, "an error for read_all", mine, is("error", 0)); m.Error != "internal" {
		t.Fatalf("read_all without SELECT: %s", m.Raw)
	}
	failed := e.dialRaw(e.wsURL(good, ""), nil)
	if code := failed.closed(); code != websocket.StatusInternalError {
		t.Fatalf("socket without SELECT closed with %d", code)
	}
	mustExec(t, admin, `GRANT SELECT ON notifications TO `+role)

	// The role may not log in, and its sessions are cut: the listener
	// fails to reconnect (with pgx's connect errors) until it may again.
	mustExec(t, admin, `ALTER ROLE `+role+` NOLOGIN`)
	mustExec(t, admin, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, role)
	waitUntil(t, 20*time.Second, "a failed connection attempt in the logs", func() bool {
		e.get("/v1/notifications", good) // the pool reconnects too
		return strings.Contains(logs.String(), "not permitted to log in")
	})
	mustExec(t, admin, `ALTER ROLE `+role+` LOGIN`)
	waitUntil(t, 30*time.Second, "the server to be ready again", func() bool { return e.get("/readyz", "").StatusCode == 200 })

	metrics := e.get("/metrics", "")
	if metrics.StatusCode != 200 {
		t.Fatalf("metrics: %d", metrics.StatusCode)
	}
	secrets := map[string]string{"the JWT secret": string(testSecret), "the database password": password}
	for i, tok := range append([]string{good, otherTok}, bad...) {
		secrets[fmt.Sprintf("token %d", i)] = tok
		if j := strings.LastIndexByte(tok, '.'); len(tok)-j > 8 {
			secrets[fmt.Sprintf("token %d's signature", i)] = tok[j+1:]
		}
	}
	out := logs.String()
	if !strings.Contains(out, "failed") {
		t.Fatalf("the logs show no failure; the test exercised nothing:\n%s", out)
	}
	for what, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("the logs contain %s", what)
		}
		if bytes.Contains(metrics.Body, []byte(s)) {
			t.Errorf("/metrics contains %s", what)
		}
	}
	for _, u := range []string{user, other} {
		if bytes.Contains(metrics.Body, []byte(u)) {
			t.Errorf("/metrics contains the user id %s", u)
		}
	}
}

// ---- 8. Database side ------------------------------------------------------

// TestLeastPrivilegeRole runs the migration as a separate owner role (not a
// superuser) into a schema of its own, grants a pgpush role exactly what the
// README documents, and runs a server as that role end to end. The role can
// do nothing else. Then row-level security, as the README describes it for
// applications with per-user roles, is enabled and pgpush still works.
func TestLeastPrivilegeRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := dbtest.NewDB(t)
	admin := dbtest.Pool(t, dbURL)
	sfx := randomHex(t, 4)
	owner, app, writer, enduser := "pgpush_owner_"+sfx, "pgpush_app_"+sfx, "pgpush_writer_"+sfx, "pgpush_enduser_"+sfx
	schema := "push_" + sfx
	createRoles(t, admin, owner, app, writer, enduser)
	// The test database is a clone of a template migrated into public;
	// nothing may resolve to that copy.
	mustExec(t, admin, `DROP SCHEMA public CASCADE`)
	mustExec(t, admin, fmt.Sprintf(`CREATE SCHEMA %s AUTHORIZATION %s`, schema, owner))

	ownerURL := withRole(t, dbURL, owner, "", schema)
	ownerPool := dbtest.Pool(t, ownerURL)
	if err := migrations.Up(ctx, ownerPool, nil); err != nil {
		t.Fatalf("migrate as the owner role: %v", err)
	}
	// The GRANTs of the README's Security section, run by the owner.
	for _, g := range []string{
		`GRANT USAGE ON SCHEMA %[1]s TO %[2]s`,
		`GRANT SELECT, UPDATE (read_at) ON %[1]s.notifications TO %[2]s`,
		`GRANT SELECT ON %[1]s.goose_db_version TO %[2]s`,
		`GRANT SELECT, DELETE ON %[1]s.notifications_deleted TO %[2]s`,
		`GRANT SELECT, UPDATE ON %[1]s.notifications_deleted_horizon TO %[2]s`,
		`GRANT SELECT ON %[1]s.notifications_unread_counts TO %[2]s`,
		`GRANT SELECT, INSERT, UPDATE ON %[1]s.notifications_unread TO %[2]s`,
		`GRANT SELECT, DELETE ON %[1]s.notifications_unread_delta TO %[2]s`,
		`GRANT SELECT, UPDATE ON %[1]s.notifications_unread_folded TO %[2]s`,
		`GRANT SELECT ON %[1]s.notifications_hint_key TO %[2]s`,
		// An application that writes notifications (not pgpush).
		`GRANT USAGE ON SCHEMA %[1]s TO %[3]s`,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON %[1]s.notifications TO %[3]s`,
	} {
		mustExec(t, ownerPool, fmt.Sprintf(g, schema, app, writer))
	}

	appURL := withRole(t, dbURL, app, "", schema)
	appPool := dbtest.Pool(t, appURL)
	if err := migrations.Check(ctx, appPool); err != nil {
		t.Fatalf("pgpush's schema check as the pgpush role: %v", err)
	}
	for _, stmt := range []string{
		`INSERT INTO notifications (user_id, title) VALUES ('alice', 'x')`,
		`UPDATE notifications SET title = 'x'`,
		`UPDATE notifications SET user_id = 'x'`,
		`DELETE FROM notifications`,
		`TRUNCATE notifications`,
		`CREATE TABLE evil (x int)`,
		`DROP TRIGGER notifications_notify_insert ON notifications`,
		`DELETE FROM goose_db_version`,
	} {
		if _, err := appPool.Exec(ctx, stmt); err == nil {
			t.Errorf("the pgpush role may run %q", stmt)
		}
	}

	// A writer whose search_path does not name the schema still reaches
	// pgpush's clients: the trigger functions do not depend on it.
	writerPool := dbtest.Pool(t, withRole(t, dbURL, writer, "", ""))
	insert := func(user, title string) int64 {
		t.Helper()
		var id int64
		err := writerPool.QueryRow(ctx, fmt.Sprintf(`INSERT INTO %s.notifications (user_id, title) VALUES ($1, $2) RETURNING id`, schema), user, title).Scan(&id)
		if err != nil {
			t.Fatalf("insert as the writer: %v", err)
		}
		return id
	}

	e := newEnvOn(t, appURL, nil)
	alice, _ := e.dial("alice", "")
	bob, _ := e.dial("bob", "")
	id := insert("alice", "hello")
	mine := map[int64]bool{id: true}
	expect(t, alice, "created", mine, is("created", id))
	alice.send(map[string]any{"type": "read", "ids": []int64{id}})
	expect(t, alice, "marked read", mine, func(m msg) bool { return is("updated", id)(m) && m.Notification.ReadAt != nil })
	tok := token(t, "alice")
	if res := e.get("/v1/notifications", tok); res.StatusCode != 200 || !strings.Contains(string(res.Body), "hello") {
		t.Fatalf("list as the pgpush role: %d %s", res.StatusCode, res.Body)
	}
	two := insert("alice", "two")
	expect(t, alice, "created", mine, is("created", two))
	mine[two] = true
	if res := e.do("POST", "/v1/notifications/read", tok, `{"all":true}`, nil); res.StatusCode != 200 || res.json(t)["updated"].(float64) != 1 {
		t.Fatalf("read all as the pgpush role: %d %s", res.StatusCode, res.Body)
	}
	expect(t, alice, "marked read", mine, func(m msg) bool { return is("updated", two)(m) && m.Notification.ReadAt != nil })
	cursor := alice.last
	alice.ws.CloseNow()
	missed := insert("alice", "missed")
	c := e.dialRaw(e.wsURL(tok, cursor), nil)
	c.nextMatching("the missed row replayed", func(m msg) bool { return m.Type == "created" && m.Notification.ID == missed })
	c.nextMatching("ready", func(m msg) bool { return m.Type == "ready" })

	// Optional row-level security, as in the README: pgpush's role sees
	// every row, an end-user role only the rows of the user it is acting for.
	for _, stmt := range []string{
		`ALTER TABLE %[1]s.notifications ENABLE ROW LEVEL SECURITY`,
		`CREATE POLICY pgpush_all ON %[1]s.notifications TO %[2]s USING (true)`,
		`CREATE POLICY writer_all ON %[1]s.notifications TO %[3]s USING (true)`,
		`CREATE POLICY own_rows ON %[1]s.notifications TO %[4]s
			USING (user_id = current_setting('app.user_id', true))
			WITH CHECK (user_id = current_setting('app.user_id', true))`,
		`GRANT USAGE ON SCHEMA %[1]s TO %[4]s`,
		`GRANT SELECT, UPDATE (read_at) ON %[1]s.notifications TO %[4]s`,
	} {
		mustExec(t, ownerPool, fmt.Sprintf(stmt, schema, app, writer, enduser))
	}
	id = insert("alice", "under RLS")
	c.nextMatching("a row under RLS", func(m msg) bool { return m.Type == "created" && m.Notification.ID == id })
	insert("bob", "bob under RLS")
	bob.nextMatching("bob's row under RLS", func(m msg) bool { return m.Type == "created" && m.Notification.Title == "bob under RLS" })
	c.send(map[string]any{"type": "read_all"})
	c.nextMatching("marked read under RLS", func(m msg) bool { return m.Type == "updated" && m.Notification.ID == id })

	endPool := dbtest.Pool(t, withRole(t, dbURL, enduser, "", schema))
	tx, err := endPool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT set_config('app.user_id', 'bob', true)`); err != nil {
		t.Fatal(err)
	}
	var users []string
	rows, err := tx.Query(ctx, `SELECT DISTINCT user_id FROM notifications`)
	if err != nil {
		t.Fatal(err)
	}
	if users, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if len(users) != 1 || users[0] != "bob" {
		t.Fatalf("an end-user role acting for bob sees the rows of %v", users)
	}
	tag, err := tx.Exec(ctx, `UPDATE notifications SET read_at = now() WHERE user_id = 'alice'`)
	if err != nil || tag.RowsAffected() != 0 {
		t.Fatalf("bob's role marking alice's rows: %v, %d rows", err, tag.RowsAffected())
	}
}

// createRoles creates login roles (cluster-wide, so the names must be
// unique) and drops them, with what they own in the test's database, when
// the test ends. Call it before opening pools as the roles, so that their
// pools close first.
func createRoles(t *testing.T, admin *pgxpool.Pool, roles ...string) {
	t.Helper()
	for _, r := range roles {
		mustExec(t, admin, `CREATE ROLE `+r+` LOGIN`)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		list := strings.Join(roles, ", ")
		if _, err := admin.Exec(ctx, `DROP OWNED BY `+list+` CASCADE`); err != nil {
			t.Errorf("drop owned by %s: %v", list, err)
			return
		}
		for _, r := range roles {
			// A session that is still on its way out holds the role.
			if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, r); err != nil {
				t.Errorf("terminate %s: %v", r, err)
			}
			if _, err := admin.Exec(ctx, `DROP ROLE `+r); err != nil {
				t.Errorf("drop role %s: %v", r, err)
			}
		}
	})
}

// withRole returns dbURL connecting as role, with search_path set when
// schema is not empty.
func withRole(t *testing.T, dbURL, role, password, schema string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	if password == "" {
		u.User = url.User(role)
	} else {
		u.User = url.UserPassword(role, password)
	}
	if schema != "" {
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// grantServing gives role what the README's Security section grants the role
// that runs pgpush serve, on the tables of the search_path; withKey false
// leaves out the hint key.
func grantServing(t *testing.T, admin *pgxpool.Pool, role string, withKey bool) {
	t.Helper()
	grants := []string{
		`GRANT SELECT, UPDATE (read_at) ON notifications TO %s`,
		`GRANT SELECT ON goose_db_version TO %s`,
		`GRANT SELECT, DELETE ON notifications_deleted TO %s`,
		`GRANT SELECT, UPDATE ON notifications_deleted_horizon TO %s`,
		`GRANT SELECT ON notifications_unread_counts TO %s`,
		`GRANT SELECT, INSERT, UPDATE ON notifications_unread TO %s`,
		`GRANT SELECT, DELETE ON notifications_unread_delta TO %s`,
		`GRANT SELECT, UPDATE ON notifications_unread_folded TO %s`,
	}
	if withKey {
		grants = append(grants, `GRANT SELECT ON notifications_hint_key TO %s`)
	}
	for _, g := range grants {
		mustExec(t, admin, fmt.Sprintf(g, role))
	}
}

func mustExec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// ---- helpers ---------------------------------------------------------------

// newAuthEnv starts a server on a fresh database whose tokens a Verifier
// built from ac checks.
func newAuthEnv(t *testing.T, ac auth.Config, tweak func(*push.Config)) *env {
	t.Helper()
	if ac.Logger == nil {
		ac.Logger = testLogger(t)
	}
	v, err := auth.New(context.Background(), ac)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	dbURL := dbtest.NewDB(t)
	return startEnv(t, dbURL, dbtest.Pool(t, dbURL), v, tweak)
}

// expect returns the next frame that ok accepts. It skips repeated
// "created" and "updated" events for the rows in mine (SPEC §4 lets a client
// see an event twice, and a row written just before a socket opened can also
// arrive live after its ready); any other frame fails the test.
func expect(t *testing.T, c *client, what string, mine map[int64]bool, ok func(msg) bool) msg {
	t.Helper()
	for {
		m := c.next("")
		if ok(m) {
			return m
		}
		if (m.Type == "created" || m.Type == "updated") && m.Notification != nil && mine[m.Notification.ID] {
			continue
		}
		t.Fatalf("got %s while waiting for %s", m.Raw, what)
	}
}

// is matches a frame of type typ about row id (any frame of the type when id
// is 0).
func is(typ string, id int64) func(msg) bool {
	return func(m msg) bool {
		switch {
		case m.Type != typ:
			return false
		case id == 0:
			return true
		case m.Notification != nil:
			return m.Notification.ID == id
		default:
			return m.ID == id
		}
	}
}

// dial attempts a WebSocket handshake and returns the HTTP answer: 101 on
// success (the socket is closed at once), or the refusal with its body.
func dial(t *testing.T, u string, h http.Header) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, res, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: h})
	if err == nil {
		ws.CloseNow()
		return response{StatusCode: http.StatusSwitchingProtocols, Header: res.Header}
	}
	if res == nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	var body []byte
	if res.Body != nil {
		body, _ = io.ReadAll(res.Body)
	}
	return response{StatusCode: res.StatusCode, Header: res.Header, Body: body}
}

// dialStatus is dial's status and body.
func dialStatus(t *testing.T, u string, h http.Header) (int, []byte) {
	t.Helper()
	res := dial(t, u, h)
	return res.StatusCode, res.Body
}

// rawToken builds a token by hand, with any header and signature, as an
// attacker would.
func rawToken(header, payload map[string]any, sig string) string {
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(header) + "." + enc(payload) + "." + sig
}

// strangerRSA signs tokens no JWKS lists; its size does not matter. RSA
// keys are slow to generate under -race: one per test binary.
var strangerRSA = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA(1024) })

func mustRSA(bits int) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		panic(err)
	}
	return k
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestForgedAndReplayedHintsCarryNothingToClients: any role that can connect
// may NOTIFY on pgpush's channel, and LISTEN to it. A hint whose signature
// is not the trigger's, or a genuine one sent again from another session
// (here after its row changed), must not put the row it carries in front of
// a user: such rows are read from the table, as for hints without rows.
func TestForgedAndReplayedHintsCarryNothingToClients(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var channel string
	if err := e.pool.QueryRow(ctx, `SELECT 'pgpush.' || current_schema()`).Scan(&channel); err != nil {
		t.Fatal(err)
	}
	other, err := pgx.Connect(ctx, e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	if _, err := other.Exec(ctx, `LISTEN "`+channel+`"`); err != nil {
		t.Fatal(err)
	}
	c, _ := e.dial("alice", "")
	id := e.insert("alice", "genuine")
	var genuine string
	for genuine == "" {
		n, err := other.WaitForNotification(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(n.Payload, `"genuine"`) {
			genuine = n.Payload
		}
	}
	if !strings.Contains(genuine, `"sig":"`) {
		t.Fatalf("the trigger's hint is not signed: %s", genuine)
	}
	c.nextMatching("the genuine row", func(m msg) bool { return m.Type == "created" && m.Notification.ID == id })
	e.exec(`UPDATE notifications SET title = 'changed' WHERE id = $1`, id)
	c.nextMatching("the change", func(m msg) bool { return m.Type == "updated" && m.Notification.Title == "changed" })

	body := genuine[:strings.LastIndex(genuine, `,"sig":"`)]
	for _, payload := range []string{
		genuine, // replayed by another backend
		strings.Replace(genuine, `"genuine"`, `"forged"`, 1),                                            // altered
		strings.Replace(body, `"genuine"`, `"forged"`, 1) + `,"sig":"` + strings.Repeat("0", 64) + `"}`, // a made-up signature
		strings.Replace(body, `"genuine"`, `"forged"`, 1) + `}`,                                         // none
	} {
		if _, err := other.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, payload); err != nil {
			t.Fatal(err)
		}
	}
	after := e.insert("alice", "after")
	for {
		m := c.next("")
		if m.Notification == nil {
			continue
		}
		if m.Notification.ID == after {
			break
		}
		if m.Notification.Title != "changed" {
			t.Fatalf("a hint sent by another session brought %s", m.Raw)
		}
	}
	if got := e.metric("pgpush_hints_unverified_total"); got != 2 {
		t.Errorf("pgpush_hints_unverified_total = %v, want 2 (the altered payload and the made-up signature)", got)
	}
}

// TestWithoutTheHintKeyRowsAreFetched: a serving role that was not granted
// SELECT on notifications_hint_key cannot check the hints' signatures; it
// says so once in its log, and reads every row and count from the table.
func TestWithoutTheHintKeyRowsAreFetched(t *testing.T) {
	t.Parallel()
	logs := &testkit.SyncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	dbURL := dbtest.NewDB(t)
	admin := dbtest.Pool(t, dbURL)
	role := "pgpush_nokey_" + randomHex(t, 4)
	createRoles(t, admin, role)
	grantServing(t, admin, role, false)
	roleURL := withRole(t, dbURL, role, "", "")
	e := startEnv(t, roleURL, dbtest.Pool(t, roleURL), testVerifier(t), func(c *push.Config) { c.Logger = logger })
	e.pool = admin // the test writes as the owner
	c, _ := e.dial("alice", "")
	v := newView()
	for i := range 3 {
		e.insert("alice", fmt.Sprintf("n%d", i))
		v.apply(c.next("created"))
	}
	if d := v.diff(e.tableView("alice")); d != "" {
		t.Fatalf("the client's view: %s", d)
	}
	if got := e.metric("pgpush_fetch_duration_seconds_count"); got < 1 {
		t.Errorf("no fetch: the rows came from hints the server could not check")
	}
	if n := strings.Count(logs.String(), "cannot read the hint key"); n != 1 {
		t.Errorf("the missing key was logged %d times, want once:\n%s", n, logs)
	}
}
