package web_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/pgpush/pgpush/push"
)

// TestReactExample does what a React developer adopting pgpush does: packs
// web/ into the npm package, installs that tarball (not a path alias) into
// examples/react with its lockfile, type-checks and bundles the app with
// esbuild, and serves it from its own Node server (server-side rendering, a
// token endpoint signing with jose) on another origin than a real pgpush
// server on a real database. Then, without a browser, the server-rendered
// page shows the hook's server snapshot; in headless Chromium, a row inserted
// with SQL reaches the hook's list and the bell in two tabs, and marking it
// read in the app's list updates the table and the other tab.
//
// npm downloads only once: installs use the cache in $PGPUSH_NPM_CACHE, by
// default in the user's cache directory, and prefer it to the registry.
func TestReactExample(t *testing.T) {
	t.Parallel()
	node, npm := nodeTools(t)
	chromium(t) // before the slow part: fail (or skip) early without a browser
	cache := npmCache(t)
	dir := t.TempDir()
	copyExample(t, filepath.Join("..", "examples", "react"), dir)
	web, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	var packed []struct{ Filename string }
	if err := json.Unmarshal(run(t, dir, npm, "pack", web, "--pack-destination", dir, "--json", "--cache", cache), &packed); err != nil || len(packed) != 1 {
		t.Fatalf("npm pack --json: %v %+v", err, packed)
	}
	tarball := filepath.Join(dir, "pgpush-client.tgz")
	if err := os.Rename(filepath.Join(dir, packed[0].Filename), tarball); err != nil {
		t.Fatal(err)
	}
	forgetTarballIntegrity(t, filepath.Join(dir, "package-lock.json"))
	run(t, dir, npm, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--cache", cache)
	installed := time.Since(start)
	var wg sync.WaitGroup
	var typecheck []byte
	var typecheckErr error
	wg.Go(func() { typecheck, typecheckErr = runErr(dir, npm, "run", "typecheck") })
	run(t, dir, npm, "run", "build")
	wg.Wait()
	if typecheckErr != nil {
		t.Fatalf("npm run typecheck: %v\n%s", typecheckErr, typecheck)
	}
	t.Logf("packed and installed in %v, built and type-checked in %v", installed.Round(time.Millisecond), (time.Since(start) - installed).Round(time.Millisecond))

	s := newStackWith(t, push.Config{AllowedOrigins: []string{"127.0.0.1:*"}})
	app := startExample(t, node, dir, s.url(""))

	// The package holds the very files the server serves.
	for _, name := range []string{"client.js", "bell.js", "client.d.ts"} {
		if got, want := fetch(t, s.url("/v1/"+name)), fileInTarball(t, tarball, "package/"+name); got != want {
			t.Errorf("/v1/%s differs from %s in the npm package", name, name)
		}
	}

	// Server rendering, no browser: the hook's server snapshot and the bell.
	html := fetch(t, app+"/?user=alice")
	for _, want := range []string{`data-testid="hook" data-status="connecting" data-unread="0"`, "Connecting…",
		fmt.Sprintf(`<pgpush-bell server="%s"></pgpush-bell>`, s.url(""))} {
		if !strings.Contains(html, want) {
			t.Fatalf("the server-rendered page lacks %s:\n%s", want, html)
		}
	}

	b := newBrowser(t)
	tab1, tab2 := b.first, b.newTab("tab2")
	hook := func(status string, unread int) string {
		return fmt.Sprintf(`document.querySelector('[data-testid=hook][data-status=%q][data-unread="%d"]')`, status, unread)
	}
	row := func(id int64, read bool) string {
		return fmt.Sprintf(`document.querySelector('[data-testid=hook] li[data-id="%d"][data-read=%q]')`, id, fmt.Sprint(read))
	}
	for _, p := range []*tab{tab1, tab2} {
		p.open(app + "/?user=alice")
		p.waitFor("the hook and the bell open", hook("open", 0)+" && "+hostIs("open", 0))
	}

	id := s.insert("alice", "Order shipped", "Your order #42 is on its way")
	s.insert("bob", "for bob", "")
	tab1.click(tid("pgpush-bell-button"))
	for _, p := range []*tab{tab1, tab2} {
		p.waitFor("the row, unread, in the hook's list and the bell", fmt.Sprintf(`%s && %s?.textContent.includes('Order shipped') && %s && %s`,
			hook("open", 1), row(id, false), hostIs("open", 1), `document.querySelector('pgpush-bell').client.notifications.some((n) => n.id === `+fmt.Sprint(id)+`)`))
	}
	tab1.waitFor("the row in the open bell", item(id)+`?.dataset.unread === 'true'`)
	if n := tab1.int(`document.querySelectorAll('[data-testid=hook] li').length`); n != 1 {
		t.Fatalf("the hook's list has %d rows, want alice's one", n)
	}

	// Mark it read in the app's own list: the table, and the other tab, follow.
	tab1.do(chromedp.Click(chromedp.CSS(fmt.Sprintf(`[data-testid=hook] li[data-id="%d"] button`, id))))
	deadline := time.Now().Add(waitTimeout)
	for s.unread("alice") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the row is still unread in the table after a click in the app")
		}
		time.Sleep(pollEvery)
	}
	for _, p := range []*tab{tab2, tab1} {
		p.waitFor("the row read in the hook's list and the bell", hook("open", 0)+" && "+row(id, true)+" && "+hostIs("open", 0))
	}
	// The click outside the bell closed its panel; open it again.
	tab1.waitFor("the bell's panel closed", "!"+visible(tid("pgpush-panel")))
	tab1.click(tid("pgpush-bell-button"))
	tab1.waitFor("the row read in the bell", item(id)+`?.dataset.unread === 'false'`)

	for _, p := range []*tab{tab1, tab2} {
		if errs := p.strings(`window.__recoverableErrors`); len(errs) > 0 {
			t.Errorf("%s: hydration errors: %q", p.name, errs)
		}
		p.assertNoExceptions()
		p.mu.Lock()
		for _, m := range p.console {
			if m.Type == "error" && len(m.Args) > 0 {
				t.Errorf("%s: console.error: %s", p.name, m.Text)
			}
		}
		p.mu.Unlock()
	}
}

// nodeTools returns the node and npm binaries, or skips the test (fails it
// when PGPUSH_REQUIRE_BROWSER=1, as the browser tests do).
func nodeTools(t *testing.T) (node, npm string) {
	t.Helper()
	node, err1 := exec.LookPath("node")
	npm, err2 := exec.LookPath("npm")
	if err1 == nil && err2 == nil {
		out, err := exec.Command(node, "-p", "process.versions.node.split('.')[0]").Output()
		if major, _ := strconv.Atoi(strings.TrimSpace(string(out))); err != nil || major < 18 {
			t.Fatalf("node %s (%v) is too old: the example needs Node.js 18 or later", out, err)
		}
		return node, npm
	}
	if os.Getenv("PGPUSH_REQUIRE_BROWSER") == "1" {
		t.Fatalf("node or npm missing (%v, %v) and PGPUSH_REQUIRE_BROWSER=1; install them with scripts/deps.sh --browser", err1, err2)
	}
	t.Skipf("node or npm missing (%v, %v); set PGPUSH_REQUIRE_BROWSER=1 to fail instead", err1, err2)
	return "", ""
}

// npmCache is npm's cache directory for the tests, kept between runs.
func npmCache(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("PGPUSH_NPM_CACHE")
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			t.Fatalf("no cache directory for npm (set PGPUSH_NPM_CACHE): %v", err)
		}
		dir = filepath.Join(base, "pgpush", "npm")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// copyExample copies the example's sources, without what a local install or
// build left there.
func copyExample(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		switch {
		case d.IsDir() && (d.Name() == "node_modules" || d.Name() == "dist"):
			return filepath.SkipDir
		case d.IsDir():
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		case strings.HasSuffix(d.Name(), ".tgz"):
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
	if err != nil {
		t.Fatalf("copy the example: %v", err)
	}
}

// forgetTarballIntegrity drops the lockfile's checksum of the local
// tarball: npm would otherwise install the copy it cached under that checksum
// instead of the tarball just packed. (An `npm install` in the example puts
// it back; the test does not depend on that.)
func forgetTarballIntegrity(t *testing.T, lockfile string) {
	t.Helper()
	b, err := os.ReadFile(lockfile)
	if err != nil {
		t.Fatal(err)
	}
	var lock map[string]any
	if err := json.Unmarshal(b, &lock); err != nil {
		t.Fatalf("%s: %v", lockfile, err)
	}
	pkgs, _ := lock["packages"].(map[string]any)
	p, _ := pkgs["node_modules/@pgpush/client"].(map[string]any)
	if p == nil || p["resolved"] != "file:pgpush-client.tgz" {
		t.Fatalf("the example's lockfile does not install @pgpush/client from pgpush-client.tgz: %v", p)
	}
	delete(p, "integrity")
	if b, err = json.Marshal(lock); err == nil {
		err = os.WriteFile(lockfile, b, 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// run runs a command in dir and returns its standard output, failing the
// test with all its output if it fails.
func run(t *testing.T, dir, name string, args ...string) []byte {
	t.Helper()
	out, err := runErr(dir, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return out
}

// runErr runs a command in dir for at most three minutes (a first install
// downloads) and returns its standard output, or with an error all of it.
func runErr(dir, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return append(stdout.Bytes(), stderr.Bytes()...), err
	}
	return stdout.Bytes(), nil
}

// startExample starts the example's server.js, which prints its URL, and
// stops it when the test ends.
func startExample(t *testing.T, node, dir, pgpushURL string) string {
	t.Helper()
	cmd := exec.Command(node, "server.js")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PGPUSH_URL="+pgpushURL, "PGPUSH_JWT_SECRET="+string(testSecret), "PORT=0", "HOST=127.0.0.1")
	out := &lineWriter{first: make(chan string, 1)}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("server.js output:\n%s", out.String())
		}
	})
	select {
	case line := <-out.first:
		if url, ok := strings.CutPrefix(line, "listening on "); ok {
			return url
		}
		t.Fatalf("server.js said %q", out.String())
	case err := <-exited:
		exited <- err
		t.Fatalf("server.js exited: %v\n%s", err, out.String())
	case <-time.After(waitTimeout):
		t.Fatalf("server.js did not start within %v:\n%s", waitTimeout, out.String())
	}
	return ""
}

// lineWriter keeps a process's output and sends its first line on first.
type lineWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	sent  bool
	first chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if line, _, ok := strings.Cut(w.buf.String(), "\n"); ok && !w.sent {
		w.sent = true
		w.first <- line
	}
	return len(p), nil
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func fetch(t *testing.T, url string) string {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, res.StatusCode, err)
	}
	return string(b)
}

// fileInTarball is the content of one file of a .tgz.
func fileInTarball(t *testing.T, tarball, name string) string {
	t.Helper()
	f, err := os.Open(tarball)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	r := tar.NewReader(z)
	for {
		h, err := r.Next()
		if err != nil {
			t.Fatalf("%s in %s: %v", name, tarball, err)
		}
		if h.Name == name {
			b, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
	}
}
