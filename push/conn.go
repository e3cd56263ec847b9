package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/pgpush/pgpush/db"
)

// Close codes of SPEC §4 that the library does not name.
const (
	statusTokenExpired websocket.StatusCode = 4001
)

// snapshotSize is how many of the newest rows a fresh connection's ready frame
// carries.
const snapshotSize = 20

// replayPage is how many rows one replay query reads.
const replayPage = 128

// session is one WebSocket connection's state.
//
// An idle connection costs one goroutine, the reader, blocked in a read. The
// writer (see conn) runs only while there is something to send; the first
// one is the HTTP handler itself, which writes the initial sync and then
// returns, so that net/http lets go of the request. Pings and the token's
// deadline are timers, not goroutines.
type session struct {
	s       *Server
	c       *conn
	ws      *websocket.Conn
	sock    *socket // ws's connection (see hijacker)
	userID  string
	limiter *rate.Limiter

	// ctx ends when the connection does; cancel ends it (the reader then
	// closes the socket and cleans up).
	ctx    context.Context
	cancel context.CancelFunc
	// writers counts the running writer (at most one) for the clean-up.
	writers sync.WaitGroup

	// sent remembers the rows (and their changed_xid) of the last row
	// frames written, so a catch-up from the table does not send a row again
	// in a state the client already has (writer only; nil until used).
	sent *sentLog

	// replayed holds the rows a catch-up just wrote from the table (id →
	// changed_xid) and the transactions they came from, so that live frames
	// of those very transactions, still on their way, are not sent again
	// (writer only; nil when not filtering).
	replayed     map[int64]uint64
	replayedXids map[uint64]struct{}
	// liveXid, liveMin and liveMax describe the live frames written since
	// the last catch-up from the newest transaction: a transaction's rows
	// reach a connection in id order and without gaps until it falls
	// behind, so a catch-up skips that range (writer only).
	liveXid          uint64
	liveMin, liveMax int64

	// snapshotIDs are the ids a fresh connection's ready frame listed, kept
	// (by the writer) until snapshotUntil to drop their echoes.
	snapshotIDs   []int64
	snapshotUntil time.Time

	pingTimer *time.Timer

	// deadline is when the connection closes with 4001 (zero: never); a
	// fresh token moves it (see expire).
	expMu     sync.Mutex
	deadline  time.Time
	expiryTmr *time.Timer
}

// newSession returns the session of a connection of userID; register its
// conn with the hub before the upgrade, then run it.
func newSession(s *Server, userID string) *session {
	ss := &session{
		s: s, userID: userID,
		limiter: rate.NewLimiter(rate.Limit(s.cfg.MessageRate), s.cfg.MessageBurst),
	}
	ss.c = newConn(userID, s.cfg.QueueMessages, s.cfg.QueueBytes, ss.startWriter)
	return ss
}

// run serves the accepted connection ws: it starts the reader, writes the
// initial sync and what queued meanwhile, and returns while the connection
// lives on. cursor is nil for a connection without ?cursor=. At exp (zero:
// never) the connection closes with 4001 unless the client sent a fresh
// token. The session removes c from the hub and calls done once the
// connection has ended.
func (ss *session) run(ws *websocket.Conn, cursor *Cursor, exp time.Time, done func()) {
	s := ss.s
	ss.ws = ws
	// The request's context ends with the handler; the session lives on
	// the server's.
	ss.ctx, ss.cancel = context.WithCancel(s.base)
	ss.pingTimer = time.AfterFunc(s.cfg.PingInterval, ss.ping)
	ss.setDeadline(exp)
	ss.writers.Add(1) // this goroutine, the first writer (see newConn)
	go func() {
		ss.readLoop(ss.ctx)
		ss.cancel()
		ss.ws.CloseNow()
		s.hub.remove(ss.c)
		ss.c.retire()
		ss.writers.Wait()
		ss.pingTimer.Stop()
		ss.setDeadline(time.Time{})
		done()
	}()

	if err := ss.sync(ss.ctx, cursor); err != nil {
		defer ss.writers.Done()
		if ss.ctx.Err() == nil {
			// During a database outage every reconnecting client fails
			// here; the listener already logged the outage once.
			level := slog.LevelWarn
			if !s.Ready() {
				level = slog.LevelDebug
			}
			s.log.Log(ss.ctx, level, "initial sync failed", "user_id", ss.userID, "err", err)
			ss.ws.Close(websocket.StatusInternalError, "could not read notifications; reconnect")
		}
		ss.ws.CloseNow()
		return
	}
	ss.drain()
}

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
		if ss.snapshotIDs != nil {
			p.frames = ss.dropSnapshotEchoes(p.frames)
		}
		if ss.replayed != nil {
			p.frames = ss.dropReplayEchoes(p.frames)
		}
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

// ping checks that the peer still answers; one that does not within the
// write timeout is dropped. It runs on its timer's goroutine.
func (ss *session) ping() {
	ctx, cancel := context.WithTimeout(ss.ctx, ss.s.cfg.WriteTimeout)
	err := ss.ws.Ping(ctx)
	cancel()
	if err != nil {
		ss.cancel() // dead peer (or the connection ended meanwhile)
		return
	}
	if ss.ctx.Err() == nil {
		ss.pingTimer.Reset(ss.s.cfg.PingInterval)
	}
}

// setDeadline sets (zero: clears) the time the connection closes with 4001.
func (ss *session) setDeadline(t time.Time) {
	ss.expMu.Lock()
	defer ss.expMu.Unlock()
	ss.deadline = t
	if ss.expiryTmr != nil {
		ss.expiryTmr.Stop()
		ss.expiryTmr = nil
	}
	if !t.IsZero() {
		ss.expiryTmr = time.AfterFunc(time.Until(t), ss.expire)
	}
}

// expire closes the connection with 4001 unless a fresh token moved the
// deadline after its timer fired.
func (ss *session) expire() {
	ss.expMu.Lock()
	due := !ss.deadline.IsZero() && !time.Now().Before(ss.deadline)
	ss.expMu.Unlock()
	if due {
		ss.c.close(statusTokenExpired, "token expired")
	}
}

// dropSnapshotEchoes removes the "created" of rows a fresh connection's
// ready frame already listed: the connection registered before it read its
// snapshot, so a row committed in between is in both. Such an echo comes
// from a notification sent before the snapshot was read, so it arrives soon
// after; the ids are kept for a few seconds, then let go.
func (ss *session) dropSnapshotEchoes(frames []frame) []frame {
	kept := frames[:0]
	for _, f := range frames {
		if i := slices.Index(ss.snapshotIDs, f.rowID); i >= 0 && f.created {
			ss.snapshotIDs = slices.Delete(ss.snapshotIDs, i, i+1)
			continue
		}
		kept = append(kept, f)
	}
	clear(frames[len(kept):])
	if len(ss.snapshotIDs) == 0 || time.Now().After(ss.snapshotUntil) {
		ss.snapshotIDs = nil
	}
	return kept
}

// maxReplayed bounds the rows a catch-up remembers to filter echoes; past it
// echoes are possible (a client treats them as replacements by id).
const maxReplayed = 20_000

func (ss *session) noteReplayed(id int64, xid uint64) {
	if ss.replayed == nil {
		ss.replayed = make(map[int64]uint64)
		ss.replayedXids = make(map[uint64]struct{})
	}
	if len(ss.replayed) < maxReplayed {
		ss.replayed[id] = xid
		ss.replayedXids[xid] = struct{}{}
	}
}

// alreadySent reports whether row id was written in the state of
// transaction xid: live just before the catch-up, or by a previous one.
func (ss *session) alreadySent(id int64, xid uint64) bool {
	if xid == ss.liveXid && id >= ss.liveMin && id <= ss.liveMax {
		return true
	}
	if x, ok := ss.replayed[id]; ok && x == xid {
		return true
	}
	return ss.sent.has(id, xid)
}

// dropReplayEchoes removes live frames of rows a catch-up already wrote in
// the same state. Frames reach a connection in commit order, so once a frame
// of a transaction the catch-up did not show arrives, no echo can follow and
// the filter ends.
func (ss *session) dropReplayEchoes(frames []frame) []frame {
	kept := frames[:0]
	for i, f := range frames {
		if f.rowID == 0 {
			kept = append(kept, f)
			continue
		}
		if _, ok := ss.replayedXids[f.xid]; !ok {
			ss.replayed, ss.replayedXids = nil, nil
			kept = append(kept, frames[i:]...)
			break
		}
		if ss.replayed[f.rowID] == f.xid {
			continue
		}
		kept = append(kept, f)
	}
	clear(frames[len(kept):])
	return kept
}

// sentLog is a ring of the last row frames a connection wrote.
type sentLog struct {
	rows [64]struct {
		id  int64
		xid uint64
	}
	next int
}

func (l *sentLog) add(id int64, xid uint64) {
	l.rows[l.next].id, l.rows[l.next].xid = id, xid
	l.next = (l.next + 1) % len(l.rows)
}

// has reports whether row id was written in the state of transaction xid.
func (l *sentLog) has(id int64, xid uint64) bool {
	if l == nil {
		return false
	}
	for _, r := range l.rows {
		if r.id == id && r.xid == xid {
			return true
		}
	}
	return false
}

// writeFailed ends a connection whose write failed. A write that timed out
// means a client that stopped reading: it is told (if the close frame still
// gets through) to come back with its cursor.
func (ss *session) writeFailed(err error) {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		ss.s.metrics.slowClosed.Inc()
		ss.ws.Close(websocket.StatusTryAgainLater, "too far behind; reconnect with your cursor")
	}
	ss.ws.CloseNow()
}

// errDatabase marks a failed query, as opposed to a failed write.
var errDatabase = errors.New("database")

// catchUp replays the user's rows written at or above since, for a
// connection that fell behind or whose notifications were lost. A database
// failure does not end the connection: the replay starts over after a pause
// (rows sent twice are harmless), so sockets outlive a database restart.
func (ss *session) catchUp(ctx context.Context, since Cursor) error {
	delay := 100 * time.Millisecond
	for {
		err := ss.catchUpOnce(ctx, since)
		if err == nil || !errors.Is(err, errDatabase) || ctx.Err() != nil {
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

func (ss *session) catchUpOnce(ctx context.Context, since Cursor) error {
	s := ss.s
	if err := s.takePage(ctx); err != nil {
		return err
	}
	qctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	rows, err := s.q.NotificationCatchUp(qctx, db.NotificationCatchUpParams{
		UserID: ss.userID, Since: int64(since), RowLimit: replayPage,
	})
	cancel()
	if err != nil {
		s.releasePage()
		return fmt.Errorf("catch up: %w: %w", errDatabase, err)
	}
	s.metrics.catchUps.Inc()
	if len(rows) == 0 {
		s.releasePage()
		return nil // nothing to send; the cursor stays where it is
	}
	first := make([]db.NotificationReplayRow, len(rows))
	for i := range rows {
		first[i] = db.NotificationReplayRow{Notification: rows[i].Notification, Created: rows[i].Created}
	}
	if err := ss.replay(ctx, since, rows[0].Unread, math.MaxInt64, true, first); err != nil {
		return err
	}
	// Every transaction below xmin had committed before the replay read the
	// table, so its rows were sent: a later catch-up can start there.
	ss.c.synced(Cursor(rows[0].Xmin))
	ss.liveXid = 0
	return nil
}

// writeFrames writes frames in order; several go out in as few system calls
// as the socket allows.
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
	for _, f := range frames {
		if err = ss.ws.Write(ctx, websocket.MessageText, f.b); err != nil {
			return err
		}
		if f.rowID != 0 && !f.at.IsZero() {
			if f.xid != ss.liveXid {
				ss.liveXid, ss.liveMin, ss.liveMax = f.xid, f.rowID, f.rowID
			} else {
				ss.liveMin, ss.liveMax = min(ss.liveMin, f.rowID), max(ss.liveMax, f.rowID)
			}
		}
		if f.rowID != 0 {
			if ss.sent == nil {
				ss.sent = new(sentLog)
			}
			ss.sent.add(f.rowID, f.xid)
		}
		if !f.at.IsZero() {
			ss.s.metrics.delivered.Inc()
			ss.s.metrics.latency.Observe(time.Since(f.at).Seconds())
		}
	}
	return nil
}

func (ss *session) write(ctx context.Context, b []byte) error {
	return ss.writeFrames(ctx, []frame{{b: b}})
}

// sync brings the client up to date before "ready": a snapshot of the newest
// rows for a fresh connection, or a replay of what it missed for a resume.
// The connection is already registered with the hub, so live events that
// arrive meanwhile wait in its queue and follow "ready"; an overlap with the
// replay is harmless because clients de-duplicate by id.
func (ss *session) sync(ctx context.Context, cursor *Cursor) error {
	s := ss.s
	qctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	defer cancel()
	state, err := s.q.NotificationSyncState(qctx, ss.userID)
	if err != nil {
		return fmt.Errorf("sync state: %w", err)
	}
	xmin := Cursor(state.Xmin)
	if cursor == nil {
		return ss.snapshot(ctx, state.Unread, xmin, false)
	}
	since := *cursor
	// A cursor from the future (another database, a restored backup, a
	// failover that lost transactions) cannot be trusted: start afresh.
	if uint64(since) > uint64(state.Xmax) {
		return ss.snapshot(ctx, state.Unread, xmin, true)
	}
	n, err := s.q.NotificationReplayCount(qctx, db.NotificationReplayCountParams{
		UserID: ss.userID, Since: int64(since), RowLimit: int32(s.cfg.ReplayLimit + 1),
	})
	if err != nil {
		return fmt.Errorf("count replay: %w", err)
	}
	if n > int64(s.cfg.ReplayLimit) {
		s.metrics.resyncs.Inc()
		return ss.snapshot(ctx, state.Unread, xmin, true)
	}
	if err := ss.replay(ctx, since, state.Unread, n, false, nil); err != nil {
		return err
	}
	ready := max(since, xmin)
	ss.c.synced(ready)
	return ss.write(ctx, readyFrame(ss.userID, state.Unread, ready, nil, false, false))
}

// replay writes, page by page, up to limit of the user's rows written at or
// above since, in (changed_xid, id) order, as "created" (inserted at or above
// since) or "updated". Every frame carries since: a client cut off halfway
// resumes from the same place. first, if not nil, is the first page, already
// read (with at most replayPage rows) under a page token of Server.pages,
// which replay gives back; every other page takes one.
func (ss *session) replay(ctx context.Context, since Cursor, unread, limit int64, skipSent bool, first []db.NotificationReplayRow) error {
	s := ss.s
	var afterXid, afterID int64
	for sent := int64(0); sent < limit; {
		page := min(replayPage, limit-sent)
		rows := first
		if rows == nil {
			if err := s.takePage(ctx); err != nil {
				return err
			}
			pctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
			var err error
			rows, err = s.q.NotificationReplay(pctx, db.NotificationReplayParams{
				Since: int64(since), UserID: ss.userID, AfterXid: afterXid, AfterID: afterID,
				RowLimit: int32(page),
			})
			cancel()
			if err != nil {
				s.releasePage()
				return fmt.Errorf("replay: %w: %w", errDatabase, err)
			}
		}
		first = nil
		if len(rows) == 0 {
			s.releasePage()
			return nil
		}
		frames := make([]frame, 0, len(rows))
		for i := range rows {
			n := &rows[i].Notification
			if skipSent && ss.alreadySent(n.ID, n.ChangedXid.Uint64) {
				continue // written in this very state already
			}
			if skipSent {
				ss.noteReplayed(n.ID, n.ChangedXid.Uint64)
			}
			typ := "updated"
			if rows[i].Created {
				typ = "created"
			}
			frames = append(frames, frame{b: rowFrame(typ, n, unread, since), rowID: n.ID, xid: n.ChangedXid.Uint64})
		}
		err := ss.writeFrames(ctx, frames)
		s.releasePage()
		if err != nil {
			return err
		}
		if int64(len(rows)) < page {
			return nil // that was the last page
		}
		last := rows[len(rows)-1].Notification
		afterXid, afterID = int64(last.ChangedXid.Uint64), last.ID
		sent += int64(len(rows))
	}
	return nil
}

func (ss *session) snapshot(ctx context.Context, unread int64, cur Cursor, resync bool) error {
	s := ss.s
	qctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	defer cancel()
	rows, err := s.q.NotificationListBefore(qctx, db.NotificationListBeforeParams{
		UserID: ss.userID, Before: math.MaxInt64, RowLimit: snapshotSize,
	})
	if err != nil {
		return fmt.Errorf("list: %w", err)
	}
	list := make([]db.Notification, len(rows))
	for i := range rows {
		list[i] = rows[i].Notification
	}
	ss.c.synced(cur)
	ss.snapshotUntil = time.Now().Add(5 * time.Second)
	ss.snapshotIDs = nil
	for i := range list {
		ss.snapshotIDs = append(ss.snapshotIDs, list[i].ID)
	}
	return ss.write(ctx, readyFrame(ss.userID, unread, cur, list, true, resync))
}

// clientMessage is any message a client sends (SPEC §4).
type clientMessage struct {
	Type  string  `json:"type"`
	IDs   []int64 `json:"ids"`
	Token string  `json:"token"`
}

// Error codes of "error" frames.
const (
	codeBadMessage  = "bad_message"
	codeUnknownType = "unknown_type"
	codeRateLimited = "rate_limited"
	codeTooManyIDs  = "too_many_ids"
	codeBadToken    = "bad_token"
	codeInternal    = "internal"
)

// decodeClientMessage parses one inbound frame. It never panics and rejects
// what is not one well-formed JSON object of a known type.
func decodeClientMessage(b []byte, maxIDs int) (clientMessage, string, string) {
	var m clientMessage
	if !utf8.Valid(b) {
		return m, codeBadMessage, "message is not valid UTF-8"
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, codeBadMessage, "message is not a JSON object of the protocol: " + jsonProblem(err)
	}
	switch m.Type {
	case "ping", "read_all":
	case "read":
		if len(m.IDs) == 0 {
			return m, codeBadMessage, `"read" needs a non-empty "ids" array`
		}
		if len(m.IDs) > maxIDs {
			return m, codeTooManyIDs, fmt.Sprintf(`"read" takes at most %d ids`, maxIDs)
		}
	case "auth":
		if m.Token == "" {
			return m, codeBadMessage, `"auth" needs a "token"`
		}
	case "":
		return m, codeBadMessage, `message has no "type"`
	default:
		return m, codeUnknownType, fmt.Sprintf("unknown message type %q", truncate(m.Type, 32))
	}
	return m, "", ""
}

func jsonProblem(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		return fmt.Sprintf("field %q has the wrong type", typeErr.Field)
	}
	var syntaxErr *json.SyntaxError
	if errors.As(err, &syntaxErr) {
		return "invalid JSON"
	}
	return "invalid JSON"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// readLoop handles inbound frames until the connection fails. Marking read is
// an UPDATE; its result reaches this and every other connection of the user
// through the trigger, like any other writer's.
func (ss *session) readLoop(ctx context.Context) {
	s := ss.s
	strikes := 0
	for {
		typ, b, err := ss.ws.Read(ctx)
		if err != nil {
			return
		}
		if !ss.limiter.Allow() {
			strikes++
			if strikes > s.cfg.MessageBurst {
				ss.c.close(websocket.StatusPolicyViolation, "too many messages")
				// Read on, dropping everything, until the writer's close
				// handshake ends the connection: returning would cancel
				// the writer, which might then drop the socket without
				// sending the 1008.
				for {
					if _, _, err := ss.ws.Read(ctx); err != nil {
						return
					}
				}
			}
			if strikes == 1 {
				ss.reply(errorFrame(codeRateLimited, "too many messages; slow down"))
			}
			continue
		}
		strikes = 0
		if typ != websocket.MessageText {
			ss.reply(errorFrame(codeBadMessage, "binary frames are not part of the protocol"))
			continue
		}
		m, code, msg := decodeClientMessage(b, s.cfg.MaxReadIDs)
		if code != "" {
			ss.reply(errorFrame(code, msg))
			continue
		}
		switch m.Type {
		case "ping":
			ss.reply(pongFrame)
		case "read", "read_all":
			if _, _, err := s.markRead(ctx, ss.userID, m.IDs, m.Type == "read_all"); err != nil {
				if ctx.Err() != nil {
					return
				}
				s.log.Warn("mark read failed", "user_id", ss.userID, "err", err)
				ss.reply(errorFrame(codeInternal, "could not mark read; try again"))
			}
		case "auth":
			// A refused token changes nothing: the connection keeps its
			// user and its deadline.
			claims, err := s.verifier.Verify(m.Token)
			switch {
			case err != nil:
				ss.reply(errorFrame(codeBadToken, tokenProblem(err)))
			case claims.Subject != ss.userID:
				ss.reply(errorFrame(codeBadToken, "token is for another user"))
			default:
				ss.setDeadline(tokenDeadline(claims))
			}
		}
	}
}

// reply queues a frame for the writer. Replies share the connection's bounded
// queue, so a client that floods and never reads is closed like any slow one.
func (ss *session) reply(b []byte) {
	ss.c.enqueue(frame{b: b})
}
