// Package web holds the browser side of pgpush: the dependency-free client
// module (client.js, typed by client.d.ts), the <pgpush-bell> custom element
// (bell.js) and the page `pgpush dev` serves at / (demo.html). The server
// serves the first three at /v1/client.js, /v1/client.d.ts and /v1/bell.js;
// bell.js imports ./client.js, so they must stay side by side.
package web

import "embed"

// FS holds client.js, client.d.ts, bell.js and demo.html at its root. It is
// read-only and safe for concurrent use.
//
//go:embed client.js client.d.ts bell.js demo.html
var FS embed.FS
