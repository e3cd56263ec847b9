package push

import (
	"bytes"
	"io/fs"
	"net/http"
	"time"

	"github.com/pgpush/pgpush/web"
)

// assets are the browser files served under /v1/, read once from the
// embedded web.FS.
var assets = map[string]string{
	"/v1/client.js":   "client.js",
	"/v1/client.d.ts": "client.d.ts",
	"/v1/bell.js":     "bell.js",
}

// assetHandler serves one embedded file with its content type, a short
// cache lifetime and conditional requests (ETag-less, by modification time
// of the build).
func assetHandler(name string) http.Handler {
	b, err := fs.ReadFile(web.FS, name)
	if err != nil {
		panic("push: embedded asset missing: " + name) // a build error, not a runtime one
	}
	ctype := "text/javascript; charset=utf-8"
	if name == "client.d.ts" {
		ctype = "application/typescript; charset=utf-8"
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET")
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed here; use GET")
			return
		}
		h := w.Header()
		h.Set("Content-Type", ctype)
		h.Set("Cache-Control", "public, max-age=300")
		h.Set("X-Content-Type-Options", "nosniff")
		// The client is a module other origins' pages import.
		h.Set("Access-Control-Allow-Origin", "*")
		http.ServeContent(w, r, name, startTime, bytes.NewReader(b))
	})
}

var startTime = time.Now()
