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

	mu    sync.RWMutex
	users map[string][]*conn
	total int
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
	h.users[c.userID] = append(h.users[c.userID], c)
	h.total++
	return nil
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

// deliver queues frame to every connection of userID and returns how many
// took it. A connection whose queue is full is closed with 1013 instead.
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

// userIDs returns the users with a connection here.
func (h *hub) userIDs() []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	ids := make([]string, 0, len(h.users))
	for id := range h.users {
		ids = append(ids, id)
	}
	return ids
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
}

// conn is the hub's side of one WebSocket: a bounded queue of frames and a
// close request, both drained by the connection's writer. It is safe for
// concurrent use.
type conn struct {
	userID    string
	maxFrames int
	maxBytes  int

	// wake has room for one signal: "the queue or the close request changed".
	wake chan struct{}

	mu          sync.Mutex
	queue       []frame
	queueBytes  int
	closeCode   websocket.StatusCode // non-zero once a close was requested
	closeReason string
	onOverflow  func()
}

func newConn(userID string, maxFrames, maxBytes int) *conn {
	return &conn{userID: userID, maxFrames: maxFrames, maxBytes: maxBytes, wake: make(chan struct{}, 1)}
}

// enqueue appends f unless the connection is closing. A full queue turns into
// a close with 1013: the client resumes with its cursor rather than the server
// buffering without bound. One frame larger than the byte bound is still
// accepted into an empty queue, so a big row is delivered, not refused.
func (c *conn) enqueue(f frame) bool {
	c.mu.Lock()
	if c.closeCode != 0 {
		c.mu.Unlock()
		return false
	}
	if len(c.queue) >= c.maxFrames || (len(c.queue) > 0 && c.queueBytes+len(f.b) > c.maxBytes) {
		c.closeCode = websocket.StatusTryAgainLater
		c.closeReason = "too far behind; reconnect with your cursor"
		c.queue, c.queueBytes = nil, 0
		overflow := c.onOverflow
		c.mu.Unlock()
		if overflow != nil {
			overflow()
		}
		c.signal()
		return false
	}
	c.queue = append(c.queue, f)
	c.queueBytes += len(f.b)
	c.mu.Unlock()
	c.signal()
	return true
}

// close requests that the writer close the connection with code; the first
// request wins.
func (c *conn) close(code websocket.StatusCode, reason string) {
	c.mu.Lock()
	if c.closeCode == 0 {
		c.closeCode, c.closeReason = code, reason
	}
	c.mu.Unlock()
	c.signal()
}

func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// take moves the queued frames into buf and reports a pending close request.
func (c *conn) take(buf []frame) ([]frame, websocket.StatusCode, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	buf = append(buf, c.queue...)
	clear(c.queue)
	if cap(c.queue) > 64 {
		c.queue = nil // let a burst's big backing array go
	} else {
		c.queue = c.queue[:0]
	}
	c.queueBytes = 0
	return buf, c.closeCode, c.closeReason
}
