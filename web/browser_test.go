package web_test

// Browser tests: the demo page and <pgpush-bell> in headless Chromium, driven
// by chromedp, against a real push server on a real database. Each test gets
// its own database, server and browser (a fresh profile), so they run in
// parallel. Without a Chromium binary they skip, unless PGPUSH_REQUIRE_BROWSER=1
// (scripts/test.sh sets it), where they fail.
//
// The bell's state is read through its test hooks: the host's data-status and
// data-unread, and data-testid attributes in its open shadow root.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/png"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgpush/pgpush/db"
	"github.com/pgpush/pgpush/db/dbtest"
	"github.com/pgpush/pgpush/push"
	"github.com/pgpush/pgpush/push/auth"
	"github.com/pgpush/pgpush/web"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

var testSecret = []byte("browser-test-secret-browser-test-secret")

const (
	// browserLifetime bounds each test's browser: past it the browser is
	// killed and every action fails, so a hung test ends.
	browserLifetime = 50 * time.Second
	// waitTimeout bounds each wait for the page to reach a state.
	waitTimeout = 15 * time.Second
	// pollEvery is how often a wait re-evaluates its predicate. Interval
	// polling, not requestAnimationFrame: rAF does not run in a background
	// tab.
	pollEvery = 20 * time.Millisecond
)

// TestBellShowsLiveInsert: a row inserted with SQL appears in the open list
// and as a toast, and the badge counts it; another user's row does not; a
// burst of rows becomes one summary toast.
func TestBellShowsLiveInsert(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	p := newBrowser(t).first
	p.open(s.url("/?user=alice"))
	p.waitFor("status open, nothing unread", hostIs("open", 0))
	p.click(tid("pgpush-bell-button"))
	p.waitFor("open panel with the empty state", visible(tid("pgpush-panel"))+" && "+visible(tid("pgpush-empty")))
	if got := p.text(tid("pgpush-badge")); p.bool(visible(tid("pgpush-badge"))) {
		t.Fatalf("badge %q is visible with nothing unread", got)
	}

	// A click on the panel's heading leaves nothing in the bell focused: a
	// row that arrives then must not take the focus (nor scroll the page).
	p.click("h2")
	s.exec(`INSERT INTO notifications (user_id, title, body) VALUES ('bob', 'for bob', 'not for alice')`)
	id := s.insert("alice", "Order shipped", "Your order #42 is on its way")
	p.waitFor("the row in the list, unread", fmt.Sprintf(
		`%s?.dataset.unread === 'true' && %[1]s.textContent.includes('Order shipped') && %[1]s.textContent.includes('Your order #42')`,
		item(id)))
	if f := p.string(`String(document.querySelector('pgpush-bell').shadowRoot.activeElement?.outerHTML ?? 'none').slice(0, 80)`); f != "none" {
		t.Fatalf("a new row took the focus: %s", f)
	}
	toast := fmt.Sprintf(`[data-testid=pgpush-toast][data-id="%d"]`, id)
	p.waitFor("a toast for the row", shadow(toast)+`?.textContent.includes('Order shipped')`)
	// Pointing at the toast holds it (no auto-dismiss), so only the click
	// below can remove it.
	p.hover(toast)
	p.waitFor("badge 1", hostIs("open", 1)+" && "+visible(tid("pgpush-badge"))+
		fmt.Sprintf(` && %s.textContent === '1'`, shadow(tid("pgpush-badge"))))
	if p.bool(visible(tid("pgpush-empty"))) {
		t.Fatal("the empty state is still shown with a row in the list")
	}
	p.click(toast + " " + tid("pgpush-toast-dismiss"))
	p.waitFor("the toast dismissed", "!"+shadow(toast))

	// A burst: five rows in one statement.
	s.exec(`INSERT INTO notifications (user_id, title) SELECT 'alice', 'burst ' || i FROM generate_series(1, 5) i`)
	p.waitFor("six rows, six unread", hostIs("open", 6)+" && "+count(`li[data-testid=pgpush-item]`)+" === 6")
	toasts := p.strings(`[...` + shadowAll(`[data-testid=pgpush-toast]`) + `].map((e) => e.textContent)`)
	if len(toasts) > 3 {
		t.Fatalf("%d toasts at once, want at most 3: %q", len(toasts), toasts)
	}
	if !p.bool(`[...` + shadowAll(`[data-testid=pgpush-toast]`) + `].some((e) => /^\s*\d+ new notifications/.test(e.textContent))`) {
		// The rows of one statement normally arrive within the bell's 16 ms
		// render window; on a very loaded machine they may not.
		t.Logf("no summary toast for the burst (it arrived in pieces): %q", toasts)
	}
	if p.bool(`[...` + shadowAll(`li[data-testid=pgpush-item]`) + `].some((li) => li.textContent.includes('for bob'))`) {
		t.Fatal("alice's list shows bob's row")
	}
	p.assertNoExceptions()
}

// TestBellMarkReadReachesOtherTab: two tabs of one user; marking read in
// one (a click on an item, then "Mark all read") updates the other, and so
// does an UPDATE from SQL.
func TestBellMarkReadReachesOtherTab(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ids := []int64{s.insert("alice", "one", ""), s.insert("alice", "two", ""), s.insert("alice", "three", "")}
	b := newBrowser(t)
	tab1, tab2 := b.first, b.newTab("tab2")
	tab1.open(s.url("/?user=alice"))
	tab2.open(s.url("/?user=alice"))
	for _, p := range []*tab{tab1, tab2} {
		p.waitFor("open with 3 unread", hostIs("open", 3))
		p.click(tid("pgpush-bell-button"))
		p.waitFor("three unread rows", fmt.Sprintf(`%s === 3 && %s`, count(`li[data-testid=pgpush-item][data-unread=true]`),
			shadow(`li[data-testid=pgpush-item]`)+`?.dataset.id === '`+strconv.FormatInt(ids[2], 10)+`'`))
	}

	// A click on the newest row in tab 1.
	tab1.click(itemSel(ids[2]))
	for _, p := range []*tab{tab1, tab2} {
		p.waitFor("the clicked row read, 2 unread", hostIs("open", 2)+" && "+item(ids[2])+`?.dataset.unread === 'false'`+
			fmt.Sprintf(` && %s.textContent === '2'`, shadow(tid("pgpush-badge"))))
	}
	if s.unread("alice") != 2 {
		t.Fatalf("database: %d unread, want 2", s.unread("alice"))
	}

	// "Mark all read" in tab 2.
	tab2.click(tid("pgpush-mark-all"))
	for _, p := range []*tab{tab1, tab2} {
		p.waitFor("all read, badge hidden", hostIs("open", 0)+" && !"+visible(tid("pgpush-badge"))+" && "+
			count(`li[data-testid=pgpush-item][data-unread=true]`)+" === 0 && "+shadow(tid("pgpush-mark-all"))+".disabled")
	}

	// An UPDATE from SQL reaches both tabs too.
	s.exec(`UPDATE notifications SET read_at = NULL WHERE id = $1`, ids[0])
	for _, p := range []*tab{tab1, tab2} {
		p.waitFor("the row unread again", hostIs("open", 1)+" && "+item(ids[0])+`?.dataset.unread === 'true'`)
	}
	tab1.assertNoExceptions()
	tab2.assertNoExceptions()
}

// TestBellPagesAndKeyboard: the list shows the newest 20 rows and loads the
// rest on "Load more"; ArrowDown on the bell opens the panel on the first
// row, End goes to the last, Escape closes it and returns to the bell.
func TestBellPagesAndKeyboard(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.exec(`INSERT INTO notifications (user_id, title) SELECT 'alice', 'row ' || i FROM generate_series(1, 25) i`)
	p := newBrowser(t).first
	p.open(s.url("/?user=alice"))
	p.waitFor("open with 25 unread", hostIs("open", 25)+" && "+shadow(tid("pgpush-badge"))+".textContent === '25'")

	p.eval(shadow(tid("pgpush-bell-button")) + ".focus()")
	p.do(chromedp.KeyEvent(kb.ArrowDown))
	p.waitFor("the panel open, the first row focused", visible(tid("pgpush-panel"))+" && "+count(`li[data-testid=pgpush-item]`)+
		" === 20 && "+shadow(`li[data-testid=pgpush-item]`)+".firstChild === document.querySelector('pgpush-bell').shadowRoot.activeElement"+
		" && "+shadow(`li[data-testid=pgpush-item]`)+".textContent.includes('row 25')")

	p.click(tid("pgpush-load-more"))
	p.waitFor("25 rows, oldest last, no more to load", count(`li[data-testid=pgpush-item]`)+" === 25 && !"+visible(tid("pgpush-load-more"))+
		" && [..."+shadowAll(`li[data-testid=pgpush-item]`)+"].at(-1).textContent.includes('row 1')")

	p.eval(shadow(`li[data-testid=pgpush-item] .row`) + ".focus()")
	p.do(chromedp.KeyEvent(kb.End))
	p.waitFor("the last row focused", "[..."+shadowAll(`li[data-testid=pgpush-item]`)+"].at(-1).firstChild === document.querySelector('pgpush-bell').shadowRoot.activeElement")
	p.do(chromedp.KeyEvent(kb.Escape))
	p.waitFor("the panel closed, the bell focused", "!"+visible(tid("pgpush-panel"))+" && document.querySelector('pgpush-bell').shadowRoot.activeElement === "+shadow(tid("pgpush-bell-button")))
	p.assertNoExceptions()
}

// TestBellReconnectsAndCatchesUp: stopping the server turns the status to
// reconnecting; a new server on the same address and database brings back
// what changed meanwhile, and the status returns to open.
func TestBellReconnectsAndCatchesUp(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	p := newBrowser(t).first
	p.open(s.url("/?user=alice"))
	p.waitFor("status open", hostIs("open", 0))
	p.click(tid("pgpush-bell-button"))
	first := s.insert("alice", "before the outage", "")
	p.waitFor("the first row", hostIs("open", 1)+" && "+item(first)+`?.dataset.unread === 'true'`)

	s.stop()
	p.waitFor("status reconnecting, with a note", `document.querySelector('pgpush-bell').dataset.status === 'reconnecting' && `+
		visible(tid("pgpush-note"))+` && `+shadow(tid("pgpush-note"))+`.textContent.includes('Reconnecting')`+
		` && `+shadow(tid("pgpush-status"))+`.dataset.status === 'reconnecting'`)
	missed := []int64{s.insert("alice", "missed one", "written while the server was down"), s.insert("alice", "missed two", "")}
	s.exec(`UPDATE notifications SET read_at = now() WHERE id = $1`, first)
	attempts := s.wsAttempts("")
	s.start()

	p.waitFor("status open again", `document.querySelector('pgpush-bell').dataset.status === 'open' && !`+visible(tid("pgpush-note")))
	p.waitFor("the missed rows, the missed read", hostIs("open", 2)+" && "+count(`li[data-testid=pgpush-item]`)+" === 3 && "+
		item(missed[0])+`?.dataset.unread === 'true' && `+item(missed[1])+`?.dataset.unread === 'true' && `+
		item(first)+`?.dataset.unread === 'false'`)
	p.waitFor("toasts for the missed rows", fmt.Sprintf(`%s && %s`,
		shadow(fmt.Sprintf(`[data-testid=pgpush-toast][data-id="%d"]`, missed[0])),
		shadow(fmt.Sprintf(`[data-testid=pgpush-toast][data-id="%d"]`, missed[1]))))
	if n := s.wsAttempts("") - attempts; n < 1 {
		t.Fatalf("%d WebSocket attempts after the restart", n)
	}
	if history := p.strings(`window.__statuses`); slices.Contains(history, "unauthorized") || !slices.Contains(history, "reconnecting") {
		t.Fatalf("statuses %q: want reconnecting and never unauthorized", history)
	}

	// The new server is live, too.
	live := s.insert("alice", "after the outage", "")
	p.waitFor("a live row from the new server", hostIs("open", 3)+" && "+item(live)+`?.dataset.unread === 'true'`)
	p.assertNoExceptions()
}

// TestBellFollowsATruncate: a DBA's TRUNCATE sends no row hints; the
// server closes the bell's socket (1013), the client resumes with its cursor
// and gets a fresh snapshot, and the bell shows exactly the table again:
// the rows gone, the one the TRUNCATE's transaction inserted, its count.
func TestBellFollowsATruncate(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	p := newBrowser(t).first
	p.open(s.url("/?user=alice"))
	p.waitFor("status open", hostIs("open", 0))
	p.click(tid("pgpush-bell-button"))
	old := []int64{s.insert("alice", "before the truncate", ""), s.insert("alice", "also before", "")}
	p.waitFor("two rows", hostIs("open", 2)+" && "+count(`li[data-testid=pgpush-item]`)+" === 2")
	attempts := s.wsAttempts("")

	s.exec(`TRUNCATE notifications; INSERT INTO notifications (user_id, title) VALUES ('alice', 'after the truncate')`)
	p.waitFor("only the new row, unread", hostIs("open", 1)+" && "+count(`li[data-testid=pgpush-item]`)+" === 1 && "+
		fmt.Sprintf(`!%s && !%s`, item(old[0]), item(old[1]))+" && "+
		`[...`+shadowAll(`li[data-testid=pgpush-item]`)+`].every((li) => li.textContent.includes('after the truncate'))`)
	if n := s.wsAttempts("") - attempts; n < 1 {
		t.Fatalf("%d WebSocket attempts after the TRUNCATE: want a resume", n)
	}
	live := s.insert("alice", "live again", "")
	p.waitFor("a live row after the resync", hostIs("open", 2)+" && "+item(live)+`?.dataset.unread === 'true'`)
	p.assertNoExceptions()
}

// TestBellCrossOrigin: the README's setup, an app on another origin that
// loads bell.js from the push server and gets tokens from its own backend,
// works once its origin is in AllowedOrigins (PGPUSH_ALLOWED_ORIGINS):
// WebSocket and HTTP API (CORS). An origin not listed gets no connection.
func TestBellCrossOrigin(t *testing.T) {
	t.Parallel()
	allowed, other := appServer(t), appServer(t)
	s := newStackWith(t, push.Config{AllowedOrigins: []string{allowed.host}})
	html := `<!doctype html>
<meta charset="utf-8"><title>an app on another origin</title>
<script type="module" src="` + s.url("/v1/bell.js") + `"></script>
<pgpush-bell server="` + s.url("") + `"></pgpush-bell>
<script type="module">
  document.querySelector('pgpush-bell').getToken = () => fetch('/api/pgpush-token').then((r) => r.text());
</script>`
	allowed.page.Store(&html)
	other.page.Store(&html)
	s.exec(`INSERT INTO notifications (user_id, title) SELECT 'alice', 'old ' || i FROM generate_series(1, 21) i`)

	b := newBrowser(t)
	p := b.first
	p.open(allowed.url)
	p.waitFor("open", hostIs("open", 21))
	id := s.insert("alice", "across origins", "")
	p.waitFor("a live row", hostIs("open", 22))
	// The HTTP API from the app's origin: a page of older rows, and mark
	// read over HTTP while the socket is closed.
	more := evaluate[bool](p, `document.querySelector('pgpush-bell').client.loadMore()`, chromedp.EvalAwaitPromise)
	if n := p.int(`document.querySelector('pgpush-bell').client.notifications.length`); n != 22 || more {
		t.Fatalf("after loadMore: %d rows (want 22), more = %v", n, more)
	}
	p.eval(`(async () => { const c = document.querySelector('pgpush-bell').client; c.close(); await c.markRead(`+strconv.FormatInt(id, 10)+`); })()`, chromedp.EvalAwaitPromise)
	p.waitFor("read over HTTP", fmt.Sprintf(`((b) => b.dataset.unread === '21' && b.client.notifications.find((n) => n.id === %d).read_at)(document.querySelector('pgpush-bell'))`, id))
	if s.unread("alice") != 21 {
		t.Fatalf("database: %d unread, want 21", s.unread("alice"))
	}

	q := b.newTab("other")
	q.open(other.url)
	q.waitFor("reconnecting", `document.querySelector('pgpush-bell')?.dataset.status === 'reconnecting'`)
	if n := s.wsAttempts("origin http://" + other.host); n < 1 {
		t.Fatalf("%d WebSocket attempts from the unlisted origin", n)
	}
	if got := q.string(`document.querySelector('pgpush-bell').dataset.status`); got == "open" {
		t.Fatal("an unlisted origin got a connection")
	}
	p.assertNoExceptions()
	q.assertNoExceptions()
}

// TestBellBadTokenStopsAtUnauthorized: a refused token shows unauthorized and
// the client stops, rather than retrying forever. One bell has a fixed token
// (no retry); the other a getToken callback (one retry with a fresh token).
func TestBellBadTokenStopsAtUnauthorized(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	wrong, err := auth.Mint([]byte("another-secret-another-secret-another"), "alice", time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	s.page("/test/bad-token", `<!doctype html>
<meta charset="utf-8"><title>bad token</title>
<script type="module" src="/v1/bell.js"></script>
<pgpush-bell id="fixed" token="bad"></pgpush-bell>
<pgpush-bell id="callback"></pgpush-bell>
<script type="module">
  document.getElementById('callback').getToken = async () => `+strconv.Quote(wrong)+`;
</script>`)
	p := newBrowser(t).first
	p.open(s.url("/test/bad-token"))
	for _, id := range []string{"fixed", "callback"} {
		p.waitFor(id+" unauthorized", fmt.Sprintf(`document.getElementById(%q).dataset.status === 'unauthorized' && `+
			`document.getElementById(%[1]q).shadowRoot.querySelector('[data-testid=pgpush-status]').dataset.status === 'unauthorized'`, id))
	}
	fixed, callback := s.wsAttempts("bad"), s.wsAttempts(wrong)
	if fixed < 1 || callback < 1 {
		t.Fatalf("WebSocket attempts: fixed token %d, getToken %d; want at least 1 each", fixed, callback)
	}
	// A negative result needs an observation window: long enough for
	// several attempts of a reconnect loop (its first delays are under 1 s).
	time.Sleep(2 * time.Second)
	if f, c := s.wsAttempts("bad"), s.wsAttempts(wrong); f != fixed || c != callback || f > 1 || c > 2 {
		t.Fatalf("WebSocket attempts went on: fixed token %d then %d (want 1), getToken %d then %d (want at most 2)", fixed, f, callback, c)
	}
	for _, id := range []string{"fixed", "callback"} {
		if got := p.string(fmt.Sprintf(`document.getElementById(%q).dataset.status`, id)); got != "unauthorized" {
			t.Fatalf("%s: status %q after the window, want unauthorized", id, got)
		}
	}
	// The open panel says why.
	p.eval(`document.getElementById('fixed').toggle(true)`)
	p.waitFor("the note", `document.getElementById('fixed').shadowRoot.querySelector('[data-testid=pgpush-note]').textContent.includes('refused')`)
	p.assertNoExceptions()
}

// TestBellScreenshots saves the open bell in the light and dark themes under
// test-output/ (and, with PGPUSH_UPDATE_DOCS=1, the light one as
// docs/bell.png for the README), and checks that the themes apply.
func TestBellScreenshots(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.exec(`INSERT INTO notifications (user_id, kind, title, body, url, created_at, read_at) VALUES
		('alice', 'report', 'Weekly report is ready', 'Open rates are up 12% on last week.', NULL, now() - interval '26 hours', now()),
		('alice', 'payment', 'Payment received', '€249.00 from Acme GmbH for invoice INV-2031.', NULL, now() - interval '3 hours', now()),
		('alice', 'comment', 'New comment on “Q3 roadmap”', 'Dana: Looks good. Can we move the launch to October?', NULL, now() - interval '25 minutes', NULL),
		('alice', 'order.shipped', 'Order #1042 shipped', 'Your parcel is on its way and should arrive on Thursday.', 'https://shop.example/orders/1042', now() - interval '2 minutes', NULL)`)
	p := newBrowser(t).first
	// Wide enough that the open panel hangs over the empty margin right of
	// the page's content; doubled pixels for a sharp image.
	p.do(chromedp.EmulateViewport(1840, 720, chromedp.EmulateScale(2)))
	p.colorScheme("light")
	p.open(s.url("/?user=alice"))
	p.waitFor("status open, 2 unread", hostIs("open", 2))
	p.click(tid("pgpush-bell-button"))
	p.waitFor("four rows", count(`li[data-testid=pgpush-item]`)+" === 4")
	p.do(chromedp.Evaluate[chromedp.Void](`document.fonts.ready`, chromedp.EvalAwaitPromise))

	panelBg := `getComputedStyle(` + shadow(tid("pgpush-panel")) + `).backgroundColor`
	shots := []struct {
		name, scheme, theme, bg string
	}{
		{"bell-light", "light", "", "rgb(255, 255, 255)"},
		{"bell-dark", "dark", "", "rgb(29, 33, 40)"},
		// The theme attribute wins over the system preference.
		{"bell-dark-attribute", "light", "dark", "rgb(29, 33, 40)"},
	}
	out := outputDir(t)
	for _, sh := range shots {
		p.colorScheme(sh.scheme)
		p.eval(fmt.Sprintf(`(() => { const s = document.getElementById('theme'); s.value = %q; s.dispatchEvent(new Event('change')); })()`, sh.theme))
		p.waitFor(sh.name+" panel background "+sh.bg, panelBg+` === `+strconv.Quote(sh.bg))
		img := p.screenshotBell()
		path := filepath.Join(out, sh.name+".png")
		if err := os.WriteFile(path, img, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("saved %s (%d bytes)", path, len(img))
		if sh.name == "bell-light" && os.Getenv("PGPUSH_UPDATE_DOCS") == "1" {
			if err := os.WriteFile(filepath.Join("..", "docs", "bell.png"), img, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	p.assertNoExceptions()
}

// ---- JavaScript expressions over the bell's shadow root ----

// shadow is an expression for the first element matching css in the demo
// page's bell, or undefined.
func shadow(css string) string {
	return fmt.Sprintf(`document.querySelector('pgpush-bell')?.shadowRoot?.querySelector(%q)`, css)
}

func shadowAll(css string) string {
	return fmt.Sprintf(`document.querySelector('pgpush-bell').shadowRoot.querySelectorAll(%q)`, css)
}

func count(css string) string { return shadowAll(css) + ".length" }

// tid is the CSS selector of a data-testid.
func tid(id string) string { return fmt.Sprintf(`[data-testid=%q]`, id) }

// itemSel is the CSS selector of the list item of a notification.
func itemSel(id int64) string { return fmt.Sprintf(`li[data-testid=pgpush-item][data-id="%d"]`, id) }

// item is an expression for the list item of a notification.
func item(id int64) string { return shadow(itemSel(id)) }

// visible: the element exists and is rendered (not hidden, nor inside a
// hidden element).
func visible(css string) string {
	return fmt.Sprintf(`((e) => !!e && e.getClientRects().length > 0)(%s)`, shadow(css))
}

// hostIs: the bell's host attributes say this status and unread count.
func hostIs(status string, unread int) string {
	return fmt.Sprintf(`((b) => b?.dataset.status === %q && b.dataset.unread === '%d')(document.querySelector('pgpush-bell'))`, status, unread)
}

// stateJS describes the demo page's bell, for failure messages.
const stateJS = `(() => {
  const b = document.querySelector('pgpush-bell');
  if (!b || !b.shadowRoot) return 'no bell';
  const r = b.shadowRoot, q = (s) => r.querySelector(s);
  return JSON.stringify({
    status: b.dataset.status, unread: b.dataset.unread, badge: q('[data-testid=pgpush-badge]').hidden ? '(hidden)' : q('[data-testid=pgpush-badge]').textContent,
    panelOpen: !q('[data-testid=pgpush-panel]').hidden, note: q('[data-testid=pgpush-note]').hidden ? '' : q('[data-testid=pgpush-note]').textContent,
    items: [...r.querySelectorAll('li[data-testid=pgpush-item]')].map((li) => li.dataset.id + (li.dataset.unread === 'true' ? '*' : '') + ' ' + (li.querySelector('.title')?.textContent ?? '')),
    toasts: [...r.querySelectorAll('[data-testid=pgpush-toast]')].map((t) => t.dataset.id + ' ' + t.textContent),
    clientRows: b.client?.notifications.length, statuses: window.__statuses,
  });
})()`

// recordStatuses keeps, in window.__statuses, every value the first bell's
// data-status has had (installed before the page's scripts run). It only
// watches the attribute, so the bell is left alone.
const recordStatuses = `window.__statuses = [];
new MutationObserver((records) => {
  const b = document.querySelector('pgpush-bell');
  const add = (v) => v && window.__statuses.at(-1) !== v && window.__statuses.push(v);
  for (const r of records) if (r.target === b) add(r.oldValue);
  add(b?.dataset.status);
}).observe(document, { subtree: true, attributes: true, attributeOldValue: true, attributeFilter: ['data-status'] });`

// ---- the server ----

// stack is one test's database and pgpush server, with the dev routes in
// front (as `pgpush dev` serves them) and a few test pages. The server can be
// stopped and started again on the same address. Safe for concurrent use.
type stack struct {
	t        testing.TB
	pool     *pgxpool.Pool
	verifier *auth.Verifier
	cfg      push.Config
	addr     string
	pages    sync.Map // path → HTML

	mu       sync.Mutex
	attempts map[string]int // WebSocket requests by token
	srv      *push.Server
	hs       *http.Server
	served   chan struct{}
}

func newStack(t testing.TB) *stack { t.Helper(); return newStackWith(t, push.Config{}) }

// newStackWith starts the server with cfg (its Logger is set here).
func newStackWith(t testing.TB, cfg push.Config) *stack {
	t.Helper()
	pool := dbtest.Pool(t, dbtest.NewDB(t))
	v, err := auth.New(t.Context(), auth.Config{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, pool: pool, verifier: v, cfg: cfg, addr: ln.Addr().String(), attempts: map[string]int{}}
	s.serve(ln)
	t.Cleanup(s.stop)
	return s
}

func (s *stack) url(path string) string { return "http://" + s.addr + path }

// page serves html at path.
func (s *stack) page(path, html string) { s.pages.Store(path, html) }

// start starts a new push server on the address of the first. The old
// address may take a moment to be free again.
func (s *stack) start() {
	s.t.Helper()
	var ln net.Listener
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for ln, err = net.Listen("tcp", s.addr); err != nil; ln, err = net.Listen("tcp", s.addr) {
		if time.Now().After(deadline) {
			s.t.Fatalf("listen on %s again: %v", s.addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.serve(ln)
}

func (s *stack) serve(ln net.Listener) {
	s.t.Helper()
	logger := testLogger()
	cfg := s.cfg
	cfg.Logger = logger
	srv, err := push.New(s.pool, s.verifier, cfg)
	if err != nil {
		ln.Close()
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		ln.Close()
		s.t.Fatal(err)
	}
	mint := func(user string) (string, error) { return auth.Mint(testSecret, user, time.Hour, "", "") }
	app := web.DevRoutes(db.New(s.pool), mint, logger)(srv.Handler())
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/ws" {
			s.mu.Lock()
			s.attempts[r.URL.Query().Get("token")]++
			s.attempts["origin "+r.Header.Get("Origin")]++
			s.attempts[""]++
			s.mu.Unlock()
		}
		if html, ok := s.pages.Load(r.URL.Path); ok {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			io.WriteString(w, html.(string))
			return
		}
		app.ServeHTTP(w, r)
	})
	hs := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug)}
	served := make(chan struct{})
	go func() {
		defer close(served)
		hs.Serve(ln)
	}()
	s.mu.Lock()
	s.srv, s.hs, s.served = srv, hs, served
	s.mu.Unlock()
}

// stop closes the listener and every connection, WebSockets with 1001 (going
// away), as a node that shuts down does. It is idempotent.
func (s *stack) stop() {
	s.mu.Lock()
	srv, hs, served := s.srv, s.hs, s.served
	s.srv, s.hs = nil, nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	hs.Close()
	<-served
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		s.t.Errorf("push shutdown: %v", err)
	}
}

// wsAttempts counts the WebSocket requests with this token, or with
// "origin " and this Origin; "" counts all.
func (s *stack) wsAttempts(token string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts[token]
}

func (s *stack) exec(sql string, args ...any) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.pool.Exec(ctx, sql, args...); err != nil {
		s.t.Fatalf("%s: %v", sql, err)
	}
}

func (s *stack) insert(user, title, body string) int64 {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var id int64
	if err := s.pool.QueryRow(ctx, `INSERT INTO notifications (user_id, title, body) VALUES ($1, $2, $3) RETURNING id`,
		user, title, body).Scan(&id); err != nil {
		s.t.Fatalf("insert: %v", err)
	}
	return id
}

func (s *stack) unread(user string) int {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL`, user).Scan(&n); err != nil {
		s.t.Fatal(err)
	}
	return n
}

// appSite is a stand-in for an application on an origin of its own: it
// serves page at / and a token for alice at /api/pgpush-token, as an app's
// backend would after its own login.
type appSite struct {
	host, url string
	page      atomic.Pointer[string]
}

func appServer(t testing.TB) *appSite {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &appSite{host: ln.Addr().String(), url: "http://" + ln.Addr().String() + "/"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, *a.page.Load())
	})
	mux.HandleFunc("GET /api/pgpush-token", func(w http.ResponseWriter, r *http.Request) {
		tok, err := auth.Mint(testSecret, "alice", time.Hour, "", "")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		io.WriteString(w, tok)
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		hs.Serve(ln)
	}()
	t.Cleanup(func() {
		hs.Close()
		<-done
	})
	return a
}

func testLogger() *slog.Logger {
	if os.Getenv("PGPUSH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// ---- the browser ----

// chromium returns the browser binary, or skips the test (fails it when
// PGPUSH_REQUIRE_BROWSER=1). PGPUSH_CHROMIUM names another binary.
func chromium(t testing.TB) string {
	t.Helper()
	candidates := []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"}
	if p := os.Getenv("PGPUSH_CHROMIUM"); p != "" {
		candidates = []string{p}
	}
	for _, c := range candidates {
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	if os.Getenv("PGPUSH_REQUIRE_BROWSER") == "1" {
		t.Fatalf("no Chromium found (tried %s) and PGPUSH_REQUIRE_BROWSER=1; install it with scripts/deps.sh --browser", strings.Join(candidates, ", "))
	}
	t.Skipf("no Chromium found (tried %s); set PGPUSH_REQUIRE_BROWSER=1 to fail instead", strings.Join(candidates, ", "))
	return ""
}

// browser is one headless Chromium with a fresh profile, closed (and its
// processes checked gone) when the test ends.
type browser struct {
	t     testing.TB
	ctx   context.Context // the first tab; new tabs derive from it
	first *tab
	wg    sync.WaitGroup // console readers
}

func newBrowser(t testing.TB) *browser {
	t.Helper()
	dir := t.TempDir()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless,
		chromedp.NoSandbox, // tests run as root in CI containers
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(dir),
		chromedp.WindowSize(1200, 800),
	)
	life, cancelLife := context.WithTimeout(context.Background(), browserLifetime)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(life, opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	b := &browser{t: t, ctx: ctx}
	t.Cleanup(func() {
		// Close the browser gracefully, then make sure: cancelling the
		// allocator kills the process and waits for it.
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		if err := chromedp.Cancel(cctx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			t.Logf("close browser: %v", err)
		}
		ccancel()
		cancel()
		cancelAlloc()
		cancelLife()
		b.wg.Wait()
		// Chromium's helpers (zygote, utility processes) carry the profile
		// directory on their command line; none may outlive the test.
		if n := waitGone(dir, 3*time.Second); n > 0 {
			t.Errorf("%d Chromium processes outlived the browser; killed them", n)
		}
	})
	b.first = b.attach(ctx, "tab1")
	return b
}

// newTab opens another tab of the browser.
func (b *browser) newTab(name string) *tab {
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel) // runs before the browser's cleanup
	return b.attach(ctx, name)
}

func (b *browser) attach(ctx context.Context, name string) *tab {
	b.t.Helper()
	p := &tab{t: b.t, ctx: ctx, name: name}
	// The first action starts the browser (or opens the tab), which lives
	// as long as the context of that action: so ctx itself, not one with a
	// shorter timeout (the browser's lifetime bounds it).
	_, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: recordStatuses})
	if err != nil {
		b.t.Fatalf("%s: start: %v", name, err)
	}
	messages := chromedp.Console(ctx)
	b.wg.Go(func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			p.mu.Lock()
			p.console = append(p.console, m)
			p.mu.Unlock()
		}
	})
	b.t.Cleanup(func() {
		if b.t.Failed() {
			p.dumpConsole()
		}
	})
	return p
}

// waitGone waits until no process has dir as its user data directory, then
// kills any left, and returns how many were left.
func waitGone(dir string, within time.Duration) int {
	deadline := time.Now().Add(within)
	for {
		pids := processesUsing(dir)
		if len(pids) == 0 {
			return 0
		}
		if time.Now().After(deadline) {
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			return len(pids)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processesUsing lists the processes with --user-data-dir=dir on their
// command line (Linux; elsewhere none are found).
func processesUsing(dir string) []int {
	want := []byte("--user-data-dir=" + dir + "\x00")
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.Contains(cmdline, want) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// tab is one browser tab. Its methods fail the test on error, so call them from
// the test's goroutine.
type tab struct {
	t    testing.TB
	ctx  context.Context
	name string

	mu      sync.Mutex
	console []chromedp.ConsoleMessage
}

func (p *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
}

func (p *tab) open(url string) {
	p.t.Helper()
	p.do(chromedp.Navigate(url))
}

// colorScheme emulates prefers-color-scheme.
func (p *tab) colorScheme(scheme string) {
	p.t.Helper()
	p.do(chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
		})
		return err
	}))
}

// waitFor polls the JavaScript expression until it is truthy, or fails the
// test with the bell's state.
func (p *tab) waitFor(what, expr string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitTimeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(pollEvery), chromedp.WithPollingTimeout(waitTimeout)))
	if err != nil {
		p.t.Fatalf("%s: waiting for %s: %v\n  bell: %s\n  expression: %s", p.name, what, err, p.state(), expr)
	}
}

// state describes the bell, or why it cannot.
func (p *tab) state() string {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](stateJS))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return s
}

func evaluate[T any](p *tab, expr string, opts ...chromedp.EvaluateOption) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, opts...))
	if err != nil {
		p.t.Fatalf("%s: %s: %v", p.name, expr, err)
	}
	return v
}

func (p *tab) eval(expr string, opts ...chromedp.EvaluateOption) {
	p.t.Helper()
	evaluate[chromedp.Void](p, expr, opts...)
}
func (p *tab) bool(expr string) bool        { p.t.Helper(); return evaluate[bool](p, `!!(`+expr+`)`) }
func (p *tab) int(expr string) int          { p.t.Helper(); return evaluate[int](p, expr) }
func (p *tab) string(expr string) string    { p.t.Helper(); return evaluate[string](p, expr) }
func (p *tab) strings(expr string) []string { p.t.Helper(); return evaluate[[]string](p, expr) }
func (p *tab) text(css string) string {
	p.t.Helper()
	return evaluate[string](p, shadow(css)+`?.textContent ?? ''`)
}

// click clicks, with the mouse, the middle of the first element in the bell
// matching css, after checking that the element is what is there to click.
func (p *tab) click(css string) {
	p.t.Helper()
	x, y := p.point(css)
	p.do(chromedp.MouseClickXY(x, y))
}

// hover moves the mouse to the middle of the first element in the bell
// matching css.
func (p *tab) hover(css string) {
	p.t.Helper()
	x, y := p.point(css)
	p.do(chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, x, y))
}

// point is the middle of the first element in the bell matching css, in
// the viewport, after scrolling it into view and checking that it is the
// element there (not covered by another).
func (p *tab) point(css string) (x, y float64) {
	p.t.Helper()
	type point struct {
		X, Y float64
		Err  string
	}
	at := evaluate[point](p, fmt.Sprintf(`((e) => {
  if (!e) return { err: 'no such element' };
  e.scrollIntoView({ block: 'nearest' });
  const r = e.getBoundingClientRect();
  if (!r.width || !r.height) return { err: 'not rendered' };
  const x = r.left + r.width / 2, y = r.top + r.height / 2;
  const hit = e.getRootNode().elementFromPoint(x, y);
  if (!hit || !(hit === e || e.contains(hit))) return { err: 'covered by ' + (hit ? hit.outerHTML.slice(0, 120) : 'nothing') };
  return { x, y };
})(%s)`, shadow(css)))
	if at.Err != "" {
		p.t.Fatalf("%s: point at %s: %s\n  bell: %s", p.name, css, at.Err, p.state())
	}
	return at.X, at.Y
}

// screenshotBell captures the top right of the page: the header with the
// bell and its open panel, with a margin.
func (p *tab) screenshotBell() []byte {
	p.t.Helper()
	clip := evaluate[page.Viewport](p, `(() => {
  const b = document.querySelector('pgpush-bell');
  const r = b.shadowRoot.querySelector('[data-testid=pgpush-panel]').getBoundingClientRect();
  const x = Math.max(0, Math.floor(r.left) - 24);
  return { x, y: 0, width: document.documentElement.clientWidth - x, height: Math.ceil(r.bottom) + 24, scale: 1 };
})()`)
	ctx, cancel := context.WithTimeout(p.ctx, waitTimeout)
	defer cancel()
	res, err := chromedp.Call(ctx, page.CaptureScreenshot, page.CaptureScreenshotParams{
		Format: page.CaptureScreenshotFormatPng, Clip: &clip, FromSurface: ptr(true),
	})
	if err != nil {
		p.t.Fatalf("%s: screenshot: %v", p.name, err)
	}
	if _, err := png.Decode(bytes.NewReader(res.Data)); err != nil {
		p.t.Fatalf("%s: screenshot is not a PNG: %v", p.name, err)
	}
	return res.Data
}

// assertNoExceptions fails the test if the page threw an uncaught exception
// or left a promise rejection unhandled.
func (p *tab) assertNoExceptions() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.console {
		if m.IsException() {
			p.t.Errorf("%s: uncaught exception: %s", p.name, m.Text)
		}
	}
}

func (p *tab) dumpConsole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.console {
		p.t.Logf("%s console %s", p.name, m)
	}
}

// outputDir is test-output/ at the repository root (gitignored).
func outputDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join("..", "test-output")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func ptr[T any](v T) *T { return &v }
