package push

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// A hint is one NOTIFY payload from the notifications_notify trigger:
//
//	{"v":1,"xmin":123,"op":"c","rows":[[42,"alice"],[43,"bob"]]}
//	{"v":1,"xmin":123,"op":"b","users":["carol"]}
//
// op is "c" (created), "u" (updated), "d" (deleted), "b" (bulk: the users
// listed had many rows created or updated by one statement, to be read from
// the table) or "h" (a node's heartbeat, with "node" naming it). xmin is
// pg_snapshot_xmin of the writing statement's snapshot.
type hint struct {
	Xmin  uint64    `json:"xmin"`
	Op    string    `json:"op"`
	Node  string    `json:"node"`
	Rows  []hintRow `json:"rows"`
	Users []string  `json:"users"`
}

// hintRow is one [id, user_id] pair.
type hintRow struct {
	ID     int64
	UserID string
}

func (r *hintRow) UnmarshalJSON(b []byte) error {
	// The trigger writes [id,"user_id"] without spaces; with a plain ASCII
	// user id that is read here directly, which makes a burst's hints
	// several times cheaper to parse on the listener's goroutine.
	if id, user, ok := parseRowFast(b); ok {
		r.ID, r.UserID = id, user
		return nil
	}
	var pair [2]json.RawMessage
	if err := json.Unmarshal(b, &pair); err != nil {
		return err
	}
	if err := json.Unmarshal(pair[0], &r.ID); err != nil {
		return fmt.Errorf("row id: %w", err)
	}
	if err := json.Unmarshal(pair[1], &r.UserID); err != nil {
		return fmt.Errorf("row user_id: %w", err)
	}
	return nil
}

// parseRowFast parses [id,"user_id"] when it has no spaces, the id is a
// plain integer and the user id printable ASCII without escapes; otherwise it
// reports false and the caller uses encoding/json.
func parseRowFast(b []byte) (int64, string, bool) {
	if len(b) < 6 || b[0] != '[' || b[len(b)-1] != ']' {
		return 0, "", false
	}
	comma := bytes.IndexByte(b, ',')
	if comma < 2 || (b[1] != '-' && (b[1] < '0' || b[1] > '9')) {
		return 0, "", false
	}
	id, err := strconv.ParseInt(string(b[1:comma]), 10, 64)
	if err != nil {
		return 0, "", false
	}
	s := b[comma+1 : len(b)-1]
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return 0, "", false
	}
	s = s[1 : len(s)-1]
	for _, c := range s {
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return 0, "", false
		}
	}
	return id, string(s), true
}

var errBadHint = errors.New("malformed notification payload")

func parseHint(payload string) (hint, error) {
	var h hint
	if err := json.Unmarshal([]byte(payload), &h); err != nil {
		return h, fmt.Errorf("%w: %v", errBadHint, err)
	}
	switch h.Op {
	case "c", "u", "d", "b", "h":
	default:
		return h, fmt.Errorf("%w: unknown op %q", errBadHint, h.Op)
	}
	return h, nil
}
