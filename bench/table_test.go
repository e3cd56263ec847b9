package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSlowPlansReadsAutoExplain(t *testing.T) {
	t.Parallel()
	const before = "2026-12-02 08:30:14.123 UTC [1] LOG:  duration: 99.0 ms  plan:\n\tQuery Text: SELECT before\n\tSeq Scan on x\n"
	const after = `2026-12-02 08:30:15.000 UTC [2] LOG:  duration: 6.500 ms  plan:
	Query Text: SELECT a
	Seq Scan on notifications  (cost=0.00..1.00 rows=1 width=8)
2026-12-02 08:30:15.100 UTC [2] LOG:  checkpoint starting: immediate
2026-12-02 08:30:15.200 UTC [3] LOG:  duration: 12.250 ms  plan:
	Query Text: SELECT a
	Seq Scan on notifications  (cost=0.00..2.00 rows=1 width=8)
2026-12-02 08:30:15.300 UTC [4] LOG:  duration: 7.000 ms  plan:
	Query Text: SELECT b
	Index Scan using notifications_pkey on notifications
`
	path := filepath.Join(t.TempDir(), "postgres.log")
	if err := os.WriteFile(path, []byte(before+after), 0o600); err != nil {
		t.Fatal(err)
	}
	got := slowPlans(path, int64(len(before)))
	if len(got) != 2 || got[0].Ms != 12.25 || got[1].Ms != 7 ||
		!strings.Contains(got[0].Plan, "Query Text: SELECT a\nSeq Scan on notifications  (cost=0.00..2.00") ||
		!strings.Contains(got[1].Plan, "Index Scan using notifications_pkey") {
		t.Errorf("slowPlans: %+v; want SELECT a at 12.25 ms, then SELECT b at 7 ms", got)
	}
}
