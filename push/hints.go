package push

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pgpush/pgpush/db"
)

// A hint is one NOTIFY payload from the notifications_notify trigger
// (migrations/00007):
//
//	{"v":2,"xmin":123,"xid":130,"pid":4711,"op":"c","rows":[[42,"alice",1,[...row...]],[43,"bob",0]],"sig":"…"}
//	{"v":2,"xmin":123,"xid":130,"pid":4711,"op":"b","users":["carol"],"deltas":[-40],"sig":"…"}
//	{"v":2,"xid":131,"op":"r"}
//	{"v":2,"xid":132,"op":"r","truncated":true}
//
// op is "c" (created), "u" (updated), "d" (deleted), "b" (bulk: the users
// listed had many rows created, updated or deleted by one statement, to be
// read from the table), "r" (unread counts changed without row hints: a
// TRUNCATE or a recount; "truncated" for a TRUNCATE, migrations/00008, whose
// removed rows the clients learn of by a fresh snapshot) or "h" (a node's
// heartbeat, with "node" naming it).
// xmin is pg_snapshot_xmin of the writing statement's snapshot, xid the
// writing transaction and pid the backend that sent it. A row is [id,
// user_id, delta] with delta its change to the user's unread count, and, for
// a small row an INSERT created, the row's fields (see payloadRow); a bulk
// hint's deltas are its users' changes. Version 1 hints (before 00007) have
// rows of [id, user_id] and neither xid nor deltas.
type hint struct {
	Xmin   uint64    `json:"xmin"`
	Xid    uint64    `json:"xid"`
	PID    uint32    `json:"pid"`
	Op     string    `json:"op"`
	Node   string    `json:"node"`
	Rows   []hintRow `json:"rows"`
	Users  []string  `json:"users"`
	Deltas []int64   `json:"deltas"`
	// Truncated marks the "r" hint of a TRUNCATE.
	Truncated bool   `json:"truncated"`
	Sig       string `json:"sig"`
	// signed is set by verify: the trigger wrote this payload, so its
	// deltas and rows may be used. An unsigned hint only names rows and
	// users, whose rows and counts are read from the table.
	signed bool
}

// hintRow is one [id, user_id, delta, row] item; delta and row are optional.
type hintRow struct {
	ID     int64
	UserID string
	Delta  int64
	Row    json.RawMessage
	// payload is Row decoded, set by decodeRows.
	payload *db.Notification
}

func (r *hintRow) UnmarshalJSON(b []byte) error {
	// The trigger writes [id,"user_id",delta] without spaces; with a plain
	// ASCII user id that is read here directly, which makes a burst's
	// hints several times cheaper to parse on the listener's goroutine.
	if id, user, delta, ok := parseRowFast(b); ok {
		r.ID, r.UserID, r.Delta = id, user, delta
		return nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(b, &items); err != nil {
		return err
	}
	if len(items) < 2 || len(items) > 4 {
		return fmt.Errorf("a row has %d items, not 2 to 4", len(items))
	}
	if err := json.Unmarshal(items[0], &r.ID); err != nil {
		return fmt.Errorf("row id: %w", err)
	}
	if err := json.Unmarshal(items[1], &r.UserID); err != nil {
		return fmt.Errorf("row user_id: %w", err)
	}
	if len(items) > 2 {
		if err := json.Unmarshal(items[2], &r.Delta); err != nil {
			return fmt.Errorf("row delta: %w", err)
		}
	}
	if len(items) > 3 {
		r.Row = items[3]
	}
	return nil
}

// parseRowFast parses [id,"user_id"] or [id,"user_id",delta] when it has no
// spaces, the numbers are plain integers and the user id printable ASCII
// without escapes; otherwise it reports false and the caller uses
// encoding/json.
func parseRowFast(b []byte) (id int64, user string, delta int64, ok bool) {
	if len(b) < 6 || b[0] != '[' || b[len(b)-1] != ']' {
		return 0, "", 0, false
	}
	b = b[1 : len(b)-1]
	comma := bytes.IndexByte(b, ',')
	if comma < 1 || (b[0] != '-' && (b[0] < '0' || b[0] > '9')) {
		return 0, "", 0, false
	}
	id, err := strconv.ParseInt(string(b[:comma]), 10, 64)
	if err != nil {
		return 0, "", 0, false
	}
	s := b[comma+1:]
	if len(s) < 2 || s[0] != '"' {
		return 0, "", 0, false
	}
	end := bytes.IndexByte(s[1:], '"') + 1
	if end < 1 {
		return 0, "", 0, false
	}
	for _, c := range s[1:end] {
		if c < 0x20 || c >= 0x7f || c == '\\' {
			return 0, "", 0, false
		}
	}
	user = string(s[1:end])
	rest := s[end+1:]
	switch {
	case len(rest) == 0:
		return id, user, 0, true
	case rest[0] != ',' || len(rest) < 2 || (rest[1] != '-' && (rest[1] < '0' || rest[1] > '9')):
		return 0, "", 0, false
	}
	delta, err = strconv.ParseInt(string(rest[1:]), 10, 64)
	if err != nil {
		return 0, "", 0, false
	}
	return id, user, delta, true
}

var errBadHint = errors.New("malformed notification payload")

func parseHint(payload string) (hint, error) {
	var h hint
	if err := json.Unmarshal([]byte(payload), &h); err != nil {
		return h, fmt.Errorf("%w: %v", errBadHint, err)
	}
	switch h.Op {
	case "c", "u", "d", "b", "h", "r":
	default:
		return h, fmt.Errorf("%w: unknown op %q", errBadHint, h.Op)
	}
	if h.Deltas != nil && len(h.Deltas) != len(h.Users) {
		return h, fmt.Errorf("%w: %d deltas for %d users", errBadHint, len(h.Deltas), len(h.Users))
	}
	return h, nil
}

// sigSuffix is the length of the `,"sig":"<64 hex digits>"}` that ends a
// signed payload; the signature is over what comes before it.
const sigSuffix = len(`,"sig":"`) + 64 + len(`"}`)

// verify sets h.signed when payload, which h was parsed from, carries the
// HMAC-SHA256 of the rest of it under key and was sent by the backend it
// names (pid, the notification's sender): any role may NOTIFY on the
// channel, and may replay a payload it saw, but only the trigger knows the
// key, and a replay comes from another backend. It reports whether the
// payload had a signature that did not verify (the key may have changed).
func (h *hint) verify(payload string, key []byte, pid uint32) (badSig bool) {
	if h.Sig == "" || h.Xid == 0 {
		return false
	}
	if len(key) == 0 || len(payload) < sigSuffix {
		return true
	}
	body, suffix := payload[:len(payload)-sigSuffix], payload[len(payload)-sigSuffix:]
	if suffix != `,"sig":"`+h.Sig+`"}` {
		return true
	}
	sig, err := hex.DecodeString(h.Sig)
	if err != nil {
		return true
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(body))
	if !hmac.Equal(mac.Sum(nil), sig) {
		return true
	}
	h.signed = h.PID == pid
	return false
}

// decodeRows sets the payload of each row of a signed "c" hint that carries
// its fields, and lets go of the rows' raw fields in every hint (an unsigned
// hint's are not used, and would wait in the dispatcher's queue). A row whose
// fields cannot be used (a time zone offset in seconds, an infinite
// timestamp) keeps none and is read from the table.
func (h *hint) decodeRows() {
	for i := range h.Rows {
		r := &h.Rows[i]
		if len(r.Row) > 0 && h.signed && h.Op == "c" {
			r.payload, _ = payloadRow(r, h.Xid)
		}
		r.Row = nil
	}
}

// payloadRow is the row r carries, [kind, title, body, url, data,
// created_at, read_at] as json_build_array writes them, inserted by
// transaction xid.
func payloadRow(r *hintRow, xid uint64) (*db.Notification, error) {
	var f []json.RawMessage
	if err := json.Unmarshal(r.Row, &f); err != nil {
		return nil, err
	}
	if len(f) != 7 {
		return nil, fmt.Errorf("a row has %d fields, not 7", len(f))
	}
	n := &db.Notification{ID: r.ID, UserID: r.UserID, Data: f[4]}
	n.CreatedXid = pgtype.Uint64{Uint64: xid, Valid: true}
	n.ChangedXid = n.CreatedXid
	for i, dst := range []*string{&n.Kind, &n.Title, &n.Body} {
		if err := json.Unmarshal(f[i], dst); err != nil {
			return nil, err
		}
	}
	if err := json.Unmarshal(f[3], &n.Url); err != nil {
		return nil, err
	}
	if !json.Valid(n.Data) {
		return nil, errors.New("row data is not JSON")
	}
	var err error
	if n.CreatedAt, err = payloadTime(f[5]); err != nil || !n.CreatedAt.Valid {
		return nil, errors.New("row created_at is not a time")
	}
	if n.ReadAt, err = payloadTime(f[6]); err != nil {
		return nil, err
	}
	return n, nil
}

// payloadTime parses a timestamptz as json_build_array writes it: null, or
// ISO 8601 with the session's offset.
func payloadTime(b json.RawMessage) (pgtype.Timestamptz, error) {
	var s *string
	if err := json.Unmarshal(b, &s); err != nil {
		return pgtype.Timestamptz{}, err
	}
	if s == nil {
		return pgtype.Timestamptz{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, *s)
	if err != nil {
		return pgtype.Timestamptz{}, err
	}
	return pgtype.Timestamptz{Time: t, Valid: true}, nil
}
