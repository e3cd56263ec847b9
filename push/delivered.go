package push

import "slices"

// delivered is what one connection's writer has written: for each row, the
// version (changed_xid) of the last frame it wrote for it, or that its last
// frame was a deletion; and the unread count of the last frame that carried
// one. It is the single rule by which frames are skipped: a snapshot, a
// replay from the table and the live stream all pass their frames through
// redundant, and a frame is dropped only when writing it would change
// nothing the client holds by the end of its batch. It is owned by the
// connection's writer and not safe for concurrent use.
//
// Why the last frame per row, not the set of every (id, changed_xid) ever
// written: frames do not reach a connection in the order their rows were
// read. A catch-up may write row 7 as of transaction B, and then a live
// frame read before B committed may write it as of transaction A; the live
// frame of B that follows must not be skipped, though (7, B) was written
// once. And why the unread count too: every frame carries the count read in
// the same snapshot as its row, so a frame that repeats a row's version may
// still bring a newer count, which the client must get — from that frame, or
// from a later one of the same batch (see redundant).
//
// The rows a ready frame listed are kept apart, in a slice of their own
// (see wroteRow), until a later frame of the row moves it to the map: every
// connection lists up to snapshotSize rows and most never get another frame,
// and a map of 20 rows is about twice the size of the slice, with more
// garbage from its growth (see README, "Performance").
//
// What it remembers is bounded. Past tracked rows it forgets the rows last
// written at a transaction below the watermark of the live frames it wrote
// (a replay starts at or above that watermark, so it cannot repeat them),
// and if that is not enough it forgets everything: a forgotten row's next
// frame is written again, a duplicate, never a loss.
type delivered struct {
	rows map[int64]uint64 // id → changed_xid of its last frame, or rowDeleted
	// listed is the rows a ready frame listed that no later frame wrote
	// (none is in rows).
	listed []listedRow
	// unread is the count of the last frame that carried one; hasUnread
	// is false until then.
	unread    int64
	hasUnread bool
	// floor is the cursor of the last live frame written.
	floor Cursor
	max   int
}

// listedRow is a row a ready frame listed, in version xid.
type listedRow struct {
	id  int64
	xid uint64
}

// rowDeleted marks a row whose last frame was "deleted"; no changed_xid
// takes this value (xid8 values are far below 2^63).
const rowDeleted = ^uint64(0)

// insertedVersion marks the version of a row's frame made from the row an
// INSERT statement's hint carried, as the statement wrote it: a later
// statement of the same transaction may have changed the row, and a frame
// read from the table then has the same changed_xid but other fields, so the
// two must not be taken for the same version. (Bit 62: xid8 values stay far
// below it, and rowDeleted has every bit set.)
const insertedVersion = 1 << 62

// trackedRows bounds how many rows one connection remembers.
const trackedRows = 4096

func newDelivered(max int) *delivered {
	return &delivered{max: max}
}

// redundant reports whether writing f would change nothing the client
// holds once its batch is written: f is a row or deletion frame for a row
// whose last frame written was the same version (or also a deletion), and
// either f's unread count is the one the client holds, or countFollows: a
// later frame of the same batch carries a count (see lastCounted), which
// replaces f's before the batch ends. Frames of other kinds are never
// redundant.
//
// Why a later frame's count may replace f's: a batch is a replay page,
// read in one snapshot, or live frames in the order their transactions
// committed, so a later frame's count is at least as new. The last frame
// of a batch that carries a count is offered with countFollows false, and
// so is written whenever its count is not the client's: the client ends
// each batch with its last count.
func (d *delivered) redundant(f *frame, countFollows bool) bool {
	if f.rowID == 0 || !d.hasUnread || (f.unread != d.unread && !countFollows) {
		return false
	}
	if v, ok := d.rows[f.rowID]; ok {
		return v == f.version()
	}
	for _, r := range d.listed {
		if r.id == f.rowID {
			return r.xid == f.version()
		}
	}
	return false
}

// lastCounted returns the index of the last frame of a batch that carries
// an unread count, or -1: a frame before it is offered to redundant with
// countFollows.
func lastCounted(frames []frame) int {
	for i := len(frames) - 1; i >= 0; i-- {
		if frames[i].hasUnread {
			return i
		}
	}
	return -1
}

// wrote records that f was written.
func (d *delivered) wrote(f *frame) {
	if f.hasUnread {
		d.unread, d.hasUnread = f.unread, true
	}
	if !f.at.IsZero() && f.cur > d.floor {
		d.floor = f.cur
	}
	if f.rowID == 0 {
		return
	}
	if d.rows == nil {
		d.rows = make(map[int64]uint64)
	}
	if _, ok := d.rows[f.rowID]; !ok {
		d.unlist(f.rowID)
		if len(d.rows)+len(d.listed) >= d.max {
			d.forget()
		}
	}
	d.rows[f.rowID] = f.version()
}

// wroteRow records a row that a ready frame listed, in version xid.
func (d *delivered) wroteRow(id int64, xid uint64) {
	if _, ok := d.rows[id]; ok || len(d.rows)+len(d.listed) >= d.max {
		d.wrote(&frame{rowID: id, xid: xid})
		return
	}
	d.unlist(id)
	if d.listed == nil {
		d.listed = make([]listedRow, 0, snapshotSize)
	}
	d.listed = append(d.listed, listedRow{id, xid})
}

// unlist removes row id from listed.
func (d *delivered) unlist(id int64) {
	for i, r := range d.listed {
		if r.id == id {
			last := len(d.listed) - 1
			d.listed[i] = d.listed[last]
			d.listed = d.listed[:last]
			return
		}
	}
}

// forget makes room: first the rows last written below the floor, then, if
// that freed less than a quarter, every row.
func (d *delivered) forget() {
	for id, v := range d.rows {
		if v != rowDeleted && v&^insertedVersion < uint64(d.floor) {
			delete(d.rows, id)
		}
	}
	d.listed = slices.DeleteFunc(d.listed, func(r listedRow) bool { return r.xid < uint64(d.floor) })
	if len(d.rows)+len(d.listed) > d.max*3/4 {
		clear(d.rows)
		d.listed = d.listed[:0]
	}
}
