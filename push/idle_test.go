package push_test

import (
	"context"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/pgpush/pgpush/push"
)

// goroutinesIn counts the goroutines whose stack passes through fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			count++
		}
	}
	return count
}

// An idle connection holds one goroutine, its reader: the HTTP handler has
// returned and no writer runs until there is something to send. A row then
// starts a writer, which ends once the row is written.
func TestIdleConnectionHoldsOneGoroutine(t *testing.T) {
	e := newEnv(t, nil)
	const n = 20
	clients := make([]*client, n)
	for i := range clients {
		clients[i], _ = e.dial("idle", "")
	}
	// n is within the default per-user limit of 32.
	idle := func() bool {
		return goroutinesIn("push.(*session).readLoop") == n &&
			goroutinesIn("push.(*session).drain") == 0 &&
			goroutinesIn("push.(*Server).handleWS") == 0
	}
	waitUntil(t, 10*time.Second, "one goroutine per idle connection", idle)

	id := e.insert("idle", "wake up")
	for _, c := range clients {
		if m := c.next("created"); m.Notification.ID != id {
			t.Fatalf("got row %d, want %d", m.Notification.ID, id)
		}
	}
	waitUntil(t, 10*time.Second, "the writers to end after the row", idle)
}

// The server pings every connection; one whose peer stops answering is
// dropped, one that answers stays.
func TestPingDropsASilentPeer(t *testing.T) {
	e := newEnv(t, func(c *push.Config) {
		c.PingInterval = 50 * time.Millisecond
		// The pong of a live peer must come within it also on a loaded
		// machine under -race (1 s was too short once).
		c.WriteTimeout = 5 * time.Second
	})

	// This client answers pings (its reader runs) and counts them.
	var pings atomic.Int32
	live := e.dialRaw(e.wsURL(token(t, "alive"), ""), &websocket.DialOptions{
		OnPingReceived: func(context.Context, []byte) bool { pings.Add(1); return true },
	})
	live.next("ready")

	// This one completes the handshake, then never reads, so it never
	// answers a ping.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	silent, _, err := websocket.Dial(ctx, e.wsURL(token(t, "silent"), ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.CloseNow()
	waitUntil(t, 10*time.Second, "both connections to register", func() bool {
		return e.metric("pgpush_connections") == 2
	})

	waitUntil(t, 30*time.Second, "the silent peer to be dropped", func() bool {
		return e.metric("pgpush_connections") == 1
	})
	waitUntil(t, 30*time.Second, "pings to the live client", func() bool { return pings.Load() >= 5 })
	live.send(map[string]any{"type": "ping"})
	live.next("pong")
}
