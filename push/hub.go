package push

import (
	"errors"
	"sync"
	"time"

	"github.com/coder/websocket"
)

var (
	errUserConnLimit = errors.New("too many connections for this user")
	errNodeConnLimit = errors.New("this node holds the most connections it may")
)

// hub routes frames to the connections of a user. Delivery only appends to a
// connection's bounded queue and never waits, so one slow browser cannot slow
// the dispatcher, other users, or other tabs of the same user. It is safe for
// concurrent use.
type hub struct {
	maxPerUser, maxTotal int

	// watermark is the dispatcher's (nil in tests of the hub alone).
	watermark func() Cursor

	mu    sync.RWMutex
	users map[string][]*conn
	total int
	seq   uint64 // registrations so far; conn.seq numbers them
}

func newHub(maxPerUser, maxTotal int) *hub {
	return &hub{maxPerUser: maxPerUser, maxTotal: maxTotal, users: make(map[string][]*conn)}
}

// add registers c, so that from now on every event of its user is queued to
// it. Registering comes before the connection reads its backlog (subscribe
// before snapshot), so nothing committed in between is missed.
func (h *hub) add(c *conn) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.total >= h.maxTotal {
		return errNodeConnLimit
	}
	if len(h.users[c.userID]) >= h.maxPerUser {
		return errUserConnLimit
	}
	h.seq++
	c.seq = h.seq
	if h.watermark != nil {
		c.lastCur = h.watermark()
	}
	h.users[c.userID] = append(h.users[c.userID], c)
	h.total++
	return nil
}

// lastSeq returns the number of the latest registration.
func (h *hub) lastSeq() uint64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.seq
}

func (h *hub) remove(c *conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	list := h.users[c.userID]
	for i, x := range list {
		if x == c {
			list[i] = list[len(list)-1]
			list[len(list)-1] = nil
			list = list[:len(list)-1]
			h.total--
			break
		}
	}
	if len(list) == 0 {
		delete(h.users, c.userID)
	} else {
		h.users[c.userID] = list
	}
}

// connected reports whether userID has a connection here.
func (h *hub) connected(userID string) bool {
	h.mu.RLock()
	_, ok := h.users[userID]
	h.mu.RUnlock()
	return ok
}

// accepting reports whether a connection of userID takes new frames (one
// that is behind or closing drops them, so its rows need not be fetched).
func (h *hub) accepting(userID string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, c := range h.users[userID] {
		if c.accepting() {
			return true
		}
	}
	return false
}

// deliver queues frame to every connection of userID and returns how many
// took it (a connection that is behind drops it and replays it later).
func (h *hub) deliver(userID string, f frame) int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	n := 0
	for _, c := range h.users[userID] {
		if c.enqueue(f) {
			n++
		}
	}
	return n
}

// markAllBehind makes every connection registered up to registration upTo
// replay its rows from since (0: from its own last cursor). Later ones need
// not: they read the table after the lost notifications' commits.
func (h *hub) markAllBehind(since Cursor, upTo uint64) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, list := range h.users {
		for _, c := range list {
			if c.seq <= upTo {
				c.markBehind(since)
			}
		}
	}
}

// markUserBehind makes every connection of userID replay its rows from
// since, or from its own last cursor if that is lower.
func (h *hub) markUserBehind(userID string, since Cursor) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, c := range h.users[userID] {
		c.markBehind(since)
	}
}

// closeAll asks every connection to close with code.
func (h *hub) closeAll(code websocket.StatusCode, reason string) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, list := range h.users {
		for _, c := range list {
			c.close(code, reason)
		}
	}
}

// working reports whether a connection has a writer running or is behind:
// frames are on their way, or a catch-up is. Tests ask it through Quiet.
func (h *hub) working() bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, list := range h.users {
		for _, c := range list {
			c.mu.Lock()
			w := c.writing || c.behind
			c.mu.Unlock()
			if w {
				return true
			}
		}
	}
	return false
}

func (h *hub) count() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.total
}

// frame is an encoded server message. Its bytes are shared by every
// connection it is queued to and never modified.
type frame struct {
	b []byte
	// at is when the notification behind a live frame reached the listener
	// (zero for other frames); it feeds the delivery latency histogram.
	at time.Time
	// cur is the cursor the frame carries (zero for frames without one).
	cur Cursor
	// rowID is the row of a "created", "updated" or "deleted" frame (zero
	// for others), and xid the changed_xid of the row it carries.
	rowID   int64
	xid     uint64
	deleted bool
	// unread is the count the frame carries, if hasUnread.
	unread    int64
	hasUnread bool
}

func (f *frame) setUnread(n int64) { f.unread, f.hasUnread = n, true }

// version is what delivered remembers of the row a frame carries.
func (f *frame) version() uint64 {
	if f.deleted {
		return rowDeleted
	}
	return f.xid
}

// deletedRowFrame is the "deleted" frame of row id.
func deletedRowFrame(id, unread int64, cur Cursor, at time.Time) frame {
	f := frame{b: deletedFrame(id, unread, cur), at: at, cur: cur, rowID: id, deleted: true}
	f.setUnread(unread)
	return f
}

// conn is the hub's side of one WebSocket: a bounded queue of frames drained
// by the connection's writer, and a close request. It is safe for concurrent
// use.
//
// When the queue is full the connection falls "behind" instead of growing the
// queue: frames are dropped until the writer has drained the queue, and the
// writer then replays the user's rows from the table, starting at the cursor
// of the last frame it accepted. Every dropped frame came from a notification
// processed after that one, so its transaction is at or above that cursor and
// the replay contains its row (see dispatcher for why). A client that reads
// slowly is thus caught up at its own pace from the table, never from server
// memory; one that stops reading is closed when a write times out.
//
// The connection's writer runs only while there is something to do: the
// first change that needs it (a frame, a close, falling behind) calls
// startWriter, and the writer's take reports when it may stop. An idle
// connection thus holds no writer goroutine.
type conn struct {
	userID    string
	maxFrames int
	maxBytes  int
	seq       uint64 // set by hub.add

	// startWriter starts a writer that drains the connection with take. It
	// is called with mu held, so it must not block or call back into c.
	startWriter func()

	mu sync.Mutex
	// writing is set while a writer runs; retired once the connection has
	// ended, after which no writer starts again.
	writing    bool
	retired    bool
	queue      []frame
	queueBytes int
	// lastCur is the cursor of the last frame accepted, or the
	// dispatcher's watermark when the connection registered. It never
	// jumps ahead of what the dispatcher processed: a catch-up from it
	// covers every transaction whose notification came after, including
	// one whose change a stale frame (read before a catch-up or a
	// snapshot that showed the change, and written after it) overwrote on
	// the client. So neither a snapshot nor a catch-up moves it.
	lastCur     Cursor
	behind      bool
	behindSince Cursor
	closeCode   websocket.StatusCode // non-zero once a close was requested
	closeReason string
}

// newConn returns a conn whose writer is considered running: the session's
// initial sync writes first, then drains it like any writer (see take).
func newConn(userID string, maxFrames, maxBytes int, startWriter func()) *conn {
	return &conn{userID: userID, maxFrames: maxFrames, maxBytes: maxBytes, startWriter: startWriter, writing: true}
}

// enqueue appends f, or drops it when the connection is behind or closing. It
// reports whether f was queued.
func (c *conn) enqueue(f frame) bool {
	c.mu.Lock()
	if c.closeCode != 0 {
		c.mu.Unlock()
		return false
	}
	full := len(c.queue) >= c.maxFrames || (len(c.queue) > 0 && c.queueBytes+len(f.b) > c.maxBytes)
	switch {
	case c.behind:
		c.mu.Unlock()
		return false
	case full:
		c.behind, c.behindSince = true, c.lastCur
		c.wakeLocked()
		c.mu.Unlock()
		return false
	}
	c.queue = append(c.queue, f)
	c.queueBytes += len(f.b)
	if f.cur != 0 {
		c.lastCur = max(c.lastCur, f.cur)
	}
	c.wakeLocked()
	c.mu.Unlock()
	return true
}

// markBehind makes the writer replay the user's changes from since (or from
// the connection's last cursor, if lower) once it has drained its queue: the
// dispatcher calls it after notifications were lost, and for bursts. since 0
// means the last cursor.
func (c *conn) markBehind(since Cursor) {
	c.mu.Lock()
	if since == 0 || c.lastCur < since {
		since = c.lastCur
	}
	if !c.behind || since < c.behindSince {
		c.behindSince = since
	}
	c.behind = true
	c.wakeLocked()
	c.mu.Unlock()
}

// accepting reports whether enqueue would take a live frame now.
func (c *conn) accepting() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.behind && c.closeCode == 0
}

// close requests that the writer close the connection with code; the first
// request wins.
func (c *conn) close(code websocket.StatusCode, reason string) {
	c.mu.Lock()
	if c.closeCode == 0 {
		c.closeCode, c.closeReason = code, reason
	}
	c.wakeLocked()
	c.mu.Unlock()
}

// wakeLocked starts a writer unless one runs or the connection has ended.
// c.mu must be held.
func (c *conn) wakeLocked() {
	if !c.writing && !c.retired {
		c.writing = true
		c.startWriter()
	}
}

// retire ends the connection's writers for good: none starts after it (one
// that runs finishes on its own).
func (c *conn) retire() {
	c.mu.Lock()
	c.retired = true
	c.mu.Unlock()
}

// pending is what the writer takes from a conn in one go.
type pending struct {
	frames      []frame
	closeCode   websocket.StatusCode
	closeReason string
	// replay is set when the connection was behind: after writing frames,
	// the writer replays rows from since. Taking it ends the behind state,
	// so live frames queue again before the replay reads the table
	// (subscribe before snapshot).
	replay bool
	since  Cursor
}

// take moves the queued frames into p.frames (reusing its array) and reports
// a pending close or replay. When there is nothing to do it returns false
// and the writer must return: the next change starts a new one.
func (c *conn) take(p *pending) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 && c.closeCode == 0 && !c.behind {
		c.writing = false
		return false
	}
	p.frames = append(p.frames[:0], c.queue...)
	clear(c.queue)
	if cap(c.queue) > 64 {
		c.queue = nil // let a burst's big backing array go
	} else {
		c.queue = c.queue[:0]
	}
	c.queueBytes = 0
	p.closeCode, p.closeReason = c.closeCode, c.closeReason
	p.replay, p.since = c.behind, c.behindSince
	c.behind = false
	return true
}
