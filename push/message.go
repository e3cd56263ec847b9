package push

import (
	"strconv"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pgpush/pgpush/db"
)

// Frames are encoded by hand into byte slices: a row's frame is built once and
// the same bytes are written to every connection of its user.

const timeLayout = "2006-01-02T15:04:05.000000Z07:00"

// appendNotification appends the SPEC §3 JSON of n.
func appendNotification(b []byte, n *db.Notification) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendInt(b, n.ID, 10)
	b = append(b, `,"user_id":`...)
	b = appendString(b, n.UserID)
	b = append(b, `,"kind":`...)
	b = appendString(b, n.Kind)
	b = append(b, `,"title":`...)
	b = appendString(b, n.Title)
	b = append(b, `,"body":`...)
	b = appendString(b, n.Body)
	b = append(b, `,"url":`...)
	if n.Url == nil {
		b = append(b, "null"...)
	} else {
		b = appendString(b, *n.Url)
	}
	b = append(b, `,"data":`...)
	if len(n.Data) == 0 {
		b = append(b, "{}"...)
	} else {
		b = append(b, n.Data...) // jsonb text is valid JSON
	}
	b = append(b, `,"created_at":`...)
	b = appendTime(b, n.CreatedAt)
	b = append(b, `,"read_at":`...)
	b = appendTime(b, n.ReadAt)
	return append(b, '}')
}

func appendTime(b []byte, t pgtype.Timestamptz) []byte {
	if !t.Valid || t.InfinityModifier != pgtype.Finite {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = t.Time.UTC().AppendFormat(b, timeLayout)
	return append(b, '"')
}

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, and
// U+2028/U+2029 are escaped so the JSON is also valid JavaScript.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, `\u202`...)
			b = append(b, hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// Cursor is a resume position: a transaction-id watermark such that the
// client has been sent every change made by transactions below it. Clients see
// it as an opaque string.
type Cursor uint64

func (c Cursor) append(b []byte) []byte {
	b = append(b, '"')
	b = strconv.AppendUint(b, uint64(c), 10)
	return append(b, '"')
}

// String returns the cursor's wire form.
func (c Cursor) String() string { return strconv.FormatUint(uint64(c), 10) }

// ParseCursor parses a cursor from its wire form.
func ParseCursor(s string) (Cursor, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || len(s) > 20 {
		return 0, errBadCursor
	}
	return Cursor(v), nil
}

func rowFrame(typ string, n *db.Notification, unread int64, cur Cursor) []byte {
	b := make([]byte, 0, 256+len(n.Title)+len(n.Body)+len(n.Data))
	b = append(b, `{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","notification":`...)
	b = appendNotification(b, n)
	b = append(b, `,"unread":`...)
	b = strconv.AppendInt(b, unread, 10)
	b = append(b, `,"cursor":`...)
	b = cur.append(b)
	return append(b, '}')
}

func deletedFrame(id, unread int64, cur Cursor) []byte {
	b := make([]byte, 0, 80)
	b = append(b, `{"type":"deleted","id":`...)
	b = strconv.AppendInt(b, id, 10)
	b = append(b, `,"unread":`...)
	b = strconv.AppendInt(b, unread, 10)
	b = append(b, `,"cursor":`...)
	b = cur.append(b)
	return append(b, '}')
}

// readyFrame encodes a resume's "ready", which has no "notifications" field
// (a snapshot's is snapshotFrame's).
func readyFrame(userID string, unread int64, cur Cursor) []byte {
	b := make([]byte, 0, 128)
	b = appendReadyHead(b, userID, unread, cur)
	return append(b, '}')
}

// appendReadyHead appends the fields every "ready" starts with, leaving the
// object open.
func appendReadyHead(b []byte, userID string, unread int64, cur Cursor) []byte {
	b = append(b, `{"type":"ready","user_id":`...)
	b = appendString(b, userID)
	b = append(b, `,"unread":`...)
	b = strconv.AppendInt(b, unread, 10)
	b = append(b, `,"cursor":`...)
	return cur.append(b)
}

var pongFrame = []byte(`{"type":"pong"}`)

func errorFrame(code, message string) []byte {
	b := make([]byte, 0, 64+len(message))
	b = append(b, `{"type":"error","error":`...)
	b = appendString(b, code)
	b = append(b, `,"message":`...)
	b = appendString(b, message)
	return append(b, '}')
}

// listJSON encodes the body of GET /v1/notifications.
func listJSON(list []db.Notification, unread int64, next int64) []byte {
	b := make([]byte, 0, 64+512*len(list))
	b = append(b, `{"notifications":[`...)
	for i := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendNotification(b, &list[i])
	}
	b = append(b, `],"unread":`...)
	b = strconv.AppendInt(b, unread, 10)
	b = append(b, `,"next":`...)
	if next == 0 {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, next, 10)
	}
	return append(b, '}')
}
