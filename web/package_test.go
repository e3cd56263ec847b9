package web_test

import (
	"encoding/json"
	"os"
	"slices"
	"testing"

	"github.com/pgpush/pgpush/web"
)

// npmPackage is what the tests read from web/package.json.
type npmPackage struct {
	Name                 string
	Version              string
	Type                 string
	Files                []string
	Exports              map[string]json.RawMessage
	Dependencies         map[string]string
	PeerDependencies     map[string]string
	PeerDependenciesMeta map[string]struct{ Optional bool }
}

func readPackage(t *testing.T) npmPackage {
	t.Helper()
	b, err := os.ReadFile("package.json")
	if err != nil {
		t.Fatal(err)
	}
	var p npmPackage
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("package.json: %v", err)
	}
	return p
}

// TestPackageIsTheServedSource: the npm package @pgpush/client is made of
// the very files the server serves under /v1/ (one source, no copy to drift),
// every entry point has its types, and nothing is needed at run time but
// React for the react entry, as an optional peer.
func TestPackageIsTheServedSource(t *testing.T) {
	t.Parallel()
	p := readPackage(t)
	if p.Name != "@pgpush/client" || p.Type != "module" || p.Version != web.Version {
		t.Fatalf("package.json: name %q, type %q, version %q (the server says %q)", p.Name, p.Type, p.Version, web.Version)
	}
	if len(p.Dependencies) > 0 {
		t.Errorf("runtime dependencies: %v", p.Dependencies)
	}
	if p.PeerDependencies["react"] == "" || !p.PeerDependenciesMeta["react"].Optional {
		t.Errorf("react must be an optional peer dependency: %v %v", p.PeerDependencies, p.PeerDependenciesMeta)
	}
	for _, f := range p.Files {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("files lists %s: %v", f, err)
		}
	}
	want := map[string][2]string{".": {"./client.d.ts", "./client.js"}, "./bell": {"./bell.d.ts", "./bell.js"}, "./react": {"./react.d.ts", "./react.js"}}
	for entry, w := range want {
		var e struct{ Types, Default string }
		if err := json.Unmarshal(p.Exports[entry], &e); err != nil || e.Types != w[0] || e.Default != w[1] {
			t.Errorf("exports[%q] = %s, want types %s and default %s", entry, p.Exports[entry], w[0], w[1])
		}
		for _, f := range w {
			if !slices.Contains(p.Files, f[2:]) {
				t.Errorf("exports[%q] names %s, which files does not ship", entry, f)
			}
		}
	}

	s := newStack(t)
	for path, file := range map[string]string{"/v1/client.js": "client.js", "/v1/bell.js": "bell.js", "/v1/client.d.ts": "client.d.ts"} {
		if !slices.Contains(p.Files, file) {
			t.Errorf("the server serves %s, which the package does not ship", file)
		}
		served := fetch(t, s.url(path))
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if served != string(src) {
			t.Errorf("GET %s differs from web/%s", path, file)
		}
	}
}
