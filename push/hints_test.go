package push

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// slowRow is hintRow's encoding/json path, the reference for the fast one.
func slowRow(b []byte) (hintRow, error) {
	var pair [2]json.RawMessage
	var r hintRow
	if err := json.Unmarshal(b, &pair); err != nil {
		return r, err
	}
	if err := json.Unmarshal(pair[0], &r.ID); err != nil {
		return r, err
	}
	err := json.Unmarshal(pair[1], &r.UserID)
	return r, err
}

func TestHintRowFastPathAgreesWithJSON(t *testing.T) {
	for _, in := range []string{
		`[42,"alice"]`, `[-1,"a"]`, `[9223372036854775807,"x y"]`, `[1,"é"]`, `[1,"a\"b"]`,
		`[1,"a\\b"]`, `[1,"\u00e9"]`, `[ 1 , "a" ]`, `[1,"a",2]`, `[1,2]`, `["1","a"]`, `[1.5,"a"]`,
		`[+1,"a"]`, `[1,""]`, `[1,"a"`, `[,"a"]`, `[99999999999999999999,"a"]`,
	} {
		var fast hintRow
		ferr := fast.UnmarshalJSON([]byte(in))
		slow, serr := slowRow([]byte(in))
		if (ferr == nil) != (serr == nil) || (ferr == nil && fast != slow) {
			t.Errorf("%s: fast %+v %v, json %+v %v", in, fast, ferr, slow, serr)
		}
	}
}

func FuzzHintRow(f *testing.F) {
	f.Add(`[42,"alice"]`)
	f.Add(`[1,"a\"b"]`)
	f.Fuzz(func(t *testing.T, in string) {
		var fast hintRow
		ferr := fast.UnmarshalJSON([]byte(in))
		slow, serr := slowRow([]byte(in))
		if ferr == nil && serr == nil && fast != slow {
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
			hint{Xmin: 7, Op: "c", Rows: []hintRow{{42, "alice"}, {43, "bob"}}}},
		{`{"v":1,"xmin":8,"op":"b","users":["alice","b\"ob"]}`,
			hint{Xmin: 8, Op: "b", Users: []string{"alice", `b"ob`}}},
		{`{"v":1,"xmin":9,"op":"h","node":"n1"}`, hint{Xmin: 9, Op: "h", Node: "n1"}},
	} {
		got, err := parseHint(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{`{"v":1,"op":"x"}`, `not json`, `{"op":"b","users":[1]}`} {
		if _, err := parseHint(in); !errors.Is(err, errBadHint) {
			t.Errorf("%s: got %v, want errBadHint", in, err)
		}
	}
}
