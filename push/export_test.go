package push

// SetBatchItems makes the dispatcher of a server made with c take at most n
// notifications per batch, so that tests can cut one transaction's hints
// into separate batches.
func SetBatchItems(c *Config, n int) { c.batchItems = n }

// SetDispatchQueue makes the dispatcher's queue of a server made with c hold
// n notifications, so that tests can make the listener drop some.
func SetDispatchQueue(c *Config, n int) { c.dispatchQueue = n }
