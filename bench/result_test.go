package bench

import (
	"strings"
	"testing"
	"time"
)

// Each second is summarised on its own (empty seconds left out), and the
// seconds from lateAfter on together.
func TestBySecondOf(t *testing.T) {
	t.Parallel()
	msec := int64(time.Millisecond)
	bySecond := make([][]int64, 7)
	bySecond[0] = []int64{30 * msec, 10 * msec, 20 * msec}
	bySecond[2] = []int64{1 * msec}
	bySecond[5] = []int64{4 * msec, 2 * msec}
	bySecond[6] = []int64{3 * msec}
	secs, late := bySecondOf(bySecond)
	want := []SecondLatency{{0, 3, 20, 30}, {2, 1, 1, 1}, {5, 2, 2, 4}, {6, 1, 3, 3}}
	if len(secs) != len(want) {
		t.Fatalf("seconds %+v, want %+v", secs, want)
	}
	for i := range want {
		if secs[i] != want[i] {
			t.Errorf("second %d: %+v, want %+v", i, secs[i], want[i])
		}
	}
	if late == nil || late.Samples != 3 || late.P50 != 3 || late.Max != 4 || late.Min != 2 {
		t.Errorf("from 5 s on: %+v, want the 3 samples of seconds 5 and 6", late)
	}
	if _, late := bySecondOf(bySecond[:5]); late != nil {
		t.Errorf("a 5-second phase has rows from 5 s on: %+v", late)
	}
	line := bySecondLine(secs, late)
	if !strings.Contains(line, " 0s 20.0/30.0 2s 1.0/1.0") || !strings.Contains(line, "from 5s on: p50 3.000  p99 4.000  (3 samples)") {
		t.Errorf("text:\n%s", line)
	}
}

// The side-by-side table gives PostgreSQL's CPU per row by role, in the
// order of pgpush's figures, and leaves out what used nothing on either side.
func TestWriteRoleRows(t *testing.T) {
	t.Parallel()
	pgpush := &Result{Rows: 1000, Postgres: &PostgresStats{CPUByRole: map[string]float64{
		roleWriters: 0.6, rolePgpush: 0.08, "walwriter": 0.0001, "checkpointer": 0}}}
	floor := &Result{Rows: 2000, Postgres: &PostgresStats{CPUByRole: map[string]float64{
		roleWriters: 0.8, roleFloor: 0.1, "checkpointer": 0}}}
	var b strings.Builder
	writeRoleRows(&b, pgpush, floor)
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	want := [][]string{
		{roleWriters, "0.400", "0.600", "1.50×"},
		{rolePgpush, "0.000", "0.080", "—"},
		{roleFloor, "0.050", "0.000", "0.00×"},
	}
	if len(lines) != len(want) {
		t.Fatalf("%d rows, want %d:\n%s", len(lines), len(want), b.String())
	}
	for i, w := range want {
		f := strings.Fields(lines[i])
		if got := f[len(f)-3:]; strings.Join(got, " ") != strings.Join(w[1:], " ") || !strings.HasPrefix(strings.TrimSpace(lines[i]), w[0]) {
			t.Errorf("row %d %q, want %v", i, lines[i], w)
		}
	}
}
