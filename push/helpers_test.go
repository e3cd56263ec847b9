package push_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgpush/pgpush/db/dbtest"
	"github.com/pgpush/pgpush/push"
	"github.com/pgpush/pgpush/push/auth"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

var testSecret = []byte("test-secret-test-secret-test-secret!")

// env is one test's database, pgpush server and HTTP endpoint.
type env struct {
	t    testing.TB
	url  string
	pool *pgxpool.Pool
	srv  *push.Server
	http *httptest.Server
}

// newEnv starts a server on a fresh database. tweak may change the config.
func newEnv(t testing.TB, tweak func(*push.Config)) *env {
	t.Helper()
	url := dbtest.NewDB(t)
	return newEnvOn(t, url, tweak)
}

func newEnvOn(t testing.TB, url string, tweak func(*push.Config)) *env {
	t.Helper()
	return startEnv(t, url, dbtest.Pool(t, url), testVerifier(t), tweak)
}

// startEnv starts a server on pool with verifier v and serves it; dbURL is
// recorded for tests that connect on their own.
func startEnv(t testing.TB, dbURL string, pool *pgxpool.Pool, v push.Verifier, tweak func(*push.Config)) *env {
	t.Helper()
	cfg := push.Config{Logger: testLogger(t)}
	if tweak != nil {
		tweak(&cfg)
	}
	srv, err := push.New(pool, v, cfg)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Start(sctx); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		srv.Close()
		hs.Close()
	})
	e := &env{t: t, url: dbURL, pool: pool, srv: srv, http: hs}
	e.waitReady(true, 10*time.Second)
	return e
}

// testVerifier checks tokens signed with testSecret.
func testVerifier(t testing.TB) push.Verifier {
	t.Helper()
	v, err := auth.New(context.Background(), auth.Config{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// waitReady waits for /readyz to say ready (200) or not (503).
func (e *env) waitReady(ready bool, timeout time.Duration) {
	e.t.Helper()
	want := http.StatusServiceUnavailable
	if ready {
		want = http.StatusOK
	}
	waitUntil(e.t, timeout, fmt.Sprintf("/readyz %d", want), func() bool {
		return e.get("/readyz", "").StatusCode == want
	})
}

// patientClients is a Config tweak for tests that deliver a flood to a
// client that reads as fast as it can: on a loaded machine, under -race,
// the test's reader can be starved of CPU for longer than the default write
// timeout, and the server would drop it as a slow consumer (the behaviour
// under test in TestAClientThatStopsReadingCostsBoundedMemory).
func patientClients(c *push.Config) { c.WriteTimeout = time.Minute }

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("PGPUSH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func token(t testing.TB, user string) string {
	t.Helper()
	tok, err := auth.Mint(testSecret, user, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// exec runs SQL as an application would.
func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

// insert inserts a row for user and returns its id.
func (e *env) insert(user, title string) int64 {
	e.t.Helper()
	var id int64
	err := e.pool.QueryRow(context.Background(),
		`INSERT INTO notifications (user_id, title) VALUES ($1, $2) RETURNING id`, user, title).Scan(&id)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

type response struct {
	StatusCode int
	Header     http.Header
	Body       []byte
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("body %q is not JSON: %v", r.Body, err)
	}
	return m
}

func (e *env) do(method, path, tok, body string, header map[string]string) response {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.http.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{StatusCode: res.StatusCode, Header: res.Header, Body: b}
}

func (e *env) get(path, tok string) response { return e.do(http.MethodGet, path, tok, "", nil) }

// msg is one decoded server frame.
type msg struct {
	Type          string          `json:"type"`
	UserID        string          `json:"user_id"`
	Unread        *int64          `json:"unread"`
	Cursor        string          `json:"cursor"`
	Notification  *notification   `json:"notification"`
	Notifications []notification  `json:"notifications"`
	ID            int64           `json:"id"`
	Resync        bool            `json:"resync"`
	Error         string          `json:"error"`
	Message       string          `json:"message"`
	Raw           json.RawMessage `json:"-"`
}

type notification struct {
	ID        int64           `json:"id"`
	UserID    string          `json:"user_id"`
	Kind      string          `json:"kind"`
	Title     string          `json:"title"`
	Body      string          `json:"body"`
	URL       *string         `json:"url"`
	Data      json.RawMessage `json:"data"`
	CreatedAt string          `json:"created_at"`
	ReadAt    *string         `json:"read_at"`
}

// client is a real WebSocket client whose frames a goroutine decodes into a
// channel, so tests wait for them with timeouts.
type client struct {
	t      testing.TB
	ws     *websocket.Conn
	frames chan msg
	done   chan struct{}
	mu     sync.Mutex
	err    error // why reading stopped
	last   string
}

// wsURL is the WebSocket URL for a token and an optional cursor.
func (e *env) wsURL(tok, cursor string) string {
	q := url.Values{}
	if tok != "" {
		q.Set("token", tok)
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	return "ws" + strings.TrimPrefix(e.http.URL, "http") + "/v1/ws?" + q.Encode()
}

// dial connects as user, optionally resuming, and reads up to ready.
func (e *env) dial(user, cursor string) (*client, msg) {
	e.t.Helper()
	c := e.dialRaw(e.wsURL(token(e.t, user), cursor), nil)
	ready := c.next("ready")
	return c, ready
}

func (e *env) dialRaw(u string, opts *websocket.DialOptions) *client {
	e.t.Helper()
	// A failure limit, generous for a loaded machine: under -race beside
	// other work a handshake has taken more than 10 s.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, res, err := websocket.Dial(ctx, u, opts)
	if err != nil {
		status := 0
		if res != nil {
			status = res.StatusCode
		}
		e.t.Fatalf("dial: %v (status %d)", err, status)
	}
	ws.SetReadLimit(4 << 20)
	c := &client{t: e.t, ws: ws, frames: make(chan msg, 200_000), done: make(chan struct{})}
	go c.read()
	e.t.Cleanup(func() { c.ws.CloseNow(); <-c.done })
	return c
}

func (c *client) read() {
	defer close(c.done)
	defer close(c.frames)
	for {
		_, b, err := c.ws.Read(context.Background())
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
		var m msg
		if err := json.Unmarshal(b, &m); err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
		m.Raw = b
		c.frames <- m
	}
}

// next returns the next frame, which must be of type typ (any type if "").
func (c *client) next(typ string) msg {
	c.t.Helper()
	select {
	case m, ok := <-c.frames:
		if !ok {
			c.t.Fatalf("connection closed while waiting for %q: %v", typ, c.closeErr())
		}
		if m.Cursor != "" {
			c.last = m.Cursor
		}
		if typ != "" && m.Type != typ {
			c.t.Fatalf("got %s, want %q", m.Raw, typ)
		}
		return m
	case <-time.After(30 * time.Second): // a failure limit, generous for a loaded machine
		c.t.Fatalf("timed out waiting for %q", typ)
	}
	return msg{}
}

// nextMatching skips frames until one satisfies ok.
func (c *client) nextMatching(what string, ok func(msg) bool) msg {
	c.t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case m, open := <-c.frames:
			if !open {
				c.t.Fatalf("connection closed while waiting for %s: %v", what, c.closeErr())
			}
			if m.Cursor != "" {
				c.last = m.Cursor
			}
			if ok(m) {
				return m
			}
		case <-deadline:
			c.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// closed waits for the server to close the connection and returns the code.
func (c *client) closed() websocket.StatusCode {
	c.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case _, ok := <-c.frames:
			if !ok {
				return websocket.CloseStatus(c.closeErr())
			}
		case <-timeout:
			c.t.Fatal("timed out waiting for the connection to close")
		}
	}
}

func (c *client) closeErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *client) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendRaw(b)
}

func (c *client) sendRaw(b []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatal(err)
	}
}

// waitUntil polls cond until it holds or timeout passes.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func websocketDial(ctx context.Context, u string) (*websocket.Conn, *http.Response, error) {
	return websocket.Dial(ctx, u, nil)
}
