package push

import (
	"context"
	"slices"
	"time"

	"github.com/pgpush/pgpush/db"
)

// item is what the listener hands to the dispatcher: the hints of one
// notification, or (resync) a marker that notifications may have been lost
// before it.
type item struct {
	h      hint
	at     time.Time
	resync bool
}

// maxBatchItems bounds how many notifications one fetch covers.
const maxBatchItems = 256

// dispatcher turns hints into frames. It runs on one goroutine, so frames
// reach each connection in the order their transactions committed, and it
// owns the resume watermark.
//
// The watermark W is the largest xmin seen in any processed notification.
// Claim: every transaction below W that wrote notifications has had its
// notification processed. Proof: a notification N carries xmin, the oldest
// transaction still running when N's transaction took its snapshot; every
// transaction below xmin had finished before that, so if it committed it did
// so before N's, and PostgreSQL delivers notifications in commit order, so
// its notification came before N. A frame made from N carries W as its
// cursor; a client holding that cursor has therefore been sent every change
// below W (live, or in its own snapshot or replay, which is read after the
// connection was registered), and a resume replays rows whose changed_xid is
// at or above W. A transaction that started before a later-numbered one but
// committed after it has an xid at or above every watermark taken while it
// ran, so it is replayed: "last id seen" would lose it.
type dispatcher struct {
	s  *Server
	in chan item

	w Cursor
}

func newDispatcher(s *Server) *dispatcher {
	return &dispatcher{s: s, in: make(chan item, 4096)}
}

func (d *dispatcher) run(ctx context.Context) {
	batch := make([]item, 0, maxBatchItems)
	for {
		select {
		case <-ctx.Done():
			return
		case it := <-d.in:
			batch = append(batch[:0], it)
		}
	drain:
		for len(batch) < maxBatchItems {
			select {
			case it := <-d.in:
				batch = append(batch, it)
			default:
				break drain
			}
		}
		d.process(ctx, batch)
		clear(batch)
	}
}

// process handles a batch in order, splitting it at resync markers.
func (d *dispatcher) process(ctx context.Context, batch []item) {
	start := 0
	for i, it := range batch {
		if !it.resync {
			continue
		}
		d.retry(ctx, "deliver", func() error { return d.deliver(ctx, batch[start:i]) })
		d.retry(ctx, "catch up", func() error { return d.catchUp(ctx) })
		start = i + 1
	}
	d.retry(ctx, "deliver", func() error { return d.deliver(ctx, batch[start:]) })
}

// retry runs f until it succeeds or ctx ends. The watermark only advances
// when f succeeds, so nothing is skipped while the database is away; the
// listener meanwhile drops notifications and asks for a catch-up.
func (d *dispatcher) retry(ctx context.Context, what string, f func() error) {
	delay := 50 * time.Millisecond
	failing := false
	for {
		err := f()
		if err == nil || ctx.Err() != nil {
			if failing && err == nil {
				d.s.log.Info("dispatcher recovered", "step", what)
			}
			return
		}
		if !failing {
			d.s.log.Warn("dispatcher cannot reach the database; retrying", "step", what, "err", err)
			failing = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, 2*time.Second)
	}
}

// deliver fetches the rows behind items (one query for all of them, only for
// users connected here), then routes a frame per row in notification order.
func (d *dispatcher) deliver(ctx context.Context, items []item) error {
	if len(items) == 0 {
		return nil
	}
	hub := d.s.hub
	var ids []int64
	users := make(map[string]int64) // connected user -> unread
	absent := make(map[string]struct{})
	for _, it := range items {
		for _, r := range it.h.Rows {
			if _, seen := users[r.UserID]; !seen {
				if _, skip := absent[r.UserID]; skip {
					continue
				}
				if !hub.connected(r.UserID) {
					absent[r.UserID] = struct{}{}
					continue
				}
				users[r.UserID] = 0
			}
			if it.h.Op != "d" {
				ids = append(ids, r.ID)
			}
		}
	}
	rows := map[int64]*db.Notification{}
	if len(users) > 0 {
		userIDs := make([]string, 0, len(users))
		for u := range users {
			userIDs = append(userIDs, u)
		}
		qctx, cancel := context.WithTimeout(ctx, d.s.cfg.StatementTimeout)
		defer cancel()
		started := time.Now()
		if len(ids) > 0 {
			slices.Sort(ids)
			ids = slices.Compact(ids)
			fetched, err := d.s.q.NotificationsByIDs(qctx, db.NotificationsByIDsParams{Ids: ids, UserIds: userIDs})
			if err != nil {
				return err
			}
			for i := range fetched {
				rows[fetched[i].Notification.ID] = &fetched[i].Notification
			}
		}
		counts, err := d.s.q.NotificationUnreadCounts(qctx, userIDs)
		if err != nil {
			return err
		}
		for _, c := range counts {
			users[c.UserID] = c.Unread
		}
		d.s.metrics.fetch.Observe(time.Since(started).Seconds())
	}

	for _, it := range items {
		d.w = max(d.w, Cursor(it.h.Xmin))
		for _, r := range it.h.Rows {
			unread, ok := users[r.UserID]
			if !ok {
				continue
			}
			var b []byte
			switch it.h.Op {
			case "d":
				b = deletedFrame(r.ID, unread, d.w)
			case "c", "u":
				n := rows[r.ID]
				if n == nil || n.UserID != r.UserID {
					continue // deleted or moved since; its own hint follows
				}
				typ := "created"
				if it.h.Op == "u" {
					typ = "updated"
				}
				b = rowFrame(typ, n, unread, d.w)
			}
			hub.deliver(r.UserID, frame{b: b, at: it.at, cur: d.w, deleted: it.h.Op == "d"})
		}
	}
	return nil
}

// catchUp runs after notifications may have been lost (the listener
// reconnected, or its queue overflowed). Every connection is marked behind
// from the watermark, so each replays its own user's rows from the table, in
// pages, at its own pace; then the watermark advances to an xmin read now,
// below which every transaction has committed and is visible to those
// replays.
func (d *dispatcher) catchUp(ctx context.Context) error {
	s := d.s
	qctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	defer cancel()
	xmin, err := s.q.NotificationWatermark(qctx)
	if err != nil {
		return err
	}
	// Before the first connect there is no watermark: connections replay
	// from their own ready cursors (markBehind with 0).
	s.hub.markAllBehind(d.w)
	d.w = max(d.w, Cursor(xmin))
	return nil
}
