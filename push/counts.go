package push

import (
	"errors"
	"slices"
	"strconv"
	"strings"
)

// The dispatcher keeps the unread count of every user with a connection here,
// so that a batch of hints needs no query for counts. A count is read once,
// together with the snapshot it was read in (NotificationUnreadCountsSeen);
// after that every signed hint brings the writing transaction's id and each
// row's change to its user's count (migrations/00007), and the change is
// added exactly when the count's snapshot did not see that transaction. Hints
// come after their transactions commit, so a transaction is either seen by
// the snapshot (its change is in the count already) or committed after it
// (its change is not): adding exactly the unseen ones gives the count as of
// every hint processed, whatever order the reads and the hints come in.
//
// Whatever may have changed a count without a signed hint empties the cache,
// or the user's entry, and the count is read again: a hint that is unsigned
// (an older trigger, a forged NOTIFY), a resync (hints were lost), a reset
// hint (TRUNCATE, a recount), a failed batch (its deltas may be half applied).

// pgSnapshot is a PostgreSQL snapshot (pg_snapshot): transactions below xmin
// had finished, those at or above xmax had not started, and those in xip
// were running.
type pgSnapshot struct {
	xmin, xmax uint64
	xip        []uint64
}

var errBadSnapshot = errors.New("malformed pg_snapshot")

// parseSnapshot parses pg_snapshot's text form, "xmin:xmax:xip,xip,...".
func parseSnapshot(s string) (*pgSnapshot, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return nil, errBadSnapshot
	}
	var snap pgSnapshot
	var err error
	if snap.xmin, err = strconv.ParseUint(parts[0], 10, 64); err != nil {
		return nil, errBadSnapshot
	}
	if snap.xmax, err = strconv.ParseUint(parts[1], 10, 64); err != nil || snap.xmax < snap.xmin {
		return nil, errBadSnapshot
	}
	if parts[2] != "" {
		for _, x := range strings.Split(parts[2], ",") {
			xid, err := strconv.ParseUint(x, 10, 64)
			if err != nil || xid < snap.xmin || xid >= snap.xmax {
				return nil, errBadSnapshot
			}
			snap.xip = append(snap.xip, xid)
		}
	}
	return &snap, nil
}

// sees reports whether s saw the changes of transaction xid, which has
// committed (a hint is only sent on commit): it had committed before s was
// taken unless it was running then (in xip) or started after (at or above
// xmax).
func (s *pgSnapshot) sees(xid uint64) bool {
	if xid < s.xmin {
		return true
	}
	if xid >= s.xmax {
		return false
	}
	return !slices.Contains(s.xip, xid)
}

// unreadCount is a user's count as of the snapshot seen, plus the deltas of
// every processed transaction seen did not see.
type unreadCount struct {
	n    int64
	seen *pgSnapshot
}

// unreadCounts is the dispatcher's cache of counts; it is owned by the
// dispatcher's goroutine.
type unreadCounts map[string]*unreadCount

// add applies the change delta that committed transaction xid made to
// userID's count, if the count is kept and does not include it yet.
func (c unreadCounts) add(userID string, xid uint64, delta int64) {
	if delta == 0 {
		return
	}
	if u := c[userID]; u != nil && !u.seen.sees(xid) {
		u.n += delta
	}
}
