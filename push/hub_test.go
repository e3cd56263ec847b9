package push

import (
	"testing"

	"github.com/coder/websocket"
)

// A conn starts a writer only when it has something to do and none runs,
// and never once retired.
func TestConnStartsItsWriterOnDemand(t *testing.T) {
	starts := 0
	c := newConn("alice", 8, 1<<20, func() { starts++ })
	var p pending

	// The session's initial sync is the first writer: a frame queued
	// meanwhile waits for it.
	c.enqueue(frame{b: []byte("a")})
	if starts != 0 || !c.take(&p) || len(p.frames) != 1 {
		t.Fatalf("during the sync: %d starts, frames %d", starts, len(p.frames))
	}
	if c.take(&p) {
		t.Fatal("take reported work on an empty queue")
	}
	c.enqueue(frame{b: []byte("b")})
	c.enqueue(frame{b: []byte("c")})
	if starts != 1 {
		t.Fatalf("%d starts after two frames, want 1 (the first starts the writer)", starts)
	}
	if !c.take(&p) || len(p.frames) != 2 || c.take(&p) {
		t.Fatalf("the writer took %d frames", len(p.frames))
	}

	c.markBehind(1)
	if starts != 2 || !c.take(&p) || !p.replay || c.take(&p) {
		t.Fatalf("behind: %d starts, replay %v", starts, p.replay)
	}

	// A writer still running when the connection ends finishes; none
	// starts after.
	c.enqueue(frame{b: []byte("d")})
	c.retire()
	if !c.take(&p) || c.take(&p) {
		t.Fatal("the running writer lost its frame")
	}
	c.enqueue(frame{b: []byte("e")})
	c.close(websocket.StatusGoingAway, "bye")
	if starts != 3 {
		t.Fatalf("%d starts, want 3: none after retire", starts)
	}
}
