package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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

	// sent is what the writer has written (writer only).
	sent *delivered

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
	ss.sent = newDelivered(trackedRows)
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

// sync brings the client up to date before "ready": a snapshot of the newest
// rows for a fresh connection, or a replay of what it missed for a resume.
// The connection is already registered with the hub, so live events that
// arrive meanwhile wait in its queue and follow "ready"; those the sync
// wrote already are skipped (see delivered).
func (ss *session) sync(ctx context.Context, cursor *Cursor) error {
	s := ss.s
	qctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	defer cancel()
	state, err := s.q.NotificationSyncState(qctx)
	if err != nil {
		return fmt.Errorf("sync state: %w", err)
	}
	xmin := Cursor(state.Xmin)
	if cursor == nil {
		return ss.snapshot(ctx, xmin, false)
	}
	since := *cursor
	// A cursor from the future (another database, a restored backup, a
	// failover that lost transactions) cannot be trusted, and one below the
	// deletions' horizon may have missed deletions that were pruned: start
	// afresh.
	if uint64(since) > uint64(state.Xmax) || since < Cursor(state.Horizon) {
		s.metrics.resyncs.Inc()
		return ss.snapshot(ctx, xmin, true)
	}
	n, err := s.q.NotificationReplayCount(qctx, db.NotificationReplayCountParams{
		UserID: ss.userID, Since: int64(since), RowLimit: int32(s.cfg.ReplayLimit + 1),
	})
	if err != nil {
		return fmt.Errorf("count replay: %w", err)
	}
	if n > int64(s.cfg.ReplayLimit) {
		s.metrics.resyncs.Inc()
		return ss.snapshot(ctx, xmin, true)
	}
	// The count bounds nothing but the choice: rows that change meanwhile
	// are replayed too, up to a generous limit.
	unread, err := ss.replay(ctx, since, 4*s.cfg.ReplayLimit+deletedPage)
	if errors.Is(err, errTooFarBehind) {
		s.metrics.resyncs.Inc()
		return ss.snapshot(ctx, xmin, true)
	}
	if err != nil {
		return err
	}
	ready := max(since, xmin)
	f := frame{b: readyFrame(ss.userID, unread, ready)}
	f.setUnread(unread)
	return ss.writeFrames(ctx, []frame{f})
}

// snapshot writes a ready frame with the newest rows, which the client puts
// in place of whatever it holds; cur is a watermark read before them.
func (ss *session) snapshot(ctx context.Context, cur Cursor, resync bool) error {
	s := ss.s
	qctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	defer cancel()
	// The client replaces its list: it holds these rows and nothing else.
	ss.sent = newDelivered(trackedRows)
	buf := readyBuffers.Get().(*[]byte)
	b, unread, err := snapshotFrame(qctx, s.pool, (*buf)[:0], ss.userID, cur, resync, ss.sent.wroteRow)
	if err == nil {
		f := frame{b: b}
		f.setUnread(unread)
		err = ss.writeFrames(ctx, []frame{f})
	} else {
		err = fmt.Errorf("snapshot: %w", err)
	}
	// Written, the frame is the socket's (see writeFrames): its buffer
	// serves the next connection's.
	if cap(b) <= maxPooledReady {
		*buf = b[:0]
		readyBuffers.Put(buf)
	}
	return err
}

// readyBuffers holds buffers for snapshot frames, which every connection
// writes once on its way to idle: 20 rows are ~10 KiB, and a new buffer for
// each was, after the rows themselves, the largest garbage a connection
// made (see README, "Performance"). A buffer that grew past maxPooledReady
// (rows with big bodies or data) is left to the collector.
var readyBuffers = sync.Pool{New: func() any { return new([]byte) }}

const maxPooledReady = 64 << 10

// snapshotFrame reads the newest rows of userID (query NotificationSnapshot)
// and appends them to b, one at a time as they arrive, as a "ready" frame
// with cursor cur, which it returns with the unread count read with them;
// listed is called with each row's id and version.
//
// The rows are not collected first, as sqlc's NotificationSnapshot does:
// every connection reads a snapshot when it opens, and the slice of 20 rows
// and its growth were the largest garbage a connection made on its way to
// idle, more than the frame itself (see README, "Performance"). The query
// is sqlc's all the same (db.NotificationSnapshot, checked against the
// schema and its plan by db's tests), and the columns are scanned in its
// order into its row type.
func snapshotFrame(ctx context.Context, q db.DBTX, b []byte, userID string, cur Cursor, resync bool,
	listed func(id int64, xid uint64)) (_ []byte, unread int64, err error) {
	rows, err := q.Query(ctx, db.NotificationSnapshot, userID, int32(snapshotSize))
	if err != nil {
		return b, 0, err
	}
	defer rows.Close()
	var r db.NotificationSnapshotRow
	n := &r.Notification
	count := 0
	for rows.Next() {
		if err := rows.Scan(&n.ID, &n.UserID, &n.Kind, &n.Title, &n.Body, &n.Url, &n.Data,
			&n.CreatedAt, &n.ReadAt, &n.CreatedXid, &n.ChangedXid, &r.Unread); err != nil {
			return b, 0, err
		}
		// Every row carries the count; a user without rows has no unread
		// ones.
		if count == 0 {
			unread = r.Unread
			b = appendReadyHead(b, userID, unread, cur)
			b = append(b, `,"notifications":[`...)
		} else {
			b = append(b, ',')
		}
		b = appendNotification(b, n)
		listed(n.ID, n.ChangedXid.Uint64)
		count++
	}
	if err := rows.Err(); err != nil {
		return b, 0, err
	}
	if count == 0 {
		b = appendReadyHead(b, userID, 0, cur)
		b = append(b, `,"notifications":[`...)
	}
	b = append(b, ']')
	if resync {
		b = append(b, `,"resync":true`...)
	}
	return append(b, '}'), unread, nil
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
