package push

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/coder/websocket"

	"github.com/pgpush/pgpush/db"
)

// The writer side of a session: it drains the connection's queue (see conn),
// catches the connection up from the table when it fell behind, and writes
// every frame through one filter, delivered, so that what the client holds
// is known exactly.

// replayPage is how many rows one replay query reads, and deletedPage how
// many deleted ids.
const (
	replayPage  = 128
	deletedPage = 1024
)

// maxReplayDeleted caps the deletions one replay sends; past it the client
// is better served by a fresh snapshot (see errTooFarBehind).
const maxReplayDeleted = 64 * deletedPage

// errTooFarBehind ends a replay that cannot be exact or would be too long:
// the deletions it needs were pruned, or there are too many. The client is
// closed with 1013 and its resume gets a fresh snapshot.
var errTooFarBehind = errors.New("too far behind to replay")

// errDatabase marks a failed query, as opposed to a failed write.
var errDatabase = errors.New("database")

// startWriter is the conn's startWriter: it runs with the conn's lock held.
func (ss *session) startWriter() {
	ss.writers.Add(1)
	go ss.drain()
}

// drain writes what the connection has to send until it has nothing more.
// It returns early, leaving no writer to start again, when the connection
// must end.
func (ss *session) drain() {
	defer ss.writers.Done()
	ctx := ss.ctx
	var p pending
	for ss.c.take(&p) {
		if err := ss.writeFrames(ctx, p.frames); err != nil {
			ss.writeFailed(err)
			return
		}
		clear(p.frames)
		if p.closeCode != 0 {
			ss.ws.Close(p.closeCode, p.closeReason)
			return
		}
		if p.replay {
			if err := ss.catchUp(ctx, p.since); err != nil {
				ss.writeFailed(err)
				return
			}
		}
	}
}

// writeFailed ends a connection whose write or catch-up failed. A write that
// timed out means a client that stopped reading, and a catch-up that cannot
// be exact a client that was away too long: either is told (if the close
// frame still gets through) to come back with its cursor.
func (ss *session) writeFailed(err error) {
	switch {
	case errors.Is(err, errTooFarBehind):
		ss.s.metrics.farClosed.Inc()
		ss.ws.Close(websocket.StatusTryAgainLater, "too far behind; reconnect with your cursor")
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
		ss.s.metrics.slowClosed.Inc()
		ss.ws.Close(websocket.StatusTryAgainLater, "too far behind; reconnect with your cursor")
	}
	ss.ws.CloseNow()
}

// catchUp replays what the user's client missed from since, for a connection
// that fell behind or whose notifications were lost. A database failure does
// not end the connection: the replay starts over after a pause (what was
// written already is skipped by delivered), so sockets outlive a database
// restart.
func (ss *session) catchUp(ctx context.Context, since Cursor) error {
	delay := 100 * time.Millisecond
	for {
		_, err := ss.replay(ctx, since, 0)
		if err == nil {
			// The connection's cursor stays where it was (see
			// conn.lastCur).
			ss.s.metrics.catchUps.Inc()
			return nil
		}
		if !errors.Is(err, errDatabase) || ctx.Err() != nil {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// replay writes what changed for the user at or above since: a "deleted"
// frame for every row deleted (or moved away) by such a transaction that is
// not the user's again, then, in (changed_xid, id) order, every row such a
// transaction wrote, as "created" (inserted at or above since) or
// "updated". Every frame carries since, so a client cut off halfway resumes
// from the same place, and the unread count read with its row. Frames the
// client holds already are skipped (see delivered). maxFrames (0: none)
// bounds the frames, past which it gives up with errTooFarBehind.
//
// It returns the unread count of its latest query's snapshot.
func (ss *session) replay(ctx context.Context, since Cursor, maxFrames int) (unread int64, err error) {
	s := ss.s
	written := 0
	var afterID int64
	for first := true; ; first = false {
		rows, err := pageOf(ctx, s, func(ctx context.Context) ([]db.NotificationDeletedSinceRow, error) {
			return s.q.NotificationDeletedSince(ctx, db.NotificationDeletedSinceParams{
				UserID: ss.userID, Since: int64(since), AfterID: afterID, RowLimit: deletedPage,
			})
		})
		if err != nil {
			return 0, fmt.Errorf("replay deletions: %w", err)
		}
		if len(rows) == 0 {
			s.releasePage()
			return 0, fmt.Errorf("replay deletions: %w: no row", errDatabase)
		}
		if first && Cursor(rows[0].Horizon) > since {
			s.releasePage()
			return 0, fmt.Errorf("%w: deletions since the cursor were pruned", errTooFarBehind)
		}
		unread = rows[0].Unread
		frames := make([]frame, 0, len(rows))
		for _, r := range rows {
			if r.Found {
				frames = append(frames, deletedRowFrame(r.ID, r.Unread, since, time.Time{}))
				afterID = r.ID
			}
		}
		written += len(frames)
		if err := ss.writeFrames(ctx, frames); err != nil {
			s.releasePage()
			return 0, err
		}
		s.releasePage()
		if len(frames) < deletedPage {
			break
		}
		if written > maxReplayDeleted || (maxFrames > 0 && written > maxFrames) {
			return 0, fmt.Errorf("%w: more than %d deletions", errTooFarBehind, written)
		}
	}

	var afterXid int64
	afterID = 0
	for {
		rows, err := pageOf(ctx, s, func(ctx context.Context) ([]db.NotificationReplayRow, error) {
			return s.q.NotificationReplay(ctx, db.NotificationReplayParams{
				Since: int64(since), UserID: ss.userID, AfterXid: afterXid, AfterID: afterID,
				RowLimit: replayPage,
			})
		})
		if err != nil {
			return 0, fmt.Errorf("replay: %w", err)
		}
		frames := make([]frame, 0, len(rows))
		for i := range rows {
			n := &rows[i].Notification
			typ := "updated"
			if rows[i].Created {
				typ = "created"
			}
			f := frame{b: rowFrame(typ, n, rows[i].Unread, since), rowID: n.ID, xid: n.ChangedXid.Uint64}
			f.setUnread(rows[i].Unread)
			frames = append(frames, f)
			unread = rows[i].Unread
		}
		written += len(frames)
		err = ss.writeFrames(ctx, frames)
		s.releasePage()
		if err != nil {
			return 0, err
		}
		if len(rows) < replayPage {
			return unread, nil // that was the last page
		}
		if maxFrames > 0 && written > maxFrames {
			return 0, fmt.Errorf("%w: more than %d changes", errTooFarBehind, written)
		}
		last := rows[len(rows)-1].Notification
		afterXid, afterID = int64(last.ChangedXid.Uint64), last.ID
	}
}

// pageOf runs one replay query under a page token of Server.pages, which the
// caller gives back with releasePage once it has written the page (not on
// error: pageOf gives it back then).
func pageOf[T any](ctx context.Context, s *Server, query func(context.Context) ([]T, error)) ([]T, error) {
	if err := s.takePage(ctx); err != nil {
		return nil, err
	}
	qctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	rows, err := query(qctx)
	cancel()
	if err != nil {
		s.releasePage()
		return nil, fmt.Errorf("%w: %w", errDatabase, err)
	}
	return rows, nil
}

// writeFrames writes frames in order, but for those the client holds
// already (see delivered); several go out in as few system calls as the
// socket allows.
func (ss *session) writeFrames(ctx context.Context, frames []frame) (err error) {
	if len(frames) == 0 {
		return nil
	}
	// The frames gather in memory; whatever reaches the network is bounded
	// by the socket's write timeout, so ws.Write needs none.
	ctx = context.WithoutCancel(ctx)
	ss.sock.cork()
	defer func() {
		if uerr := ss.sock.uncork(); err == nil {
			err = uerr
		}
	}()
	last := lastCounted(frames)
	for i := range frames {
		f := &frames[i]
		if ss.sent.redundant(f, i < last) {
			ss.s.metrics.skipped.Inc()
			continue
		}
		if err = ss.ws.Write(ctx, websocket.MessageText, f.b); err != nil {
			return err
		}
		ss.sent.wrote(f)
		if f.rowID != 0 {
			ss.s.metrics.delivered.Inc()
		}
		if !f.at.IsZero() {
			ss.s.metrics.latency.Observe(time.Since(f.at).Seconds())
		}
	}
	return nil
}
