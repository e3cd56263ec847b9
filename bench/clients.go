package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

const (
	// dialTimeout bounds one handshake and its ready frame.
	dialTimeout = 30 * time.Second
	// readLimit caps one frame; a ready frame holds 20 rows.
	readLimit = 4 << 20
)

// client is one WebSocket. Its reader goroutine owns every field but ws
// until the fleet has stopped.
type client struct {
	ws   *websocket.Conn
	user int
	// lat[i] is the latency in nanoseconds of the user's i-th row (seq =
	// i*users + user), or -1 until it arrives.
	lat        []int64
	duplicated int64
	unexpected int64 // created frames that are not rows of this user in this run
	err        error // why the connection ended early; nil if the run closed it
}

// fleet is the run's WebSockets. Clients of one user are adjacent:
// client i belongs to user i / ConnsPerUser.
type fleet struct {
	r       *run
	clients []client
	http    []*http.Client // one per source address
	tokens  []string       // per user

	connected   atomic.Int64
	received    atomic.Int64 // first arrivals of expected rows
	closedEarly atomic.Int64
	stopping    atomic.Bool
	readers     sync.WaitGroup
}

func newFleet(r *run) (*fleet, error) {
	o := &r.o
	f := &fleet{r: r, clients: make([]client, o.conns()), tokens: make([]string, o.Users)}
	lat := make([]int64, o.conns()*r.rowsPerUser)
	for i := range lat {
		lat[i] = -1
	}
	for i := range f.clients {
		c := &f.clients[i]
		c.user = i / o.ConnsPerUser
		c.lat = lat[i*r.rowsPerUser : (i+1)*r.rowsPerUser : (i+1)*r.rowsPerUser]
	}
	for u := range f.tokens {
		tok, err := r.mint(r.userIDs[u])
		if err != nil {
			return nil, err
		}
		f.tokens[u] = tok
	}
	// Past ~28,000 connections from one source address to one server port
	// the ephemeral ports run out; the whole of 127/8 is loopback on Linux.
	sources := 1
	if ip := net.ParseIP(r.t.baseURL.Hostname()); ip != nil && ip.To4() != nil && ip.IsLoopback() {
		sources = (len(f.clients) + o.ConnsPerSourceAddr - 1) / o.ConnsPerSourceAddr
	}
	if sources > 254 {
		return nil, fmt.Errorf("%d connections need %d source addresses; 127.0.0.1-254 are available", len(f.clients), sources)
	}
	for s := range sources {
		d := &net.Dialer{Timeout: dialTimeout}
		if sources > 1 {
			d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+s))}
		}
		f.http = append(f.http, &http.Client{Transport: &http.Transport{
			DialContext:        d.DialContext,
			DisableCompression: true,
			MaxIdleConns:       1,
		}})
	}
	return f, nil
}

// connect opens every connection, DialConcurrency at a time, and returns
// once each has received its ready frame, or at the first failure.
func (f *fleet) connect(ctx context.Context) error {
	o := &f.r.o
	ctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	var next atomic.Int64
	var (
		errOnce  sync.Once
		firstErr error
	)
	var wg sync.WaitGroup
	for range min(o.DialConcurrency, len(f.clients)) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(f.clients) {
					return
				}
				if err := f.dial(ctx, i); err != nil {
					errOnce.Do(func() {
						firstErr = fmt.Errorf("connection %d of %d: %w", i+1, len(f.clients), err)
						cancel()
					})
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("connect %d connections: %d open after %s: %w", len(f.clients), f.connected.Load(), o.ConnectTimeout, err)
	}
	return nil
}

// dial opens client i, reads its ready frame and starts its reader.
func (f *fleet) dial(ctx context.Context, i int) error {
	c := &f.clients[i]
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	ws, resp, err := websocket.Dial(dctx, f.r.t.wsURL(f.tokens[c.user]), &websocket.DialOptions{
		HTTPClient: f.http[i%len(f.http)],
	})
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			switch resp.StatusCode {
			case http.StatusTooManyRequests:
				return fmt.Errorf("server refused: %s %s (is its PGPUSH_MAX_CONNS_PER_USER below %d?)", resp.Status, body, f.r.o.ConnsPerUser)
			case http.StatusUnauthorized:
				return fmt.Errorf("server refused the token: %s %s (same --jwt-secret, issuer and audience as the server?)", resp.Status, body)
			}
			return fmt.Errorf("handshake: %s %s", resp.Status, body)
		}
		return err
	}
	ws.SetReadLimit(readLimit)
	buf := make([]byte, 0, 1024)
	_, rd, err := ws.Reader(dctx)
	if err == nil {
		buf, err = readFrame(buf, rd)
	}
	if err != nil {
		ws.CloseNow()
		return fmt.Errorf("wait for ready: %w", err)
	}
	if fi := decodeFrame(buf); fi.kind != kindReady {
		ws.CloseNow()
		return fmt.Errorf("first frame is not ready: %.200s", buf)
	}
	c.ws = ws
	f.connected.Add(1)
	f.readers.Go(func() { f.read(c, buf) })
	return nil
}

// read records the frames of c until the connection ends. It is the only
// goroutine of a connection, does no allocation per frame, and takes the
// arrival time right after the frame is decoded.
func (f *fleet) read(c *client, buf []byte) {
	r := f.r
	users := int64(r.o.Users)
	rows := int64(r.rows)
	for {
		// No context: stop ends the read with CloseNow. A cancellable one
		// would register (and unregister) a callback on one shared context
		// per frame, from every connection.
		_, rd, err := c.ws.Reader(context.Background())
		if err == nil {
			buf, err = readFrame(buf[:0], rd)
		}
		if err != nil {
			if !f.stopping.Load() {
				c.err = err
				f.closedEarly.Add(1)
			}
			return
		}
		fi := decodeFrame(buf)
		now := r.clock()
		if fi.kind != kindCreated {
			continue
		}
		if fi.seq < 0 || fi.seq >= rows || fi.seq%users != int64(c.user) {
			c.unexpected++
			continue
		}
		i := fi.seq / users
		if c.lat[i] >= 0 {
			c.duplicated++
			continue
		}
		c.lat[i] = now - fi.sent
		f.received.Add(1)
	}
}

// readFrame appends one message from rd to buf.
func readFrame(buf []byte, rd io.Reader) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// stop closes every connection and waits for the readers. Closing without
// the close handshake is what a browser tab that goes away does, and it does
// not make tens of thousands of closes wait on a busy server.
func (f *fleet) stop() {
	f.stopping.Store(true)
	for i := range f.clients {
		if ws := f.clients[i].ws; ws != nil {
			ws.CloseNow()
		}
	}
	f.readers.Wait()
	for _, h := range f.http {
		h.CloseIdleConnections()
	}
}

// closeReasons summarises why connections ended early.
func (f *fleet) closeReasons(limit int) []string {
	counts := map[string]int{}
	var order []string
	for i := range f.clients {
		err := f.clients[i].err
		if err == nil {
			continue
		}
		var key string
		if code := websocket.CloseStatus(err); code != -1 {
			key = fmt.Sprintf("closed by the server with %d", int(code))
			var ce websocket.CloseError
			if errors.As(err, &ce) && ce.Reason != "" {
				key += " (" + ce.Reason + ")"
			}
		} else {
			key = err.Error()
		}
		if counts[key] == 0 {
			order = append(order, key)
		}
		counts[key]++
	}
	var out []string
	for _, k := range order[:min(limit, len(order))] {
		out = append(out, fmt.Sprintf("%d connections: %s", counts[k], k))
	}
	return out
}
