package push

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgpush/pgpush/db"
)

// item is what the listener hands to the dispatcher: the hints of one
// notification, or (resync) a marker that notifications may have been lost
// before it, which concerns the connections registered up to upTo.
type item struct {
	h      hint
	at     time.Time
	resync bool
	upTo   uint64
}

const (
	// maxBatchItems bounds how many notifications one batch covers.
	maxBatchItems = 256
	// fetchBudget is about how many bytes of rows one fetch reads, and
	// maxFetchRows how many rows: a burst of big rows is fetched a few at a
	// time, so the dispatcher's memory does not grow with the burst.
	fetchBudget  = 4 << 20
	maxFetchRows = 1000
	// firstFetchRows is the size of a fetch before row sizes are known.
	firstFetchRows = 16
	// burstRows: a user with more created or updated rows than this in one
	// batch is not served through the dispatcher. Its connections are marked
	// behind instead, and their writers read the rows from the table in
	// pages, in parallel and each at its client's pace, so that a burst for
	// some users does not hold up the rows of everyone else. batchRows caps
	// the rows one batch fetches: past it the users with the most rows are
	// caught up that way too, so a burst spread over many users cannot hold
	// up the others either.
	burstRows = 256
	batchRows = 2000
)

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
	// published is w for other goroutines (see watermark).
	published atomic.Uint64
	// pending counts the items offered and not yet processed.
	pending atomic.Int64
	// rowBytes is the mean size of the rows of the last fetch (0: none yet).
	rowBytes int

	// conn is a pool connection the dispatcher keeps for itself, so that
	// its queries never queue behind the connections' replays: a burst
	// makes every writer read pages from the table at once, and the rows
	// of everyone else must not wait for that. nil when not held.
	conn     *pgxpool.Conn
	lastUsed time.Time

	// counts are the unread counts of the users connected here (see
	// counts.go); swept is when those of users gone were last dropped.
	counts unreadCounts
	swept  time.Time

	// scratch holds deliver's maps, cleared and reused for every batch so
	// that a stream of one-row batches does not allocate five maps each.
	scratch struct {
		users     map[string]struct{}
		absent    map[string]struct{}
		changed   map[string]int
		burst     map[string]bool
		accepting map[string]bool
	}
}

// reuse clears *m for another batch, making it on first use.
func reuse[K comparable, V any](m *map[K]V) map[K]V {
	if *m == nil {
		*m = make(map[K]V)
	}
	clear(*m)
	return *m
}

// queries returns the queries to run on the dispatcher's connection,
// acquiring one if needed. With a pool of fewer than 3 connections it uses
// the pool, which it then cannot afford to take one from.
func (d *dispatcher) queries(ctx context.Context) (*db.Queries, error) {
	pool := d.s.pool
	if pool.Config().MaxConns < 3 {
		return d.s.q, nil
	}
	if d.conn != nil && time.Since(d.lastUsed) > time.Second {
		// Idle a while: check it the way the pool would before lending
		// it, so that a database restart costs no failed query.
		if err := d.conn.Ping(ctx); err != nil {
			d.dropConn()
		}
	}
	if d.conn == nil {
		c, err := pool.Acquire(ctx)
		if err != nil {
			return nil, fmt.Errorf("acquire a connection: %w", err)
		}
		d.conn = c
	}
	d.lastUsed = time.Now()
	return db.New(d.conn), nil
}

// dropConn gives the dispatcher's connection back after a failure (the
// pool destroys it if it is broken) or at the end.
func (d *dispatcher) dropConn() {
	if d.conn != nil {
		d.conn.Release()
		d.conn = nil
	}
}

// advance raises the watermark to at least x.
func (d *dispatcher) advance(x Cursor) {
	if x > d.w {
		d.w = x
		d.published.Store(uint64(x))
	}
}

// watermark is the dispatcher's watermark as of now: every transaction
// below it had its notification processed, and its frames queued, before.
// Safe for concurrent use.
func (d *dispatcher) watermark() Cursor { return Cursor(d.published.Load()) }

func newDispatcher(s *Server) *dispatcher {
	// The queue holds parsed hints of up to ~7 kB of payload each; past it
	// the listener drops and the dispatcher catches up from the table.
	size := 1024
	if s.cfg.dispatchQueue > 0 {
		size = s.cfg.dispatchQueue
	}
	return &dispatcher{s: s, in: make(chan item, size), counts: make(unreadCounts)}
}

// offer queues it unless the queue is full, and reports whether it did.
// It never waits.
func (d *dispatcher) offer(it item) bool {
	d.pending.Add(1)
	select {
	case d.in <- it:
		return true
	default:
		d.pending.Add(-1)
		return false
	}
}

// idle reports whether every item offered so far has been processed.
func (d *dispatcher) idle() bool { return d.pending.Load() == 0 }

func (d *dispatcher) run(ctx context.Context) {
	defer d.dropConn()
	limit := maxBatchItems
	if d.s.cfg.batchItems > 0 {
		limit = d.s.cfg.batchItems
	}
	batch := make([]item, 0, limit)
	for {
		select {
		case <-ctx.Done():
			return
		case it := <-d.in:
			batch = append(batch[:0], it)
		}
	drain:
		for len(batch) < limit {
			select {
			case it := <-d.in:
				batch = append(batch, it)
			default:
				break drain
			}
		}
		d.process(ctx, batch)
		d.pending.Add(-int64(len(batch)))
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
		d.retry(ctx, "catch up", func() error { return d.catchUp(ctx, it.upTo) })
		start = i + 1
	}
	d.retry(ctx, "deliver", func() error { return d.deliver(ctx, batch[start:]) })
}

// retry runs f until it succeeds or ctx ends. The watermark only advances
// when f succeeds, so nothing is skipped while the database is away; the
// listener meanwhile drops notifications and asks for a catch-up.
func (d *dispatcher) retry(ctx context.Context, what string, f func() error) {
	delay := 50 * time.Millisecond
	failures := 0
	for {
		err := f()
		if err == nil || ctx.Err() != nil {
			if failures > 1 && err == nil {
				d.s.log.Info("dispatcher recovered", "step", what)
			}
			return
		}
		// One failure is usually a connection that died with the
		// database's restart, which the listener has already reported:
		// only a second one in a row is news.
		failures++
		if failures == 2 {
			d.s.log.Warn("dispatcher cannot reach the database; retrying", "step", what, "err", err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(delay*2, 2*time.Second)
	}
}

// deliver routes a frame per row of items, in notification order. Rows are
// fetched only for users with a connection here that takes frames (one that
// is behind replays them from the table itself), in windows bounded by
// fetchBudget, and each window's frames are routed before the next is read;
// a row a signed hint carries needs no fetch. A retry after an error re-sends
// the frames routed before it (duplicates are harmless to clients, while
// skipping would lose rows) and reads every count again, since the failed
// attempt may have added some of the batch's deltas.
func (d *dispatcher) deliver(ctx context.Context, items []item) error {
	if len(items) == 0 {
		return nil
	}
	err := d.deliverOnce(ctx, items)
	if err != nil {
		clear(d.counts)
	}
	return err
}

func (d *dispatcher) deliverOnce(ctx context.Context, items []item) error {
	hub := d.s.hub
	users := reuse(&d.scratch.users) // connected users with rows in the batch
	absent := reuse(&d.scratch.absent)
	changed := reuse(&d.scratch.changed) // connected user -> created or updated rows
	// A burst's rows are not fetched here. Every row of the batch has
	// committed, so the replay, which starts after this mark, reads them;
	// its start is the last frame each connection took, so nothing before
	// the batch is missed either. A bulk hint names such users itself.
	burst := reuse(&d.scratch.burst)
	d.sweepCounts()
	for _, it := range items {
		if it.h.Op == "r" {
			// Counts changed without row hints; every count read from
			// here on sees that (it committed before).
			clear(d.counts)
			if it.h.Truncated {
				// Rows went without row hints. The TRUNCATE raised the
				// deletions' horizon above itself, so each connection's
				// replay from its own cursor ends it (1013) if its client
				// may hold such rows, and the client comes back to a
				// fresh snapshot; a connection whose snapshot saw the
				// TRUNCATE replays nothing.
				hub.markAllBehind(0, hub.lastSeq())
			}
		}
		for _, u := range it.h.Users {
			if !it.h.signed {
				delete(d.counts, u)
			}
			if hub.connected(u) {
				burst[u] = true
			}
		}
		for _, r := range it.h.Rows {
			if !it.h.signed {
				delete(d.counts, r.UserID)
			}
			if _, skip := absent[r.UserID]; skip {
				continue
			}
			if _, seen := users[r.UserID]; !seen {
				if !hub.connected(r.UserID) {
					absent[r.UserID] = struct{}{}
					delete(d.counts, r.UserID)
					continue
				}
				users[r.UserID] = struct{}{}
			}
			if it.h.Op != "d" {
				changed[r.UserID]++
			}
		}
	}
	total := 0
	for u, n := range changed {
		switch {
		case burst[u]:
		case n > burstRows:
			burst[u] = true
		default:
			total += n
		}
	}
	if total > batchRows {
		heavy := make([]string, 0, len(changed))
		for u := range changed {
			if !burst[u] {
				heavy = append(heavy, u)
			}
		}
		slices.SortFunc(heavy, func(a, b string) int { return changed[b] - changed[a] })
		for _, u := range heavy {
			if total <= batchRows {
				break
			}
			burst[u] = true
			total -= changed[u]
		}
	}
	// Their catch-ups start at the lowest xmin of the batch: every
	// transaction of the batch is at or above it, and so is every
	// transaction whose change a frame written meanwhile may have
	// overwritten with an older version (see conn.lastCur).
	if len(burst) > 0 {
		since := Cursor(items[0].h.Xmin)
		for _, it := range items {
			since = min(since, Cursor(it.h.Xmin))
		}
		for u := range burst {
			hub.markUserBehind(u, since)
		}
	}
	if len(users) == 0 {
		for i := range items {
			it := &items[i]
			d.applyDeltas(it, it.h.Rows)
			d.advance(Cursor(it.h.Xmin))
		}
		return nil
	}
	if err := d.readCounts(ctx, users); err != nil {
		return err
	}

	// A window is a run of spans (parts of items) whose rows are fetched
	// together.
	type span struct {
		it   *item
		rows []hintRow
	}
	var (
		window    []span
		ids       []int64
		accepting = reuse(&d.scratch.accepting)
	)
	flush := func() error {
		rows, err := d.fetch(ctx, ids, accepting)
		if err != nil {
			return err
		}
		for _, sp := range window {
			d.route(sp.it, sp.rows, users, burst, rows)
		}
		window, ids = window[:0], ids[:0]
		clear(accepting)
		return nil
	}
	for i := range items {
		it := &items[i]
		rows := it.h.Rows
		if len(rows) == 0 {
			window = append(window, span{it: it}) // moves the watermark, in order
			continue
		}
		fetches := it.h.Op == "c" || it.h.Op == "u"
		for len(rows) > 0 {
			limit := d.fetchLimit()
			n := 0
			for n < len(rows) && len(ids) < limit {
				r := rows[n]
				n++
				if _, ok := users[r.UserID]; !ok || !fetches || r.payload != nil {
					continue
				}
				want, seen := accepting[r.UserID]
				if !seen {
					want = !burst[r.UserID] && hub.accepting(r.UserID)
					accepting[r.UserID] = want
				}
				if want {
					ids = append(ids, r.ID)
				}
			}
			window = append(window, span{it: it, rows: rows[:n]})
			rows = rows[n:]
			if len(ids) >= limit {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	return flush()
}

// sweepCountsEvery is how often the counts of users no longer connected are
// dropped (the others are dropped when a hint names them).
const sweepCountsEvery = 10 * time.Second

func (d *dispatcher) sweepCounts() {
	if time.Since(d.swept) < sweepCountsEvery {
		return
	}
	d.swept = time.Now()
	for u := range d.counts {
		if !d.s.hub.connected(u) {
			delete(d.counts, u)
		}
	}
}

// readCounts reads the unread counts of the users that have none kept, with
// the snapshot they were read in.
func (d *dispatcher) readCounts(ctx context.Context, users map[string]struct{}) error {
	var missing []string
	for u := range users {
		if d.counts[u] == nil {
			missing = append(missing, u)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	qctx, cancel := context.WithTimeout(ctx, d.s.cfg.StatementTimeout)
	defer cancel()
	q, err := d.queries(qctx)
	if err != nil {
		return err
	}
	r, err := q.NotificationUnreadCountsSeen(qctx, missing)
	if err != nil {
		d.dropConn()
		return fmt.Errorf("unread counts: %w", err)
	}
	seen, err := parseSnapshot(r.Snapshot)
	if err != nil {
		return fmt.Errorf("unread counts: %w", err)
	}
	var counts map[string]int64
	if err := json.Unmarshal(r.Unread, &counts); err != nil {
		return fmt.Errorf("unread counts: %w", err)
	}
	for _, u := range missing {
		d.counts[u] = &unreadCount{n: counts[u], seen: seen}
	}
	return nil
}

// applyDeltas adds the unread deltas of it's rows (or, with rows nil, of
// its bulk users) to the counts kept.
func (d *dispatcher) applyDeltas(it *item, rows []hintRow) {
	if !it.h.signed {
		return
	}
	if rows == nil {
		for i, u := range it.h.Users {
			if i < len(it.h.Deltas) {
				d.counts.add(u, it.h.Xid, it.h.Deltas[i])
			}
		}
		return
	}
	for _, r := range rows {
		d.counts.add(r.UserID, it.h.Xid, r.Delta)
	}
}

// fetchLimit is how many rows the next fetch may read.
func (d *dispatcher) fetchLimit() int {
	if d.rowBytes == 0 {
		return firstFetchRows
	}
	return max(1, min(maxFetchRows, fetchBudget/d.rowBytes))
}

// fetch reads the rows ids of the users in accepting.
func (d *dispatcher) fetch(ctx context.Context, ids []int64, accepting map[string]bool) (map[int64]*db.Notification, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	userIDs := make([]string, 0, len(accepting))
	for u, ok := range accepting {
		if ok {
			userIDs = append(userIDs, u)
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	qctx, cancel := context.WithTimeout(ctx, d.s.cfg.StatementTimeout)
	defer cancel()
	started := time.Now()
	q, err := d.queries(qctx)
	if err != nil {
		return nil, err
	}
	fetched, err := q.NotificationRowsByIDs(qctx, db.NotificationRowsByIDsParams{Ids: ids, UserIds: userIDs})
	if err != nil {
		d.dropConn()
		return nil, fmt.Errorf("fetch rows: %w", err)
	}
	d.s.metrics.fetch.Observe(time.Since(started).Seconds())
	rows := make(map[int64]*db.Notification, len(fetched))
	size := 0
	for i := range fetched {
		n := &fetched[i].Notification
		rows[n.ID] = n
		size += 256 + len(n.Title) + len(n.Body) + len(n.Data) + len(n.Kind) + len(n.UserID)
		if n.Url != nil {
			size += len(*n.Url)
		}
	}
	if len(fetched) > 0 {
		d.rowBytes = max(1, size/len(fetched))
	}
	return rows, nil
}

// route queues the frames of rows, a part of it, to their users'
// connections, with each user's count after the row's change. A row that was
// neither carried by the hint nor fetched (its user's connections all drop
// frames, or it was deleted or moved since) gets no frame.
//
// A user of the batch's burst gets no frame at all, deletions included: its
// connections were marked behind before the batch was routed, and a writer
// may have taken that mark already and be replaying from the table. A frame
// queued now would be written after that replay, and its count (as of a
// transaction the replay saw) would replace the replay's newer one, with
// nothing of this batch coming after to set it right. The replay covers
// every row and deletion of the batch.
func (d *dispatcher) route(it *item, rows []hintRow, users map[string]struct{}, burst map[string]bool, fetched map[int64]*db.Notification) {
	d.advance(Cursor(it.h.Xmin))
	d.applyDeltas(it, rows)
	if rows == nil {
		return
	}
	for _, r := range rows {
		if _, ok := users[r.UserID]; !ok || burst[r.UserID] {
			continue
		}
		c := d.counts[r.UserID]
		if c == nil {
			continue // not kept: the batch failed to read it, and is retried
		}
		var f frame
		switch it.h.Op {
		case "d":
			f = deletedRowFrame(r.ID, c.n, d.w, it.at)
		case "c", "u":
			n, version := fetched[r.ID], uint64(0)
			switch {
			case r.payload != nil:
				n, version = r.payload, it.h.Xid|insertedVersion
			case n == nil || n.UserID != r.UserID:
				continue
			default:
				version = n.ChangedXid.Uint64
			}
			typ := "created"
			if it.h.Op == "u" {
				typ = "updated"
			}
			f = frame{b: rowFrame(typ, n, c.n, d.w), at: it.at, cur: d.w, rowID: r.ID, xid: version}
			f.setUnread(c.n)
		default:
			continue
		}
		d.s.hub.deliver(r.UserID, f)
	}
}

// catchUp runs after notifications may have been lost (the listener
// reconnected, or its queue overflowed). Every connection registered up to
// upTo is marked behind from the watermark, so each replays its own user's
// rows from the table, in pages, at its own pace; then the watermark advances
// to an xmin read now, below which every transaction has committed and is
// visible to those replays.
func (d *dispatcher) catchUp(ctx context.Context, upTo uint64) error {
	s := d.s
	qctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	defer cancel()
	q, err := d.queries(qctx)
	if err != nil {
		return err
	}
	xmin, err := q.NotificationWatermark(qctx)
	if err != nil {
		d.dropConn()
		return fmt.Errorf("watermark: %w", err)
	}
	if Cursor(xmin) < d.w {
		// Transaction ids only grow, so this is another database at the
		// same address: a failover that lost transactions, or a restored
		// backup. The cursors handed out are from its future; the clients
		// must start afresh (a cursor above xmax gets a new snapshot).
		s.log.Error("the database's transaction ids went backwards (failover with lost transactions, or a restore?); closing every connection so that clients resync",
			"watermark", uint64(d.w), "xmin", xmin)
		s.hub.closeAll(websocket.StatusTryAgainLater, "the database changed; reconnect")
		d.w = Cursor(xmin)
		d.published.Store(uint64(xmin))
		return nil
	}
	// The hints lost may have changed counts.
	clear(d.counts)
	// Before the first connect there is no watermark: connections replay
	// from their own cursors (markBehind with 0).
	s.hub.markAllBehind(d.w, upTo)
	// The watermark does not jump to xmin: transactions below it that
	// committed after the new LISTEN began still have their notifications
	// on the way, and a frame of theirs must not carry a cursor above
	// them (see conn.lastCur). Only the first connect starts it here.
	if d.w == 0 {
		d.advance(Cursor(xmin))
	}
	return nil
}
