package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pgpush/pgpush/db"
	"github.com/pgpush/pgpush/push/auth"
)

// maxBodyBytes caps request bodies.
const maxBodyBytes = 64 << 10

var errBadCursor = errors.New("cursor is not one this server issued")

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/ws", s.handleWS)
	mux.HandleFunc("/v1/notifications", s.handleList)
	mux.HandleFunc("/v1/notifications/read", s.handleRead)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
	})
	mux.HandleFunc("/readyz", s.handleReady)
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{}))
	for path, name := range assets {
		mux.Handle(path, assetHandler(name))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such route: "+r.URL.Path)
	})
	return s.cors(s.bodyDeadline(mux))
}

// writeJSON writes a JSON body.
func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(body)
}

// writeError writes the {"error":…,"message":…} body every failure uses.
func writeError(w http.ResponseWriter, status int, code, message string) {
	b := make([]byte, 0, 64+len(message))
	b = append(b, `{"error":`...)
	b = appendString(b, code)
	b = append(b, `,"message":`...)
	b = appendString(b, message)
	b = append(b, '}')
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="pgpush"`)
	}
	writeJSON(w, status, b)
}

// tokenProblem says what is wrong with a token without repeating it.
func tokenProblem(err error) string {
	if errors.Is(err, auth.ErrUnauthorized) {
		return err.Error()
	}
	return "invalid token"
}

// authenticate returns the token's claims or writes the 401.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, allowQuery bool) (auth.Claims, bool) {
	token, err := auth.FromRequest(r, allowQuery)
	if err == nil {
		var claims auth.Claims
		if claims, err = s.verifier.Verify(token); err == nil {
			return claims, true
		}
	}
	s.metrics.rejected.WithLabelValues("unauthorized").Inc()
	writeError(w, http.StatusUnauthorized, "unauthorized", tokenProblem(err))
	return auth.Claims{}, false
}

func allowMethod(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method || (method == http.MethodGet && r.Method == http.MethodHead) {
		return true
	}
	w.Header().Set("Allow", method)
	writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed here; use "+method)
	return false
}

func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodGet) {
		return
	}
	// Checked before anything else, so a foreign page learns nothing (not
	// even whether its token is good) and never takes a connection slot.
	// websocket.Accept checks again with the same rule.
	if !s.upgradeOriginAllowed(r) {
		s.metrics.rejected.WithLabelValues("origin").Inc()
		writeError(w, http.StatusForbidden, "origin_not_allowed",
			"this origin may not open a WebSocket here; add it to PGPUSH_ALLOWED_ORIGINS")
		return
	}
	claims, ok := s.authenticate(w, r, true)
	if !ok {
		return
	}
	var cursor *Cursor
	if v := r.URL.Query().Get("cursor"); v != "" {
		c, err := ParseCursor(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad_cursor", err.Error())
			return
		}
		cursor = &c
	}
	if !s.admit() {
		writeError(w, http.StatusServiceUnavailable, "shutting_down", "this node is shutting down; connect to another")
		return
	}
	ss := newSession(s, claims.Subject)
	if err := s.hub.add(ss.c); err != nil {
		s.sessions.Done()
		// Refused before the upgrade, where an HTTP status is still
		// possible: 429 for the per-user limit, 503 for a full node.
		status, reason := http.StatusServiceUnavailable, "node_full"
		if errors.Is(err, errUserConnLimit) {
			status, reason = http.StatusTooManyRequests, "too_many_connections"
		}
		s.metrics.rejected.WithLabelValues(reason).Inc()
		writeError(w, status, reason, err.Error())
		return
	}

	hj := &hijacker{ResponseWriter: w, timeout: s.cfg.WriteTimeout}
	ws, err := websocket.Accept(hj, r, &websocket.AcceptOptions{OriginPatterns: s.cfg.AllowedOrigins})
	if err != nil {
		s.hub.remove(ss.c)
		s.sessions.Done()
		s.metrics.rejected.WithLabelValues("upgrade").Inc()
		return // Accept wrote the response, e.g. 403 for a foreign origin
	}
	ws.SetReadLimit(s.cfg.ReadLimit)
	ss.sock = hj.sock
	// run returns after the initial sync; the connection lives on in its
	// own goroutines, and net/http lets go of this request.
	ss.run(ws, cursor, tokenDeadline(claims), s.sessions.Done)
}

// tokenDeadline is when a connection opened or refreshed with claims must
// close with 4001: when Verify starts rejecting the token (exp plus the
// leeway), so that a client reconnecting with the same token is refused
// rather than admitted and closed again at once. Zero: never.
func tokenDeadline(c auth.Claims) time.Time {
	if !c.ValidUntil.IsZero() {
		return c.ValidUntil
	}
	return c.ExpiresAt // a Verifier that does not set ValidUntil
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodGet) {
		return
	}
	claims, ok := s.authenticate(w, r, false)
	if !ok {
		return
	}
	q := r.URL.Query()
	limit, err := intParam(q, "limit", 20, 1, 100)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	before, err := intParam(q, "before", math.MaxInt64, 1, math.MaxInt64)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.StatementTimeout)
	defer cancel()
	rows, err := s.q.NotificationListBefore(ctx, db.NotificationListBeforeParams{
		UserID: claims.Subject, Before: before, RowLimit: int32(limit + 1),
	})
	if err != nil {
		s.internalError(w, "list notifications", err)
		return
	}
	unread, err := s.q.NotificationUnreadCount(ctx, claims.Subject)
	if err != nil {
		s.internalError(w, "count unread", err)
		return
	}
	var next int64
	if len(rows) > int(limit) {
		rows = rows[:limit]
		next = rows[len(rows)-1].Notification.ID
	}
	list := make([]db.Notification, len(rows))
	for i := range rows {
		list[i] = rows[i].Notification
	}
	writeJSON(w, http.StatusOK, listJSON(list, unread, next))
}

// intParam parses an optional integer query parameter within [lo, hi].
func intParam(q url.Values, name string, def, lo, hi int64) (int64, error) {
	v := q.Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		if hi == math.MaxInt64 {
			return 0, errors.New(name + " must be a whole number of at least " + strconv.FormatInt(lo, 10))
		}
		return 0, errors.New(name + " must be a whole number from " + strconv.FormatInt(lo, 10) + " to " + strconv.FormatInt(hi, 10))
	}
	return n, nil
}

type readRequest struct {
	IDs *[]int64 `json:"ids"`
	All bool     `json:"all"`
}

func (s *Server) handleRead(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodPost) {
		return
	}
	claims, ok := s.authenticate(w, r, false)
	if !ok {
		return
	}
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	var req readRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(&req)
	if err == nil && dec.More() {
		err = errors.New("trailing data")
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", `body must be {"ids":[…]} or {"all":true}: `+jsonProblem(err))
		return
	}
	switch {
	case req.All && req.IDs != nil:
		writeError(w, http.StatusBadRequest, "bad_request", `give either "ids" or "all", not both`)
		return
	case !req.All && (req.IDs == nil || len(*req.IDs) == 0):
		writeError(w, http.StatusBadRequest, "bad_request", `body must be {"ids":[…]} with at least one id, or {"all":true}`)
		return
	case req.IDs != nil && len(*req.IDs) > s.cfg.MaxReadIDs:
		writeError(w, http.StatusBadRequest, "too_many_ids", "at most "+strconv.Itoa(s.cfg.MaxReadIDs)+" ids per request")
		return
	}
	var ids []int64
	if req.IDs != nil {
		ids = *req.IDs
	}
	updated, unread, err := s.markRead(r.Context(), claims.Subject, ids, req.All)
	if err != nil {
		s.internalError(w, "mark read", err)
		return
	}
	b := append([]byte(`{"updated":`), strconv.FormatInt(updated, 10)...)
	b = append(b, `,"unread":`...)
	b = strconv.AppendInt(b, unread, 10)
	writeJSON(w, http.StatusOK, append(b, '}'))
}

// bodyDeadline bounds the reading of every request body (see
// Config.RequestReadTimeout) with a read deadline on the connection, which
// also covers the body net/http discards after a handler that did not read
// it. The WebSocket route is left alone: the deadline would outlive the
// hijack and cut the socket.
func (s *Server) bodyDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 && r.URL.Path != "/v1/ws" {
			// An error means a wrapped ResponseWriter without Unwrap; the
			// body is then bounded by size alone.
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.RequestReadTimeout))
		}
		next.ServeHTTP(w, r)
	})
}

// readBody reads a request body of at most maxBodyBytes, or writes the error
// response (413, 408 or 400) and returns false.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err == nil {
		// Lift bodyDeadline's deadline: net/http reads on in the background
		// once the body is in, and a deadline hit there would cancel the
		// request's context while its query runs.
		_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
		return body, true
	}
	var tooLarge *http.MaxBytesError
	var netErr net.Error
	switch {
	case errors.As(err, &tooLarge):
		s.metrics.rejected.WithLabelValues("too_large").Inc()
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", "request body is larger than 64 KiB")
	case errors.As(err, &netErr) && netErr.Timeout():
		s.metrics.rejected.WithLabelValues("timeout").Inc()
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusRequestTimeout, "timeout", "the request body did not arrive in time")
	default:
		writeError(w, http.StatusBadRequest, "bad_request", "could not read the request body")
	}
	return nil, false
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	switch {
	case !s.Ready():
		writeError(w, http.StatusServiceUnavailable, "not_ready", "the LISTEN connection is down")
	case s.pool.Ping(ctx) != nil:
		writeError(w, http.StatusServiceUnavailable, "not_ready", "the database does not answer")
	default:
		writeJSON(w, http.StatusOK, []byte(`{"status":"ready"}`))
	}
}

func (s *Server) internalError(w http.ResponseWriter, what string, err error) {
	s.log.Error(what+" failed", "err", err)
	writeError(w, http.StatusInternalServerError, "internal", what+" failed; try again")
}

// cors answers preflights and sets CORS headers on /v1 HTTP responses for the
// allowed origins only; a preflight from any other origin gets a 403.
// Credentials are bearer tokens, never cookies, so Allow-Credentials is never
// sent. Every /v1 response varies by Origin, so a cache never hands one
// origin's answer to another.
func (s *Server) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/") {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Add("Vary", "Origin")
		origin := r.Header.Get("Origin")
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		allowed := s.originAllowed(origin)
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			if !allowed {
				s.metrics.rejected.WithLabelValues("origin").Inc()
				writeError(w, http.StatusForbidden, "origin_not_allowed", "this origin may not call this API; add it to PGPUSH_ALLOWED_ORIGINS")
				return
			}
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Methods", "GET, POST")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if allowed {
			h.Set("Access-Control-Allow-Origin", origin)
		}
		next.ServeHTTP(w, r)
	})
}

// originAllowed reports whether an Origin header value matches
// AllowedOrigins.
func (s *Server) originAllowed(origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	for _, p := range s.cfg.AllowedOrigins {
		if originMatches(p, u) {
			return true
		}
	}
	return false
}

// upgradeOriginAllowed applies websocket.Accept's origin rule: no Origin (not
// a browser), the request's own host, or a match in AllowedOrigins.
func (s *Server) upgradeOriginAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	return strings.EqualFold(u.Host, r.Host) || s.originAllowed(origin)
}

// originMatches matches one AllowedOrigins pattern against an origin the way
// websocket.Accept does: case-insensitive path.Match on the host (with its
// port, if any), or on scheme://host for a pattern with a scheme.
func originMatches(pattern string, u *url.URL) bool {
	target := u.Host
	if strings.Contains(pattern, "://") {
		target = u.Scheme + "://" + u.Host
	}
	ok, _ := path.Match(strings.ToLower(pattern), strings.ToLower(target))
	return ok
}
