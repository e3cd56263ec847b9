package push

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"
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
