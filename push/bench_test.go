package push

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pgpush/pgpush/db"
)

// Benchmarks of the hot path, for benchstat (hint decoding is in
// hints_test.go): frame encoding (dispatcher, once per row), routing to
// connections (hub), the connection queue (enqueue and take) and the
// per-connection write path.

func benchNotification() db.Notification {
	url := "https://shop.example/orders/42"
	return db.Notification{
		ID: 42, UserID: "alice", Kind: "order.shipped", Title: "Order shipped",
		Body: strings.Repeat("Your order #42 is on its way. ", 7), Url: &url,
		Data:      []byte(`{"order": 42, "items": [1, 2, 3]}`),
		CreatedAt: pgtype.Timestamptz{Valid: true},
	}
}

func BenchmarkRowFrame(b *testing.B) {
	n := benchNotification()
	b.ReportAllocs()
	for b.Loop() {
		_ = rowFrame("created", &n, 7, 123456)
	}
}

// BenchmarkHubDeliver routes one frame to every connection of a user among
// 1,000 and lets each connection's writer take it.
func BenchmarkHubDeliver(b *testing.B) {
	for _, perUser := range []int{1, 10} {
		b.Run(fmt.Sprintf("conns=%d", perUser), func(b *testing.B) {
			h := newHub(100, 1_000_000)
			users := make([]string, 1000)
			conns := make([][]*conn, len(users))
			for u := range users {
				users[u] = fmt.Sprintf("user-%d", u)
				for range perUser {
					c := newConn(users[u], 1024, 8<<20, func() {})
					if err := h.add(c); err != nil {
						b.Fatal(err)
					}
					conns[u] = append(conns[u], c)
				}
			}
			n := benchNotification()
			f := frame{b: rowFrame("created", &n, 1, 1), cur: 1, rowID: 42}
			var p pending
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				u := i % len(users)
				i++
				h.deliver(users[u], f)
				for _, c := range conns[u] {
					if !c.take(&p) {
						b.Fatal("the frame was not queued")
					}
				}
			}
		})
	}
}

func BenchmarkConnQueue(b *testing.B) {
	c := newConn("alice", 1024, 8<<20, func() {})
	n := benchNotification()
	f := frame{b: rowFrame("created", &n, 1, 1), cur: 1}
	var p pending
	b.ReportAllocs()
	for b.Loop() {
		c.enqueue(f)
		if !c.take(&p) {
			b.Fatal("the frame was not queued")
		}
	}
}

// BenchmarkWriteFrames is the per-connection write path: a batch of row
// frames through coder/websocket and the corked socket to a real WebSocket
// client over loopback TCP, which reads and discards them.
func BenchmarkWriteFrames(b *testing.B) {
	for _, batch := range []int{1, 10, 128} {
		b.Run(fmt.Sprintf("frames=%d", batch), func(b *testing.B) {
			ss := benchSession(b)
			n := benchNotification()
			f := frame{b: rowFrame("created", &n, 1, 1)}
			frames := make([]frame, batch)
			for i := range frames {
				frames[i] = f
			}
			b.SetBytes(int64(batch * len(f.b)))
			b.ReportAllocs()
			for b.Loop() {
				if err := ss.writeFrames(context.Background(), frames); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchSession returns a session whose WebSocket, accepted through hijacker
// like a real one, is connected to a client that discards what it reads.
func benchSession(b *testing.B) *session {
	b.Helper()
	ss, client := sessionPair(b)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_, r, err := client.Reader(context.Background())
			if err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, r); err != nil {
				return
			}
		}
	}()
	b.Cleanup(func() {
		ss.ws.CloseNow()
		client.CloseNow()
		<-done
	})
	return ss
}
