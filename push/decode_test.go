package push

import (
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pgpush/pgpush/db"
)

func TestDecodeClientMessage(t *testing.T) {
	for _, tc := range []struct {
		in   string
		code string
	}{
		{`{"type":"ping"}`, ""},
		{`{"type":"read_all"}`, ""},
		{`{"type":"read","ids":[1,2,3]}`, ""},
		{`{"type":"auth","token":"x.y.z"}`, ""},
		{`not json`, codeBadMessage},
		{`[]`, codeBadMessage},
		{`{"type":1}`, codeBadMessage},
		{`{}`, codeBadMessage},
		{`{"type":"read"}`, codeBadMessage},
		{`{"type":"read","ids":["1"]}`, codeBadMessage},
		{`{"type":"read","ids":[1e99]}`, codeBadMessage},
		{`{"type":"read","ids":[99999999999999999999]}`, codeBadMessage},
		{`{"type":"auth"}`, codeBadMessage},
		{`{"type":"subscribe"}`, codeUnknownType},
		{"{\"type\":\"ping\xff\"}", codeBadMessage},
	} {
		_, code, msg := decodeClientMessage([]byte(tc.in), 3)
		if code != tc.code {
			t.Errorf("%q: code %q (%s), want %q", tc.in, code, msg, tc.code)
		}
		if code != "" && msg == "" {
			t.Errorf("%q: error without a message", tc.in)
		}
	}
	if _, code, _ := decodeClientMessage([]byte(`{"type":"read","ids":[1,2,3,4]}`), 3); code != codeTooManyIDs {
		t.Errorf("4 ids past a limit of 3: code %q", code)
	}
}

// FuzzDecodeClientMessage checks that no input panics the decoder, that what
// it accepts is a known type, and that an error frame for it is valid JSON.
func FuzzDecodeClientMessage(f *testing.F) {
	for _, s := range []string{`{"type":"ping"}`, `{"type":"read","ids":[1]}`, `{"type":"auth","token":"a"}`, `{"type":"read_all"}`, `{`, "\xff", `{"type":"read","ids":[1e400]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, code, msg := decodeClientMessage(b, 100)
		if code == "" {
			switch m.Type {
			case "ping", "read_all", "auth", "read":
			default:
				t.Fatalf("accepted type %q", m.Type)
			}
			if m.Type == "read" && (len(m.IDs) == 0 || len(m.IDs) > 100) {
				t.Fatalf("accepted %d ids", len(m.IDs))
			}
			return
		}
		var v map[string]any
		if err := json.Unmarshal(errorFrame(code, msg), &v); err != nil {
			t.Fatalf("error frame is not JSON: %v", err)
		}
	})
}

// FuzzAppendString checks the hand-written JSON string encoder against
// encoding/json on any input.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\" back\\slash", "\n\t\x00\x1f", "é ü 日本", "\xff\xfe", "\u2028\u2029", "<script>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q encodes to invalid JSON %s: %v", s, b, err)
		}
		want := s
		if !utf8.ValidString(s) {
			want = string([]rune(s)) // invalid bytes become U+FFFD
		}
		if got != want {
			t.Fatalf("%q round-trips to %q", s, got)
		}
	})
}

func TestRowFrameIsValidJSON(t *testing.T) {
	url := "https://example.com/?a=1&b=<2>"
	n := db.Notification{
		ID: 7, UserID: "al\"ice", Kind: "k", Title: "t\n", Body: "b\x01", Url: &url,
		Data: []byte(`{"x": [1, 2]}`),
	}
	n.CreatedAt = pgtype.Timestamptz{Valid: true}
	var v struct {
		Type         string         `json:"type"`
		Notification map[string]any `json:"notification"`
		Unread       int64          `json:"unread"`
		Cursor       string         `json:"cursor"`
	}
	if err := json.Unmarshal(rowFrame("created", &n, 3, 42), &v); err != nil {
		t.Fatal(err)
	}
	if v.Type != "created" || v.Unread != 3 || v.Cursor != "42" || v.Notification["user_id"] != "al\"ice" ||
		v.Notification["url"] != url || v.Notification["read_at"] != nil {
		t.Fatalf("decoded %+v", v)
	}
}
