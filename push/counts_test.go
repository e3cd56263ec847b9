package push

import (
	"errors"
	"reflect"
	"testing"
)

func TestParseSnapshot(t *testing.T) {
	for in, want := range map[string]*pgSnapshot{
		"10:10:":        {xmin: 10, xmax: 10},
		"10:20:12,15":   {xmin: 10, xmax: 20, xip: []uint64{12, 15}},
		"5:9:5":         {xmin: 5, xmax: 9, xip: []uint64{5}},
		"0:0:":          {},
		"7:4294967999:": {xmin: 7, xmax: 4294967999},
	} {
		got, err := parseSnapshot(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%q: got %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "10:20", "10:20:1:2", "a:20:", "20:10:", "10:20:9", "10:20:20", "10:20:x", "10:20:12,"} {
		if _, err := parseSnapshot(in); !errors.Is(err, errBadSnapshot) {
			t.Errorf("%q: got %v, want errBadSnapshot", in, err)
		}
	}
}

func TestSnapshotSeesWhatCommittedBeforeIt(t *testing.T) {
	s := &pgSnapshot{xmin: 10, xmax: 20, xip: []uint64{12, 15}}
	for xid, want := range map[uint64]bool{
		1: true, 9: true, // finished before the oldest running one
		10: true, 11: true, 13: true, 19: true, // committed before it was taken
		12: false, 15: false, // running then: committed after
		20: false, 21: false, 1 << 40: false, // started after
	} {
		if got := s.sees(xid); got != want {
			t.Errorf("sees(%d) = %v, want %v", xid, got, want)
		}
	}
}

// TestUnreadCountsAddOnlyWhatTheirSnapshotMissed replays hints of
// transactions committed around a count's read, in commit order: those the
// snapshot saw are in the count already, the others are added once each.
func TestUnreadCountsAddOnlyWhatTheirSnapshotMissed(t *testing.T) {
	c := unreadCounts{"alice": {n: 5, seen: &pgSnapshot{xmin: 100, xmax: 110, xip: []uint64{103}}}}
	for _, h := range []struct {
		xid   uint64
		delta int64
	}{
		{99, 1},   // committed before the read, hint processed after it: seen
		{105, 1},  // likewise
		{103, 1},  // running at the read, committed after: +1
		{110, -1}, // started after: -1
		{120, 1},  // +1
		{121, 0},
	} {
		c.add("alice", h.xid, h.delta)
	}
	c.add("bob", 130, 1) // not kept: nothing to do
	if got := c["alice"].n; got != 6 {
		t.Errorf("alice's count = %d, want 6", got)
	}
	if _, ok := c["bob"]; ok {
		t.Error("a count was made up for bob")
	}
}
