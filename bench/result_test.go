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
