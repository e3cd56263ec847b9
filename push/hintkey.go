package push

import (
	"context"
	"time"
)

// Hints that carry rows and unread deltas are signed by the trigger with the
// key in notifications_hint_key (migrations/00007), which only the table's
// owner and pgpush read: any role may NOTIFY on the channel. Without the key
// (pgpush's role lacks SELECT on it) every hint is treated as unsigned: rows
// and counts are read from the table, as for hints of an older trigger.

// hintKey returns the key hints are checked with (nil: none).
func (s *Server) hintKey() []byte {
	if k := s.key.Load(); k != nil {
		return *k
	}
	return nil
}

// reloadHintKey asks keepHintKey to read the key again: a signature did not
// verify, so a DBA may have rotated it. It never waits.
func (s *Server) reloadHintKey() {
	select {
	case s.keyReload <- struct{}{}:
	default:
	}
}

// loadHintKey reads the key. On failure the key read before, if any, stays.
func (s *Server) loadHintKey(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	defer cancel()
	key, err := s.q.NotificationHintKey(ctx)
	if err != nil {
		if ctx.Err() == nil && !s.keyWarned {
			s.keyWarned = true
			s.log.Warn("cannot read the hint key: every row and unread count is read from the table instead of the NOTIFY payload (grant SELECT on notifications_hint_key to pgpush's role)", "err", err)
		}
		return
	}
	s.key.Store(&key)
}

// keepHintKey reloads the key when asked, at most every keyReloadInterval,
// until ctx ends.
func (s *Server) keepHintKey(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.keyReload:
		}
		s.loadHintKey(ctx)
		t := time.NewTimer(keyReloadInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// keyReloadInterval spaces reloads of the hint key: stray NOTIFYs with bad
// signatures must not turn into a stream of queries.
const keyReloadInterval = 5 * time.Second
