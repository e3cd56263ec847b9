package push

import (
	"testing"
	"time"
)

func TestIsStale(t *testing.T) {
	const iv = time.Second
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	for _, tc := range []struct {
		name             string
		now, heard, beat time.Time
		want             bool
	}{
		{"heard recently, no heartbeat", at(2 * iv), at(0), time.Time{}, false},
		{"a heartbeat sent, not back yet", at(3 * iv), at(0), at(1500 * time.Millisecond), false},
		{"a heartbeat sent, not back within two intervals", at(4 * iv), at(0), at(1500 * time.Millisecond), true},
		{"the heartbeat came back", at(10 * iv), at(2 * iv), at(1500 * time.Millisecond), false},
		// The pool could not send one: silence alone counts only past the limit.
		{"no heartbeat could be sent, 9s of silence", at(9 * iv), at(0), time.Time{}, false},
		{"no heartbeat could be sent, 16s of silence", at(16 * iv), at(0), time.Time{}, true},
	} {
		if got := isStale(tc.now, tc.heard, tc.beat, iv); got != tc.want {
			t.Errorf("%s: isStale = %v, want %v", tc.name, got, tc.want)
		}
	}
}
