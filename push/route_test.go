package push

import "testing"

// A user whose connections replay a batch from the table (a burst) gets no
// live frame of that batch, not even a deletion: its writer may be replaying
// already, and a frame queued now would be written after the replay, with an
// older count than the replay's (TestChecker seed 908622082 ended with a
// client's count at 2 where the table had 35). The batch's deltas still
// count, and a user outside the burst gets its frames.
func TestRouteLeavesABurstToTheReplay(t *testing.T) {
	h := newHub(4, 100)
	alice := newConn("alice", 64, 1<<20, func() {})
	bob := newConn("bob", 64, 1<<20, func() {})
	for _, c := range []*conn{alice, bob} {
		if err := h.add(c); err != nil {
			t.Fatal(err)
		}
		var p pending
		c.take(&p) // the session's initial sync is over; its writer stops
		c.take(&p)
	}
	seen := &pgSnapshot{xmin: 5, xmax: 5}
	d := &dispatcher{s: &Server{hub: h}, counts: unreadCounts{
		"alice": {n: 35, seen: seen},
		"bob":   {n: 3, seen: seen},
	}}
	users := map[string]struct{}{"alice": {}, "bob": {}}
	burst := map[string]bool{"alice": true}
	it := &item{h: hint{Op: "d", Xid: 10, Xmin: 10, signed: true, Rows: []hintRow{
		{ID: 1146, UserID: "alice", Delta: -1},
		{ID: 7, UserID: "bob", Delta: -1},
	}}}
	d.route(it, it.h.Rows, users, burst, nil)

	var p pending
	if alice.take(&p) {
		t.Errorf("alice, in the burst, got %d frames, want none", len(p.frames))
	}
	if !bob.take(&p) || len(p.frames) != 1 || p.frames[0].rowID != 7 || !p.frames[0].deleted || p.frames[0].unread != 2 {
		t.Errorf("bob got %+v, want the deletion of row 7 with unread 2", p.frames)
	}
	if n := d.counts["alice"].n; n != 34 {
		t.Errorf("alice's count %d, want 34: the batch's deltas still count", n)
	}
}
