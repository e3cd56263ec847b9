package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/pgpush/pgpush/web"
)

// version and commit may be set at build time with
// -ldflags "-X main.version=… -X main.commit=…". Otherwise the version is
// web/package.json's, which the npm package @pgpush/client shares, and the
// commit comes from the build info Go records.
var (
	version = ""
	commit  = ""
)

func runVersion(w io.Writer) error {
	v, c := version, commit
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && c == "" {
				c = s.Value
			}
		}
	}
	if v == "" {
		v = web.Version
	}
	if c == "" {
		c = "unknown"
	}
	_, err := fmt.Fprintf(w, "pgpush %s\ncommit %s\n%s %s/%s\n", v, c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}
