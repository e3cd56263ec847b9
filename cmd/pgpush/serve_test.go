package main

// Process-level fault tests: the real binary, started as operators start it,
// stopped with SIGTERM or SIGKILL, two nodes against one database.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgpush/pgpush/db/dbtest"
	"github.com/pgpush/pgpush/push/auth"

	"github.com/pgpush/pgpush/internal/testkit"
)

// binary is the pgpush binary built for these tests.
var binary string

func TestMain(m *testing.M) {
	// The test binary's folder is go test's own, removed after the run.
	exe, err := os.Executable()
	if err == nil {
		binary = filepath.Join(filepath.Dir(exe), "pgpush-under-test")
		var out []byte
		out, err = exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%v\n%s", err, out)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "build pgpush: %v\n", err)
		os.Exit(1)
	}
	dbtest.Main(m)
}

const nodeSecret = "serve-test-secret-serve-test-secret!"

// node is one running pgpush serve process.
type node struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string
	log  *testkit.SyncBuffer
	done chan struct{}
	err  error // the exit status, once done is closed
}

var servingRE = regexp.MustCompile(`msg=serving addr=(\S+)`)

// startNode runs pgpush serve on a free port against dbURL.
func startNode(t *testing.T, dbURL string, env ...string) *node {
	t.Helper()
	cmd := exec.Command(binary, "serve", "--addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(),
		"DATABASE_URL="+dbURL,
		"PGPUSH_JWT_SECRET="+nodeSecret,
		"PGPUSH_LOG_LEVEL=debug",
	)
	cmd.Env = append(cmd.Env, env...)
	n := &node{t: t, cmd: cmd, log: &testkit.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout = n.log
	cmd.Stderr = n.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		n.err = cmd.Wait()
		close(n.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-n.done
		if t.Failed() {
			t.Logf("node log:\n%s", n.log.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for n.addr == "" {
		if m := servingRE.FindStringSubmatch(n.log.String()); m != nil {
			n.addr = m[1]
			break
		}
		select {
		case <-n.done:
			t.Fatalf("pgpush exited while starting: %v\n%s", n.err, n.log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgpush did not start:\n%s", n.log.String())
		}
	}
	waitFor(t, 10*time.Second, "the node to be ready", func() bool {
		res, err := http.Get("http://" + n.addr + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	})
	return n
}

// exited waits for the process to end and returns its exit code.
func (n *node) exited(timeout time.Duration) int {
	n.t.Helper()
	select {
	case <-n.done:
	case <-time.After(timeout):
		n.t.Fatalf("pgpush still running %v later", timeout)
	}
	if n.err == nil {
		return 0
	}
	if ee, ok := n.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	n.t.Fatal(n.err)
	return -1
}

// wsClient is a WebSocket to a node whose frames a goroutine decodes.
type wsClient struct {
	t      *testing.T
	ws     *websocket.Conn
	frames chan frameMsg
	mu     sync.Mutex
	err    error
}

type frameMsg struct {
	Type         string `json:"type"`
	Cursor       string `json:"cursor"`
	Resync       bool   `json:"resync"`
	Notification *struct {
		ID    int64  `json:"id"`
		Title string `json:"title"`
	} `json:"notification"`
	raw string
}

func dialNode(t *testing.T, addr, user, cursor string) (*wsClient, frameMsg) {
	t.Helper()
	tok, err := auth.Mint([]byte(nodeSecret), user, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	q := url.Values{"token": {tok}}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+addr+"/v1/ws?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ws.SetReadLimit(4 << 20)
	c := &wsClient{t: t, ws: ws, frames: make(chan frameMsg, 10_000)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(c.frames)
		for {
			_, b, err := ws.Read(context.Background())
			if err != nil {
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
				return
			}
			var m frameMsg
			json.Unmarshal(b, &m)
			m.raw = string(b)
			c.frames <- m
		}
	}()
	t.Cleanup(func() { ws.CloseNow(); <-done })
	var ready frameMsg
	if cursor == "" {
		ready = c.next("ready")
	}
	return c, ready
}

func (c *wsClient) next(typ string) frameMsg {
	c.t.Helper()
	select {
	case m, ok := <-c.frames:
		if !ok {
			c.t.Fatalf("closed while waiting for %q: %v", typ, c.closeErr())
		}
		if typ != "" && m.Type != typ {
			c.t.Fatalf("got %s, want %q", m.raw, typ)
		}
		return m
	case <-time.After(15 * time.Second):
		c.t.Fatalf("timed out waiting for %q", typ)
	}
	return frameMsg{}
}

func (c *wsClient) closeErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// closed waits until the connection ends and returns its close code.
func (c *wsClient) closed(timeout time.Duration) websocket.StatusCode {
	c.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case _, ok := <-c.frames:
			if !ok {
				return websocket.CloseStatus(c.closeErr())
			}
		case <-deadline:
			c.t.Fatal("timed out waiting for the connection to close")
		}
	}
}

// Item 6: SIGTERM stops accepting, closes every WebSocket with 1001 and
// exits 0 within the drain time, even with a client that neither reads nor
// answers the close.
func TestSIGTERMClosesEveryClientWith1001AndExits0(t *testing.T) {
	t.Parallel()
	n := startNode(t, dbtest.NewDB(t), "PGPUSH_DRAIN_TIMEOUT=2s")
	a, _ := dialNode(t, n.addr, "alice", "")
	b, _ := dialNode(t, n.addr, "bob", "")
	// A client that never reads: its socket takes the close frame, but
	// it never answers it.
	mute, err := net.Dial("tcp", n.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	tok, _ := auth.Mint([]byte(nodeSecret), "carol", time.Hour, "", "")
	fmt.Fprintf(mute, "GET /v1/ws?token=%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", tok, n.addr)
	status, err := bufio.NewReader(mute).ReadString('\n')
	if err != nil || !strings.Contains(status, "101") {
		t.Fatalf("mute client upgrade: %q %v", status, err)
	}

	start := time.Now()
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*wsClient{a, b} {
		if code := c.closed(10 * time.Second); code != websocket.StatusGoingAway {
			t.Fatalf("close code %d, want 1001", code)
		}
	}
	closedAfter := time.Since(start)
	if code := n.exited(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0\n%s", code, n.log.String())
	}
	exitedAfter := time.Since(start)
	t.Logf("clients closed %v and process exited %v after SIGTERM (drain 2s)",
		closedAfter.Round(time.Millisecond), exitedAfter.Round(time.Millisecond))
	if exitedAfter > 5*time.Second {
		t.Fatalf("exit took %v with a 2s drain", exitedAfter)
	}
	if c, err := net.DialTimeout("tcp", n.addr, time.Second); err == nil {
		c.Close()
		t.Fatal("the port still accepts connections")
	}
}

// Items 3 and 6: two nodes against one database, each with one LISTEN
// connection and its own clients. A node killed with SIGKILL loses nothing:
// its client resumes on the other node with its cursor and is replayed what
// was committed meanwhile.
func TestTwoNodesAndAKilledOne(t *testing.T) {
	t.Parallel()
	dbURL := dbtest.NewDB(t)
	n1 := startNode(t, dbURL, "PGPUSH_DB_MAX_CONNS=4")
	n2 := startNode(t, dbURL, "PGPUSH_DB_MAX_CONNS=4")
	pool := dbPool(t, dbURL)
	insert := func(user, title string) int64 {
		t.Helper()
		var id int64
		if err := pool.QueryRow(context.Background(),
			`INSERT INTO notifications (user_id, title) VALUES ($1, $2) RETURNING id`, user, title).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}

	onOne, _ := dialNode(t, n1.addr, "alice", "")
	onTwo, _ := dialNode(t, n2.addr, "alice", "")
	id := insert("alice", "to both")
	var cursor string
	for _, c := range []*wsClient{onOne, onTwo} {
		m := c.next("created")
		if m.Notification.ID != id {
			t.Fatalf("got %s", m.raw)
		}
		if c == onOne {
			cursor = m.Cursor
		}
	}

	// What the nodes cost the database at rest.
	var listeners, pooled int
	if err := pool.QueryRow(context.Background(), `SELECT
		count(*) FILTER (WHERE application_name = 'pgpush-listener'),
		count(*) FILTER (WHERE application_name = 'pgpush')
		FROM pg_stat_activity WHERE datname = current_database()`).Scan(&listeners, &pooled); err != nil {
		t.Fatal(err)
	}
	t.Logf("two nodes hold %d LISTEN connections and %d pool connections", listeners, pooled)
	if listeners != 2 {
		t.Fatalf("%d LISTEN connections for two nodes, want 2", listeners)
	}
	if pooled > 8 {
		t.Fatalf("%d pool connections for two nodes of at most 4", pooled)
	}

	if err := n1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	n1.exited(10 * time.Second)
	onOne.closed(10 * time.Second)

	var missed []int64
	for i := range 5 {
		missed = append(missed, insert("alice", fmt.Sprintf("while node 1 is dead %d", i)))
	}
	// The other node's client hears them live; the killed node's client
	// resumes there and is replayed them before "ready".
	for _, want := range missed {
		if m := onTwo.next("created"); m.Notification.ID != want {
			t.Fatalf("node 2 live: got %s, want row %d", m.raw, want)
		}
	}
	resumed, _ := dialNode(t, n2.addr, "alice", cursor)
	got := map[int64]bool{}
	for {
		m := resumed.next("")
		if m.Type == "ready" {
			if m.Resync {
				t.Fatalf("resume got a resync: %s", m.raw)
			}
			break
		}
		if m.Notification != nil {
			got[m.Notification.ID] = true
		}
	}
	for _, want := range missed {
		if !got[want] {
			t.Fatalf("row %d, committed while node 1 was dead, was not replayed (got %v)", want, got)
		}
	}
	after := insert("alice", "live on node 2")
	if m := resumed.next("created"); m.Notification.ID != after {
		t.Fatalf("got %s, want row %d", m.raw, after)
	}
}

// Item 7: the pool serve uses has statement and idle-transaction timeouts
// on every session, and a bounded number of connections.
func TestThePoolHasTimeoutsAndABound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := openPool(ctx, dbtest.NewDB(t), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var stmt, idleTx, app string
	if err := pool.QueryRow(ctx, `SELECT current_setting('statement_timeout'),
		current_setting('idle_in_transaction_session_timeout'), current_setting('application_name')`).Scan(&stmt, &idleTx, &app); err != nil {
		t.Fatal(err)
	}
	if stmt != "15s" || idleTx != "30s" || app != "pgpush" {
		t.Fatalf("statement_timeout %s, idle_in_transaction_session_timeout %s, application_name %s", stmt, idleTx, app)
	}
	if c := pool.Config(); c.MaxConns != 3 || c.MaxConnIdleTime <= 0 {
		t.Fatalf("max conns %d, max idle time %v", c.MaxConns, c.MaxConnIdleTime)
	}
}

func dbPool(t *testing.T, dbURL string) *pgxpool.Pool {
	return dbtest.Pool(t, dbURL)
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
