// Package bench is pgpush's load generator, behind `pgpush bench`.
//
// A run is one scenario (steady, burst, idle, fanout) against a pgpush server:
// either one the run starts itself (a throwaway PostgreSQL cluster from
// pgcluster, migrated, and the pgpush binary exec'd as `serve` on a free
// loopback port), or a running one given by URL, database URL and JWT secret.
//
// Writers insert rows with plain SQL, as any application does (SPEC §2); each
// row carries, in data, its sequence number in the run and the moment just
// before its INSERT was sent:
//
//	{"bench_seq": 41, "bench_sent_ns": 1234567}
//
// bench_sent_ns counts from the run's start on this process's monotonic
// clock, so the latency of a row on a connection is the moment its frame was
// decoded minus bench_sent_ns, both read from one clock. Row seq goes to user
// seq % users ("bench-<run>-<n>"), so every connection knows in advance
// which rows it must see: each connection records what arrives into a
// preallocated slice indexed by seq / users, which counts duplicates, and
// whatever is still missing at the drain deadline is lost. Percentiles are
// exact (all samples sorted).
//
// Traffic goes to loopback addresses only: the run refuses other hosts.
// /proc readings (CPU seconds, RSS) make the package Linux-only in practice;
// elsewhere they are reported as unavailable.
package bench
