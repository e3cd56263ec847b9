package push

// SetBatchItems makes the dispatcher of a server made with c take at most n
// notifications per batch, so that tests can cut one transaction's hints
// into separate batches.
func SetBatchItems(c *Config, n int) { c.batchItems = n }

// SetDispatchQueue makes the dispatcher's queue of a server made with c hold
// n notifications, so that tests can make the listener drop some.
func SetDispatchQueue(c *Config, n int) { c.dispatchQueue = n }

// Quiet reports whether s has nothing on its way to its clients as of now:
// the listener is connected, the dispatcher has no notification queued or
// in hand, and no connection has a writer running or a catch-up pending.
// A change committed later may still come; tests call it once their writes
// are done.
func Quiet(s *Server) bool {
	return s.lis.connected.Load() && s.disp.idle() && !s.hub.working()
}
