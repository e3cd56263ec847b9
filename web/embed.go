// Package web holds the browser side of pgpush: the dependency-free client
// module (client.js, typed by client.d.ts), the <pgpush-bell> custom element
// (bell.js), the React bindings (react.js) and the page `pgpush dev` serves
// at / (demo.html). The server serves client.js, client.d.ts and bell.js at
// /v1/; the same files, with react.js and the types, are the npm package
// @pgpush/client (package.json here), so the two never drift. bell.js and
// react.js import ./client.js, so they must stay side by side.
package web

import (
	"embed"
	"encoding/json"
)

// FS holds client.js, client.d.ts, bell.js, demo.html and package.json at its
// root. It is read-only and safe for concurrent use.
//
//go:embed client.js client.d.ts bell.js demo.html package.json
var FS embed.FS

// Version is the version in package.json: pgpush's version, which the server
// and the npm package share.
var Version = func() string {
	b, err := FS.ReadFile("package.json")
	if err != nil {
		panic("web: package.json missing from the build: " + err.Error())
	}
	var p struct{ Version string }
	if err := json.Unmarshal(b, &p); err != nil || p.Version == "" {
		panic("web: package.json has no version")
	}
	return p.Version
}()
