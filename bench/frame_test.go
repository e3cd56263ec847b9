package bench

import (
	"testing"
)

func TestDecodeFrame(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame string
		want  frameInfo
	}{
		{"ready", `{"type":"ready","user_id":"u","unread":0,"cursor":"5","notifications":[]}`,
			frameInfo{kind: kindReady, seq: -1}},
		{"pgpush created, jsonb spacing", `{"type":"created","notification":{"id":7,"user_id":"bench-x-1","kind":"bench","title":"bench row 41","body":"abc","url":null,"data":{"bench_seq": 41, "bench_sent_ns": 123456789},"created_at":"2026-11-25T18:49:07.123456Z","read_at":null},"unread":3,"cursor":"9"}`,
			frameInfo{kind: kindCreated, seq: 41, sent: 123456789}},
		{"keys in another order and spacing", `{ "notification" : {"data":{"bench_sent_ns":5,"bench_seq":2}}, "type" : "created" }`,
			frameInfo{kind: kindCreated, seq: 2, sent: 5}},
		{"created, not a bench row", `{"type":"created","notification":{"id":1,"data":{}}}`,
			frameInfo{kind: kindCreated, seq: -1}},
		{"bench key with a string value", `{"type":"created","notification":{"data":{"bench_seq":"x","bench_sent_ns":1}}}`,
			frameInfo{kind: kindCreated, seq: -1}},
		{"escaped type goes to encoding/json", `{"type":"cre\u0061ted","notification":{"data":{"bench_seq":3,"bench_sent_ns":4}}}`,
			frameInfo{kind: kindCreated, seq: 3, sent: 4}},
		{"updated", `{"type":"updated","notification":{"data":{"bench_seq":3,"bench_sent_ns":4}}}`,
			frameInfo{kind: kindOther, seq: -1}},
		{"pong", `{"type":"pong"}`, frameInfo{kind: kindOther, seq: -1}},
		{"garbage", `not json`, frameInfo{kind: kindOther, seq: -1}},
	} {
		if got := decodeFrame([]byte(tc.frame)); got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestDecodeFrameDoesNotAllocate(t *testing.T) {
	b := []byte(`{"type":"created","notification":{"id":7,"user_id":"bench-x-1","data":{"bench_seq": 41, "bench_sent_ns": 123456789}},"unread":3,"cursor":"9"}`)
	if n := testing.AllocsPerRun(100, func() { decodeFrame(b) }); n != 0 {
		t.Errorf("%v allocations per frame", n)
	}
}

func TestLatencyOf(t *testing.T) {
	ns := make([]int64, 1000)
	for i := range ns {
		ns[i] = int64(1000-i) * 1e6 // 1000 ms down to 1 ms, unsorted
	}
	l := latencyOf(ns)
	want := Latency{Samples: 1000, Min: 1, Mean: 500.5, P50: 500, P90: 900, P99: 990, P999: 999, Max: 1000}
	if *l != want {
		t.Errorf("got %+v, want %+v", *l, want)
	}
	if latencyOf(nil) != nil {
		t.Error("no samples: want nil")
	}
	one := latencyOf([]int64{2_500_400})
	if one.P50 != 2.5 || one.Max != 2.5 || one.Min != 2.5 {
		t.Errorf("one sample of 2.5004 ms (kept to the µs): %+v", *one)
	}
}
