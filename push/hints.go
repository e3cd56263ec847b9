package push

import (
	"encoding/json"
	"errors"
	"fmt"
)

// A hint is one NOTIFY payload from the notifications_notify trigger:
//
//	{"v":1,"xmin":123,"op":"c","rows":[[42,"alice"],[43,"bob"]]}
//
// op is "c" (created), "u" (updated), "d" (deleted) or "h" (a node's
// heartbeat, with "node" naming it). xmin is pg_snapshot_xmin of the writing
// statement's snapshot.
type hint struct {
	Xmin uint64    `json:"xmin"`
	Op   string    `json:"op"`
	Node string    `json:"node"`
	Rows []hintRow `json:"rows"`
}

// hintRow is one [id, user_id] pair.
type hintRow struct {
	ID     int64
	UserID string
}

func (r *hintRow) UnmarshalJSON(b []byte) error {
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

var errBadHint = errors.New("malformed notification payload")

func parseHint(payload string) (hint, error) {
	var h hint
	if err := json.Unmarshal([]byte(payload), &h); err != nil {
		return h, fmt.Errorf("%w: %v", errBadHint, err)
	}
	switch h.Op {
	case "c", "u", "d", "h":
	default:
		return h, fmt.Errorf("%w: unknown op %q", errBadHint, h.Op)
	}
	return h, nil
}
