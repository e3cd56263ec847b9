package push

import (
	"fmt"
	"testing"
	"time"
)

// testTime marks a frame as live (see frame.at).
var testTime = time.Unix(1, 0)

// step is a frame a test offers the writer, and whether it must be written.
type step struct {
	name  string
	f     frame
	write bool
}

func rowF(id int64, xid uint64, unread int64) frame {
	f := frame{b: []byte("row"), rowID: id, xid: xid}
	f.setUnread(unread)
	return f
}

func liveF(id int64, xid uint64, unread int64, cur Cursor) frame {
	f := rowF(id, xid, unread)
	f.cur = cur
	f.at = testTime
	return f
}

func delF(id int64, unread int64) frame {
	return deletedRowFrame(id, unread, 1, testTime)
}

// offer passes steps through d the way writeFrames does and checks each
// verdict.
func offer(t *testing.T, d *delivered, steps []step) {
	t.Helper()
	for i, s := range steps {
		f := s.f
		written := !d.redundant(&f, false)
		if written {
			d.wrote(&f)
		}
		if written != s.write {
			t.Errorf("step %d (%s): written = %v, want %v", i, s.name, written, s.write)
		}
	}
}

func TestDeliveredMultiStatementTransaction(t *testing.T) {
	// One transaction (xid 100) updates rows 10 and 70 in one statement and
	// rows 11..69 in a second one, which reaches the connection as a bulk
	// hint: the live frames of 10 and 70 come first, then a catch-up
	// replays all 61 rows of xid 100. Rows between 10 and 70 must not be
	// taken as sent (the bug of the old live id range).
	d := newDelivered(trackedRows)
	steps := []step{
		{"live 10", liveF(10, 100, 61, 100), true},
		{"live 70", liveF(70, 100, 61, 100), true},
	}
	for id := int64(10); id <= 70; id++ {
		steps = append(steps, step{fmt.Sprintf("replay %d", id), rowF(id, 100, 61), id != 10 && id != 70})
	}
	offer(t, d, steps)
}

func TestDeliveredBulkHintSplitAcrossBatches(t *testing.T) {
	// A bulk statement's catch-up is interrupted (a database failure) and
	// starts over; a second catch-up of the same rows writes nothing new,
	// and a live frame of one of them with a newer version is written.
	d := newDelivered(trackedRows)
	var steps []step
	for id := int64(1); id <= 40; id++ {
		steps = append(steps, step{fmt.Sprintf("first %d", id), rowF(id, 7, 40), true})
	}
	for id := int64(1); id <= 40; id++ {
		steps = append(steps, step{fmt.Sprintf("again %d", id), rowF(id, 7, 40), false})
	}
	steps = append(steps, step{"newer 5", liveF(5, 9, 39, 9), true})
	offer(t, d, steps)
}

func TestDeliveredSnapshotEcho(t *testing.T) {
	// A row committed between registration and the snapshot is in the
	// ready frame and comes again live.
	d := newDelivered(trackedRows)
	d.wroteRow(3, 50)
	d.wroteRow(2, 40)
	ready := frame{b: []byte("ready")}
	ready.setUnread(2)
	d.wrote(&ready)
	offer(t, d, []step{
		{"echo of 3", liveF(3, 50, 2, 50), false},
		// Row 2 in the version the snapshot had, but read after row 4
		// was inserted: the frame brings the client a newer count.
		{"echo of 2 with a newer count", liveF(2, 40, 3, 60), true},
		{"row 4, new", liveF(4, 60, 3, 60), true},
		{"echo of 3 again", liveF(3, 50, 3, 60), false},
	})
}

func TestDeliveredListedRowsFollowTheirLastFrame(t *testing.T) {
	// The rows of a ready frame are kept apart from those of later frames
	// (see delivered.listed); a later frame of a listed row takes its
	// place, so the listed version no longer counts.
	d := newDelivered(trackedRows)
	d.wroteRow(3, 50)
	d.wroteRow(2, 40)
	ready := frame{b: []byte("ready")}
	ready.setUnread(2)
	d.wrote(&ready)
	offer(t, d, []step{
		{"3 updated", liveF(3, 70, 2, 70), true},
		{"3 as listed, read before the update", liveF(3, 50, 2, 70), true},
		{"3 as listed again", liveF(3, 50, 2, 70), false},
		{"2 deleted", delF(2, 1), true},
		{"2 as listed", rowF(2, 40, 1), true},
	})
	if len(d.listed) != 0 {
		t.Fatalf("%d rows still listed, want 0", len(d.listed))
	}

	// Forgetting treats listed rows like the others.
	d = newDelivered(4)
	d.wroteRow(1, 10)
	d.wroteRow(2, 30)
	for id := int64(3); id <= 5; id++ {
		f := liveF(id, 30, 0, 20)
		d.wrote(&f)
	}
	if len(d.rows)+len(d.listed) > 4 {
		t.Fatalf("%d rows tracked, at most 4", len(d.rows)+len(d.listed))
	}
	for _, s := range []struct {
		id        int64
		xid       uint64
		forgotten bool
	}{{1, 10, true}, {2, 30, false}} {
		f := rowF(s.id, s.xid, 0)
		if got := d.redundant(&f, false); got == s.forgotten {
			t.Errorf("listed row %d@%d: redundant = %v, want %v", s.id, s.xid, got, !got)
		}
	}
}

func TestDeliveredReplayOverlappingLiveFrames(t *testing.T) {
	// A catch-up reads row 7 as of transaction B (xid 20); a live frame
	// read before B committed then writes it as of A (xid 30, which
	// committed first); B's own live frame must follow, though (7, 20) was
	// written once.
	d := newDelivered(trackedRows)
	offer(t, d, []step{
		{"replay 7@B", rowF(7, 20, 1), true},
		{"replay 8@B", rowF(8, 20, 1), true},
		{"live 7@A (read earlier)", liveF(7, 30, 2, 25), true},
		{"live 7@B", liveF(7, 20, 1, 31), true},
		{"live 8@B", liveF(8, 20, 1, 31), false},
	})
}

func TestDeliveredDeletions(t *testing.T) {
	d := newDelivered(trackedRows)
	offer(t, d, []step{
		{"row 5", rowF(5, 10, 1), true},
		{"live deleted 5", delF(5, 0), true},
		{"replayed deleted 5", delF(5, 0), false},
		{"deleted 5, another count", delF(5, 1), true},
		// Moved back to this user: a row frame after a deletion.
		{"row 5 again", rowF(5, 12, 1), true},
		{"deleted 6, never held", delF(6, 1), true},
	})
}

func TestDeliveredOtherFramesAreNeverRedundant(t *testing.T) {
	d := newDelivered(trackedRows)
	pong := frame{b: []byte(`{"type":"pong"}`)}
	offer(t, d, []step{{"pong", pong, true}, {"pong again", pong, true}})
	// A frame before any count is known is written.
	f := frame{b: []byte("row"), rowID: 1, xid: 1}
	if d.redundant(&f, false) || d.redundant(&f, true) {
		t.Fatal("a row frame without a known count was redundant")
	}
}

func TestDeliveredWhenFullErrsTowardsDuplicates(t *testing.T) {
	d := newDelivered(8)
	// Rows 1..4 at xid 10, then live frames of xid 25 at cursor 20 for
	// rows 5..8: the floor is 20, then 21, so rows 1..4 can go first.
	var steps []step
	for id := int64(1); id <= 4; id++ {
		steps = append(steps, step{fmt.Sprintf("row %d", id), rowF(id, 10, 0), true})
	}
	for id := int64(5); id <= 8; id++ {
		steps = append(steps, step{fmt.Sprintf("live %d", id), liveF(id, 25, 0, 20), true})
	}
	steps = append(steps,
		step{"row 9 makes room", liveF(9, 21, 0, 21), true},
		step{"row 1, forgotten: written again", rowF(1, 10, 0), true},
		step{"row 6, still known", liveF(6, 25, 0, 21), false},
	)
	offer(t, d, steps)
	if len(d.rows) > 8 {
		t.Fatalf("%d rows tracked, at most 8", len(d.rows))
	}

	// When nothing is below the floor, everything goes.
	d = newDelivered(4)
	for id := int64(1); id <= 4; id++ {
		f := liveF(id, 30, 0, 30)
		d.wrote(&f)
	}
	f := liveF(5, 30, 0, 30)
	d.wrote(&f)
	if len(d.rows) != 1 {
		t.Fatalf("%d rows tracked after a full reset, want 1", len(d.rows))
	}
	again := liveF(2, 30, 0, 30)
	if d.redundant(&again, false) {
		t.Fatal("a forgotten row's frame was skipped")
	}
}

func TestDeliveredInsertedRowIsNotTheTablesVersion(t *testing.T) {
	// Transaction 100 inserts row 5 (its hint carries the row as inserted)
	// and a later statement of it changes the row's title: the frame read
	// from the table has the same changed_xid and the same count, but is
	// another version of the row.
	d := newDelivered(trackedRows)
	offer(t, d, []step{
		{"inserted, from the hint", liveF(5, 100|insertedVersion, 1, 100), true},
		{"its final fields, from the table", liveF(5, 100, 1, 100), true},
		{"the same again", liveF(5, 100, 1, 100), false},
		// A live frame queued while a replay read the row: written, and
		// the frame of the later statement's hint, which follows it,
		// is not skipped.
		{"the inserted version after a replay", liveF(5, 100|insertedVersion, 1, 100), true},
		{"the later statement's frame", liveF(5, 100, 1, 100), true},
	})
}

// offerBatch passes one batch through d the way writeFrames does, checks
// each verdict, and that the client ends the batch with the count of its
// last frame that carries one.
func offerBatch(t *testing.T, d *delivered, name string, steps []step) {
	t.Helper()
	frames := make([]frame, len(steps))
	for i, s := range steps {
		frames[i] = s.f
	}
	last := lastCounted(frames)
	for i, s := range steps {
		written := !d.redundant(&frames[i], i < last)
		if written {
			d.wrote(&frames[i])
		}
		if written != s.write {
			t.Errorf("%s, frame %d (%s): written = %v, want %v", name, i, s.name, written, s.write)
		}
	}
	if last >= 0 && d.unread != frames[last].unread {
		t.Errorf("%s: the client ends with count %d, the batch's last is %d", name, d.unread, frames[last].unread)
	}
}

func TestDeliveredABatchBringsItsCountOnce(t *testing.T) {
	// A second catch-up reads rows the client holds in the same versions,
	// after a new row raised the user's count: one frame of the page
	// brings the count, the last.
	d := newDelivered(trackedRows)
	offerBatch(t, d, "first page", []step{
		{"1", rowF(1, 10, 3), true}, {"2", rowF(2, 10, 3), true}, {"3", rowF(3, 10, 3), true},
	})
	offerBatch(t, d, "the page again, a newer count", []step{
		{"1", rowF(1, 10, 4), false}, {"2", rowF(2, 10, 4), false}, {"3, the last", rowF(3, 10, 4), true},
	})
	offerBatch(t, d, "the page again", []step{
		{"1", rowF(1, 10, 4), false}, {"2", rowF(2, 10, 4), false}, {"3", rowF(3, 10, 4), false},
	})
	offerBatch(t, d, "a held row and a new one", []step{
		{"1, held", rowF(1, 10, 5), false}, {"9, new", rowF(9, 12, 5), true},
	})
	// Live frames in commit order: a read marked then unmarked, say. The
	// client ends with the last count, which it holds already.
	offerBatch(t, d, "live, the count back where it was", []step{
		{"1 held, count 6", liveF(1, 10, 6, 20), false}, {"2 held, count 5", liveF(2, 10, 5, 21), false},
	})
	// A frame that changes the row is written whatever follows it.
	offerBatch(t, d, "a new version before a held row", []step{
		{"2 updated", liveF(2, 14, 4, 22), true}, {"3 held, count 4", liveF(3, 10, 4, 22), false},
	})
	// Frames without a count after a held row do not bring it one.
	pong := frame{b: []byte(`{"type":"pong"}`)}
	offerBatch(t, d, "a held row, then a pong", []step{
		{"1 held, count 7", rowF(1, 10, 7), true}, {"pong", pong, true},
	})
}
