package push

import (
	"context"
	"time"
)

// prune forgets recorded deletions older than Config.DeletionsRetention, at
// start and every Config.PruneInterval, until ctx ends. Every node prunes;
// the statement is idempotent, so nodes need not agree on who does.
func (s *Server) prune(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		qctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
		n, err := s.q.NotificationDeletedPrune(qctx, s.cfg.DeletionsRetention.Seconds())
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			// A database outage is reported by the listener; this is
			// retried at the next interval.
			s.log.Debug("pruning recorded deletions failed", "err", err)
		case n > 0:
			s.log.Info("pruned recorded deletions", "rows", n, "older_than", s.cfg.DeletionsRetention)
		}
		t.Reset(s.cfg.PruneInterval)
	}
}

// foldInterval is how often the ledger of unread counts
// (notifications_unread_delta) is folded into the per-user totals: a count
// read between two folds sums a user's total and the few ledger rows
// written since.
const foldInterval = time.Second

// foldUnread folds the unread counts' ledger until ctx ends. Every node
// folds; one at a time, the others skip their turn (see the query).
func (s *Server) foldUnread(ctx context.Context) {
	t := time.NewTicker(foldInterval)
	defer t.Stop()
	for {
		qctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
		_, err := s.q.NotificationUnreadFold(qctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			// A database outage is reported by the listener; the ledger
			// stays exact meanwhile and is folded later.
			s.log.Debug("folding unread counts failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
