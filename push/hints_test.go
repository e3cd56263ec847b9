package push

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// slowRow is hintRow's encoding/json path, the reference for the fast one.
func slowRow(b []byte) (hintRow, error) {
	var items []json.RawMessage
	var r hintRow
	if err := json.Unmarshal(b, &items); err != nil {
		return r, err
	}
	if len(items) < 2 || len(items) > 4 {
		return r, errors.New("length")
	}
	if err := json.Unmarshal(items[0], &r.ID); err != nil {
		return r, err
	}
	if err := json.Unmarshal(items[1], &r.UserID); err != nil {
		return r, err
	}
	if len(items) > 2 {
		if err := json.Unmarshal(items[2], &r.Delta); err != nil {
			return r, err
		}
	}
	if len(items) > 3 {
		r.Row = items[3]
	}
	return r, nil
}

func TestHintRowFastPathAgreesWithJSON(t *testing.T) {
	for _, in := range []string{
		`[42,"alice"]`, `[-1,"a"]`, `[9223372036854775807,"x y"]`, `[1,"é"]`, `[1,"a\"b"]`,
		`[1,"a\\b"]`, `[1,"\u00e9"]`, `[ 1 , "a" ]`, `[1,"a",2]`, `[1,2]`, `["1","a"]`, `[1.5,"a"]`,
		`[+1,"a"]`, `[1,""]`, `[1,"a"`, `[,"a"]`, `[99999999999999999999,"a"]`,
		`[1,"a",-1]`, `[1,"a",0]`, `[1,"a",1.5]`, `[1,"a",]`, `[1,"a",1,2,3]`, `[1,"a",1,["k","t"]]`,
		`[1,"a","1"]`, `[1,"a",+1]`, `[1,"a"1]`, `[1,"a" ,1]`, `[1,"a",99999999999999999999]`,
	} {
		var fast hintRow
		ferr := fast.UnmarshalJSON([]byte(in))
		slow, serr := slowRow([]byte(in))
		if (ferr == nil) != (serr == nil) || (ferr == nil && !reflect.DeepEqual(fast, slow)) {
			t.Errorf("%s: fast %+v %v, json %+v %v", in, fast, ferr, slow, serr)
		}
	}
}

func FuzzHintRow(f *testing.F) {
	f.Add(`[42,"alice"]`)
	f.Add(`[1,"a\"b"]`)
	f.Add(`[1,"a",-1]`)
	f.Fuzz(func(t *testing.T, in string) {
		var fast hintRow
		ferr := fast.UnmarshalJSON([]byte(in))
		slow, serr := slowRow([]byte(in))
		if ferr == nil && serr == nil && !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%q: fast %+v, json %+v", in, fast, slow)
		}
		if ferr == nil && serr != nil && json.Valid([]byte(in)) {
			t.Fatalf("%q: fast accepted what json refused: %v", in, serr)
		}
	})
}

func BenchmarkParseHint(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"v":1,"xmin":123456,"op":"c","rows":[`)
	for i := range 400 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `[%d,"u%d"]`, 1000000+i, i%100)
	}
	sb.WriteString("]}")
	p := sb.String()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if _, err := parseHint(p); err != nil {
			b.Fatal(err)
		}
	}
}

func TestParseHint(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want hint
	}{
		{`{"v":1,"xmin":7,"op":"c","rows":[[42,"alice"],[43,"bob"]]}`,
			hint{Xmin: 7, Op: "c", Rows: []hintRow{{ID: 42, UserID: "alice"}, {ID: 43, UserID: "bob"}}}},
		{`{"v":2,"xmin":7,"xid":9,"pid":12,"op":"d","rows":[[42,"alice",-1]],"sig":"ab"}`,
			hint{Xmin: 7, Xid: 9, PID: 12, Op: "d", Rows: []hintRow{{ID: 42, UserID: "alice", Delta: -1}}, Sig: "ab"}},
		{`{"v":2,"xmin":7,"xid":9,"op":"b","users":["a","b"],"deltas":[3,-2]}`,
			hint{Xmin: 7, Xid: 9, Op: "b", Users: []string{"a", "b"}, Deltas: []int64{3, -2}}},
		{`{"v":2,"xid":9,"op":"r"}`, hint{Xid: 9, Op: "r"}},
		{`{"v":1,"xmin":8,"op":"b","users":["alice","b\"ob"]}`,
			hint{Xmin: 8, Op: "b", Users: []string{"alice", `b"ob`}}},
		{`{"v":1,"xmin":9,"op":"h","node":"n1"}`, hint{Xmin: 9, Op: "h", Node: "n1"}},
	} {
		got, err := parseHint(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{`{"v":1,"op":"x"}`, `not json`, `{"op":"b","users":[1]}`, `{"op":"b","users":["a"],"deltas":[1,2]}`} {
		if _, err := parseHint(in); !errors.Is(err, errBadHint) {
			t.Errorf("%s: got %v, want errBadHint", in, err)
		}
	}
}

// sign appends the signature the trigger appends to body, a payload without
// its closing brace.
func sign(key []byte, body string) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(body))
	return body + `,"sig":"` + hex.EncodeToString(mac.Sum(nil)) + `"}`
}

func TestHintSignature(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	body := `{"v":2,"xmin":7,"xid":9,"pid":12,"op":"c","rows":[[42,"alice",1,["k","t","b",null,{"a": 1},"2026-12-02T13:47:22.5+01:00",null]]]`
	payload := sign(key, body)
	for _, tc := range []struct {
		name        string
		payload     string
		key         []byte
		pid         uint32
		signed, bad bool
	}{
		{"the trigger's", payload, key, 12, true, false},
		{"replayed by another backend", payload, key, 13, false, false},
		{"another key", payload, []byte("another key"), 12, false, true},
		{"no key", payload, nil, 12, false, true},
		{"tampered", strings.Replace(payload, `"t"`, `"T"`, 1), key, 12, false, true},
		{"unsigned", body + "}", key, 12, false, false},
		{"forged signature", body + `,"sig":"` + strings.Repeat("0", 64) + `"}`, key, 12, false, true},
		{"short signature", body + `,"sig":"00"}`, key, 12, false, true},
	} {
		h, err := parseHint(tc.payload)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		bad := h.verify(tc.payload, tc.key, tc.pid)
		if h.signed != tc.signed || bad != tc.bad {
			t.Errorf("%s: signed %v, bad signature %v; want %v, %v", tc.name, h.signed, bad, tc.signed, tc.bad)
		}
		h.decodeRows()
		if got := h.Rows[0].payload != nil; got != tc.signed {
			t.Errorf("%s: row decoded %v, want %v", tc.name, got, tc.signed)
		}
	}

	h, _ := parseHint(payload)
	h.verify(payload, key, 12)
	h.decodeRows()
	n := h.Rows[0].payload
	if n.ID != 42 || n.UserID != "alice" || n.Kind != "k" || n.Title != "t" || n.Body != "b" || n.Url != nil ||
		string(n.Data) != `{"a": 1}` || n.ReadAt.Valid || n.ChangedXid.Uint64 != 9 ||
		!n.CreatedAt.Time.Equal(time.Date(2026, 12, 2, 12, 47, 22, 500_000_000, time.UTC)) {
		t.Errorf("decoded row %+v", n)
	}
}

func TestPayloadRowRefusesWhatItCannotShowExactly(t *testing.T) {
	for _, row := range []string{
		`["k","t","b",null,{},"infinity",null]`,
		`["k","t","b",null,{},"2026-12-02T13:47:22+00:53:28",null]`,
		`["k","t","b",null,{},null,null]`,
		`["k","t","b",7,{},"2026-12-02T13:47:22+00:00",null]`,
		`["k","t","b",null,{},"2026-12-02T13:47:22+00:00"]`,
		`["k","t","b",null,{},"2026-12-02T13:47:22+00:00",null,1]`,
	} {
		if n, err := payloadRow(&hintRow{ID: 1, UserID: "a", Row: []byte(row)}, 9); err == nil {
			t.Errorf("%s: decoded as %+v", row, n)
		}
	}
}
