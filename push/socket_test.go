package push

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// countingConn counts the writes that reach a real TCP connection.
type countingConn struct {
	net.Conn
	writes atomic.Int32
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestCorkedSocketWritesABatchAtOnce(t *testing.T) {
	a, b := tcpPair(t)
	cc := &countingConn{Conn: a}
	s := &socket{Conn: cc, timeout: 5 * time.Second}

	var want bytes.Buffer
	s.cork()
	for i := range 100 {
		p := bytes.Repeat([]byte{byte('a' + i%26)}, 100)
		want.Write(p)
		if _, err := s.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if n := cc.writes.Load(); n != 0 {
		t.Fatalf("%d writes while corked, want 0", n)
	}
	if err := s.uncork(); err != nil {
		t.Fatal(err)
	}
	if n := cc.writes.Load(); n != 1 {
		t.Fatalf("%d writes for the batch, want 1", n)
	}
	// Uncorked, a write goes out at once.
	if _, err := s.Write([]byte("tail")); err != nil {
		t.Fatal(err)
	}
	want.WriteString("tail")
	got := make([]byte, want.Len())
	if _, err := io.ReadFull(b, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("the peer got other bytes than were written, or in another order")
	}
}

func TestCorkedSocketFlushesPastItsLimit(t *testing.T) {
	a, b := tcpPair(t)
	cc := &countingConn{Conn: a}
	s := &socket{Conn: cc, timeout: 5 * time.Second}
	go io.Copy(io.Discard, b)

	s.cork()
	chunk := make([]byte, 1000)
	total := 0
	for total < 3*corkLimit {
		if _, err := s.Write(chunk); err != nil {
			t.Fatal(err)
		}
		total += len(chunk)
	}
	// A frame bigger than the limit is written through.
	if _, err := s.Write(make([]byte, corkLimit+1)); err != nil {
		t.Fatal(err)
	}
	if err := s.uncork(); err != nil {
		t.Fatal(err)
	}
	if n := cc.writes.Load(); n < 3 || n > 6 {
		t.Fatalf("%d writes for %d bytes, want a few of at most %d bytes each", n, total, corkLimit)
	}
}

func TestUncorkTimesOutOnAPeerThatDoesNotRead(t *testing.T) {
	a, _ := tcpPair(t)
	s := &socket{Conn: a, timeout: 200 * time.Millisecond}
	chunk := make([]byte, corkLimit)
	var err error
	// The kernel's buffers take a few MB; past them the writes block.
	for i := 0; i < 10_000 && err == nil; i++ {
		s.cork()
		_, err = s.Write(chunk)
		if err == nil {
			err = s.uncork()
		}
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v, want a deadline error", err)
	}
}

func TestABigFrameTimesOutOnAPeerThatDoesNotRead(t *testing.T) {
	a, _ := tcpPair(t)
	s := &socket{Conn: a, timeout: 200 * time.Millisecond}
	big := make([]byte, 4*corkLimit) // written through, past the buffer
	var err error
	s.cork()
	for i := 0; i < 10_000 && err == nil; i++ {
		_, err = s.Write(big)
	}
	s.uncork()
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v, want a deadline error", err)
	}
}

// sessionPair returns a session whose WebSocket was accepted through
// hijacker, like a real one, and the client connected to it.
func sessionPair(tb testing.TB) (*session, *websocket.Conn) {
	tb.Helper()
	accepted := make(chan *session, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hj := &hijacker{ResponseWriter: w, timeout: 10 * time.Second}
		ws, err := websocket.Accept(hj, r, nil)
		if err != nil {
			tb.Error(err)
			return
		}
		accepted <- &session{s: &Server{metrics: newMetrics(func() float64 { return 0 })}, ws: ws, sock: hj.sock}
	}))
	tb.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		tb.Fatal(err)
	}
	client.SetReadLimit(-1)
	select {
	case ss := <-accepted:
		return ss, client
	case <-ctx.Done():
		tb.Fatal("the server did not accept")
		return nil, nil
	}
}

// Batches of frames, the server's pings, the client's pings and the
// server's pongs all share the corked socket: every frame must arrive
// whole and in order, and every ping must be answered.
func TestCorkedSocketInterleavesControlFrames(t *testing.T) {
	ss, client := sessionPair(t)
	defer ss.ws.CloseNow()
	defer client.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The server reads (so that it answers the client's pings and hears
	// the pongs to its own) and pings.
	go func() {
		for {
			if _, _, err := ss.ws.Read(ctx); err != nil {
				return
			}
		}
	}()
	var serverPings, clientPings atomic.Int32
	pinger := func(ws *websocket.Conn, n *atomic.Int32) {
		for ctx.Err() == nil {
			if err := ws.Ping(ctx); err != nil {
				return
			}
			n.Add(1)
		}
	}
	go pinger(ss.ws, &serverPings)

	// The client checks the frames, then reads on (its pongs need a
	// reader) until the connection closes; a frame past the last is an
	// error too.
	const batches, perBatch = 200, 50
	got := make(chan error, 2)
	go func() {
		for want := 0; ; want++ {
			_, b, err := client.Read(ctx)
			if err != nil {
				if want < batches*perBatch {
					got <- err
				}
				return
			}
			if want == batches*perBatch {
				got <- fmt.Errorf("an extra frame: %.60q…", b)
				return
			}
			if string(b) != fmt.Sprintf(`{"seq":%d,"pad":"%s"}`, want, strings.Repeat("x", want%700)) {
				got <- fmt.Errorf("frame %d: got %.60q…", want, b)
				return
			}
			if want == batches*perBatch-1 {
				got <- nil
			}
		}
	}()
	go pinger(client, &clientPings)

	seq := 0
	for range batches {
		frames := make([]frame, perBatch)
		for i := range frames {
			frames[i] = frame{b: fmt.Appendf(nil, `{"seq":%d,"pad":"%s"}`, seq, strings.Repeat("x", seq%700))}
			seq++
		}
		if err := ss.writeFrames(ctx, frames); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	waitFor := func(what string, n *atomic.Int32) {
		for n.Load() < 3 {
			if ctx.Err() != nil {
				t.Fatalf("%s: %d pings answered", what, n.Load())
			}
			runtime.Gosched()
		}
	}
	waitFor("server", &serverPings)
	waitFor("client", &clientPings)
	select {
	case err := <-got:
		t.Fatal(err)
	default:
	}
}
