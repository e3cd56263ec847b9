package web

import (
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"regexp"

	"github.com/pgpush/pgpush/db"
)

var demoUserPattern = regexp.MustCompile(`^[A-Za-z0-9_.@-]{1,64}$`)

// DevRoutes adds, in front of the push server's handler next, what only
// `pgpush dev` serves: the demo page at /, GET /dev/token?user=NAME (a token
// minted by mint) and POST /dev/notifications (an insert form). serve never
// mounts them.
func DevRoutes(q *db.Queries, mint func(user string) (string, error), logger *slog.Logger) func(http.Handler) http.Handler {
	page, err := fs.ReadFile(FS, "demo.html")
	if err != nil {
		panic("demo page missing from the build: " + err.Error())
	}
	return func(next http.Handler) http.Handler {
		mux := http.NewServeMux()
		mux.Handle("/", next)
		mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			w.Write(page)
		})
		mux.HandleFunc("GET /dev/token", func(w http.ResponseWriter, r *http.Request) {
			user := r.URL.Query().Get("user")
			if !demoUserPattern.MatchString(user) {
				devError(w, http.StatusBadRequest, "user must be 1-64 letters, digits or _.@-")
				return
			}
			tok, err := mint(user)
			if err != nil {
				devError(w, http.StatusInternalServerError, err.Error())
				return
			}
			devJSON(w, http.StatusOK, map[string]string{"token": tok})
		})
		mux.HandleFunc("POST /dev/notifications", func(w http.ResponseWriter, r *http.Request) {
			var in struct {
				UserID string          `json:"user_id"`
				Kind   string          `json:"kind"`
				Title  string          `json:"title"`
				Body   string          `json:"body"`
				URL    string          `json:"url"`
				Data   json.RawMessage `json:"data"`
			}
			if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&in); err != nil {
				devError(w, http.StatusBadRequest, "body must be JSON: {user_id, title, body, kind, url}")
				return
			}
			if !demoUserPattern.MatchString(in.UserID) || in.Title == "" {
				devError(w, http.StatusBadRequest, "user_id and title are required")
				return
			}
			if in.Kind == "" {
				in.Kind = "default"
			}
			data := []byte(in.Data)
			if len(data) == 0 || !json.Valid(data) {
				data = []byte("{}")
			}
			var url *string
			if in.URL != "" {
				url = &in.URL
			}
			id, err := q.NotificationInsert(r.Context(), db.NotificationInsertParams{
				UserID: in.UserID, Kind: in.Kind, Title: in.Title, Body: in.Body, Url: url, Data: data,
			})
			if err != nil {
				logger.Error("demo insert", "err", err)
				devError(w, http.StatusInternalServerError, "insert failed")
				return
			}
			devJSON(w, http.StatusCreated, map[string]int64{"id": id})
		})
		return mux
	}
}

func devJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func devError(w http.ResponseWriter, status int, msg string) {
	devJSON(w, status, map[string]string{"error": "bad_request", "message": msg})
}
