package bench

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// frameKind is the type of a server frame, as far as bench cares.
type frameKind uint8

const (
	kindOther frameKind = iota
	kindReady
	kindCreated
)

// frameInfo is what bench needs from a frame: its type and, for a created
// bench row, the row's sequence number and send time.
type frameInfo struct {
	kind frameKind
	seq  int64 // -1 when the row is not a bench row
	sent int64
}

var (
	keyType = []byte(`"type"`)
	keySeq  = []byte(`"bench_seq"`)
	keySent = []byte(`"bench_sent_ns"`)
)

// decodeFrame reads a frame without a full JSON decode: a frame is about
// 600 bytes and a run decodes hundreds of thousands while it measures
// latency, so the client must stay cheap. It finds the first "type" key (the
// frame's own: pgpush writes it first, and the bench's titles and bodies
// hold no quotes) and the two bench keys in the row's data. Frames the fast
// path cannot read go through encoding/json.
func decodeFrame(b []byte) frameInfo {
	fi := frameInfo{seq: -1}
	typ, ok := stringField(b, keyType)
	if !ok {
		return decodeFrameJSON(b)
	}
	switch string(typ) { // no allocation: the compiler compares in place
	case "ready":
		fi.kind = kindReady
		return fi
	case "created":
		fi.kind = kindCreated
	default:
		return fi
	}
	seq, ok1 := intField(b, keySeq)
	sent, ok2 := intField(b, keySent)
	if !ok1 || !ok2 {
		if bytes.Contains(b, keySeq) {
			return decodeFrameJSON(b) // present but not where the fast path looks
		}
		return fi
	}
	fi.seq, fi.sent = seq, sent
	return fi
}

// valueAt returns b after key and the colon that follows it, with the
// whitespace around the colon skipped (jsonb writes `"k": v`).
func valueAt(b, key []byte) ([]byte, bool) {
	i := bytes.Index(b, key)
	if i < 0 {
		return nil, false
	}
	b = skipSpace(b[i+len(key):])
	if len(b) == 0 || b[0] != ':' {
		return nil, false
	}
	return skipSpace(b[1:]), true
}

func skipSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r') {
		b = b[1:]
	}
	return b
}

// stringField returns the value of key if it is a string without escapes.
func stringField(b, key []byte) ([]byte, bool) {
	v, ok := valueAt(b, key)
	if !ok || len(v) == 0 || v[0] != '"' {
		return nil, false
	}
	v = v[1:]
	end := bytes.IndexByte(v, '"')
	if end < 0 || bytes.IndexByte(v[:end], '\\') >= 0 {
		return nil, false
	}
	return v[:end], true
}

// intField returns the value of key if it is a non-negative integer.
func intField(b, key []byte) (int64, bool) {
	v, ok := valueAt(b, key)
	if !ok {
		return 0, false
	}
	var n int64
	i := 0
	for ; i < len(v) && i < 19 && v[i] >= '0' && v[i] <= '9'; i++ {
		n = n*10 + int64(v[i]-'0')
	}
	if i == 0 || (i < len(v) && v[i] >= '0' && v[i] <= '9') {
		return 0, false
	}
	return n, true
}

// decodeFrameJSON is the slow path, for frames laid out in ways the fast
// path does not expect.
func decodeFrameJSON(b []byte) frameInfo {
	var f struct {
		Type         string `json:"type"`
		Notification struct {
			Data struct {
				Seq  json.RawMessage `json:"bench_seq"`
				Sent json.RawMessage `json:"bench_sent_ns"`
			} `json:"data"`
		} `json:"notification"`
	}
	fi := frameInfo{seq: -1}
	if json.Unmarshal(b, &f) != nil {
		return fi
	}
	switch f.Type {
	case "ready":
		fi.kind = kindReady
	case "created":
		fi.kind = kindCreated
		d := f.Notification.Data
		seq, err1 := strconv.ParseInt(string(d.Seq), 10, 64)
		sent, err2 := strconv.ParseInt(string(d.Sent), 10, 64)
		if err1 == nil && err2 == nil && seq >= 0 {
			fi.seq, fi.sent = seq, sent
		}
	}
	return fi
}
