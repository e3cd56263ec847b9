package push

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Buffer sizes of a WebSocket's hijacked connection. net/http's are 4 KiB
// each, held for the connection's life. Client messages are small, and the
// library's write buffer can be tiny because every write goes through a
// corked socket (see socket), whose buffer is only borrowed while the writer
// writes: an idle connection holds neither (see README, "Performance").
const (
	wsReadBuffer  = 128
	wsWriteBuffer = 16 // bufio's minimum
)

// hijacker hands websocket.Accept the hijacked connection as a *socket with
// the smaller buffers above, and keeps the socket for the session.
type hijacker struct {
	http.ResponseWriter
	timeout time.Duration // the socket's write timeout when it uncorks
	sock    *socket
}

func (h *hijacker) Unwrap() http.ResponseWriter { return h.ResponseWriter }

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if err := brw.Writer.Flush(); err != nil {
		nc.Close()
		return nil, nil, err
	}
	var src io.Reader = nc
	if n := brw.Reader.Buffered(); n > 0 {
		// A client that did not wait for the 101 before its first frame.
		b, _ := brw.Reader.Peek(n)
		src = io.MultiReader(bytes.NewReader(bytes.Clone(b)), nc)
	}
	h.sock = &socket{Conn: nc, timeout: h.timeout}
	return h.sock, bufio.NewReadWriter(bufio.NewReaderSize(src, wsReadBuffer), bufio.NewWriterSize(h.sock, wsWriteBuffer)), nil
}

// corkLimit bounds what a corked socket gathers before it writes anyway.
const corkLimit = 32 << 10

var corkBuffers = sync.Pool{New: func() any { return new([]byte) }}

// socket is a WebSocket's connection. The library writes every message with
// a system call of its own (two when a frame outgrows its write buffer);
// while the writer has the socket corked, the messages gather in a pooled
// buffer instead, and uncork writes them at once, so that a frame is one
// write and a batch (a replay page, a burst) a few, not one per frame.
// Control frames written meanwhile (a pong from the reader, a ping) wait for
// the uncork, which follows at once. It is safe for concurrent use.
type socket struct {
	net.Conn
	timeout time.Duration

	mu     sync.Mutex
	corked bool
	buf    *[]byte // nil unless corked
}

// Write writes p, or gathers it while the socket is corked. Uncorked, it is
// the library's write (a control frame from the reader or a ping), which the
// library bounds in time; corked, it is the writer's, and every write that
// reaches the network is bounded by the write timeout.
func (s *socket) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.corked {
		return s.Conn.Write(p)
	}
	if len(*s.buf)+len(p) > corkLimit {
		if err := s.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) <= corkLimit {
		*s.buf = append(*s.buf, p...)
		return len(p), nil
	}
	// A frame bigger than the buffer goes out directly.
	return s.writeWithin(p)
}

// writeWithin writes p to the network, waiting at most the write timeout.
func (s *socket) writeWithin(p []byte) (int, error) {
	s.Conn.SetWriteDeadline(time.Now().Add(s.timeout))
	n, err := s.Conn.Write(p)
	s.Conn.SetWriteDeadline(time.Time{})
	return n, err
}

// cork makes writes gather until uncork.
func (s *socket) cork() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.corked {
		s.corked = true
		s.buf = corkBuffers.Get().(*[]byte)
	}
}

// uncork writes what gathered, waiting at most the write timeout for the
// peer to take it (a write that times out fails with
// os.ErrDeadlineExceeded).
func (s *socket) uncork() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.corked {
		return nil
	}
	err := s.flushLocked()
	s.corked = false
	*s.buf = (*s.buf)[:0]
	corkBuffers.Put(s.buf)
	s.buf = nil
	return err
}

func (s *socket) flushLocked() error {
	if len(*s.buf) == 0 {
		return nil
	}
	_, err := s.writeWithin(*s.buf)
	*s.buf = (*s.buf)[:0]
	return err
}
