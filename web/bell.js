/**
 * `<pgpush-bell>`: a notification bell built on the pgpush client. Plain
 * custom element with Shadow DOM, no framework, no dependencies.
 *
 * ```html
 * <script type="module" src="https://push.example.com/v1/bell.js"></script>
 * <pgpush-bell></pgpush-bell>
 * <script type="module">
 *   document.querySelector('pgpush-bell').getToken = () => fetch('/api/pgpush-token').then((r) => r.text());
 * </script>
 * ```
 *
 * Attributes: `server` (base URL; default: the origin that served this file),
 * `token`, `theme` (`light` | `dark`; default: `prefers-color-scheme`).
 * Properties: `getToken` (function), `client` (the PgpushClient, read-only),
 * `open`, and `toggle(force?)`. The host reflects `data-status` and
 * `data-unread`. Styling: the `--pgpush-*` custom properties below and the
 * `part`s listed in client.d.ts.
 * @module
 */
import { PgpushClient } from './client.js';

const TOASTS = 3; // visible at once; a bigger burst becomes one summary toast
const TOAST_MS = 5000;

const LIGHT = `
  --_accent: var(--pgpush-accent, #2563eb);
  --_bg: var(--pgpush-bg, #ffffff);
  --_fg: var(--pgpush-fg, #111827);
  --_muted: var(--pgpush-muted, #5b6472);
  --_border: var(--pgpush-border, #e3e6ea);
  --_unread-bg: var(--pgpush-unread-bg, #eef4ff);
  --_ok: var(--pgpush-ok, #16a34a);
  --_warn: var(--pgpush-warn, #d97706);
  --_bad: var(--pgpush-bad, #dc2626);
  --_shadow: var(--pgpush-shadow, 0 12px 32px rgb(15 23 42 / 0.16), 0 2px 6px rgb(15 23 42 / 0.08));
  color-scheme: light;`;
const DARK = `
  --_accent: var(--pgpush-accent, #7aa7ff);
  --_bg: var(--pgpush-bg, #1d2128);
  --_fg: var(--pgpush-fg, #e8eaee);
  --_muted: var(--pgpush-muted, #a0a8b5);
  --_border: var(--pgpush-border, #343a45);
  --_unread-bg: var(--pgpush-unread-bg, #22304a);
  --_ok: var(--pgpush-ok, #4ade80);
  --_warn: var(--pgpush-warn, #fbbf24);
  --_bad: var(--pgpush-bad, #f87171);
  --_shadow: var(--pgpush-shadow, 0 12px 32px rgb(0 0 0 / 0.5));
  color-scheme: dark;`;

const CSS = `
:host { ${LIGHT}
  --_badge: var(--pgpush-badge-bg, #dc2626); /* white text stays readable on it in both themes */
  --_radius: var(--pgpush-radius, 12px);
  --_font: var(--pgpush-font, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif);
  display: inline-block; position: relative; font: 14px/1.45 var(--_font); vertical-align: middle;
}
:host([theme="dark"]) { ${DARK} }
@media (prefers-color-scheme: dark) { :host(:not([theme="light"])) { ${DARK} } }
[hidden] { display: none !important; }
.sr { position: absolute; width: 1px; height: 1px; margin: -1px; padding: 0; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0; }
button, a { font: inherit; color: inherit; }
:focus-visible { outline: 2px solid var(--_accent); outline-offset: 2px; }
.bell { position: relative; display: grid; place-items: center; width: 40px; height: 40px; padding: 0; border: 0; border-radius: 50%; background: transparent; cursor: pointer; }
.bell:hover, .bell[aria-expanded="true"] { background: color-mix(in srgb, currentColor 10%, transparent); }
.bell svg { width: 22px; height: 22px; fill: none; stroke: currentColor; stroke-width: 2; stroke-linecap: round; stroke-linejoin: round; }
.badge { position: absolute; top: 2px; right: 0; min-width: 18px; height: 18px; padding: 0 5px; box-sizing: border-box; border-radius: 9px; background: var(--_badge); color: #fff; font-size: 11px; font-weight: 700; line-height: 18px; text-align: center; box-shadow: 0 0 0 2px var(--_bg); }
.status { position: absolute; bottom: 6px; right: 6px; width: 9px; height: 9px; border-radius: 50%; background: var(--_muted); box-shadow: 0 0 0 2px var(--_bg); pointer-events: none; }
.status[data-status="open"] { background: var(--_ok); }
.status[data-status="connecting"], .status[data-status="reconnecting"] { background: var(--_warn); animation: pulse 1.2s ease-in-out infinite; }
.status[data-status="unauthorized"] { background: var(--_bad); }
@keyframes pulse { 50% { opacity: 0.35; } }
.panel { position: absolute; z-index: 1000; top: calc(100% + 8px); right: 0; display: flex; flex-direction: column;
  width: var(--pgpush-panel-width, min(24rem, calc(100vw - 16px))); max-height: min(70vh, 34rem);
  background: var(--_bg); color: var(--_fg); border: 1px solid var(--_border); border-radius: var(--_radius); box-shadow: var(--_shadow); overflow: hidden; text-align: start; }
.head { display: flex; align-items: center; justify-content: space-between; gap: 8px; padding: 10px 14px; border-bottom: 1px solid var(--_border); }
h2 { margin: 0; font-size: 15px; font-weight: 650; }
.link { padding: 4px 8px; border: 0; border-radius: 6px; background: none; color: var(--_accent); cursor: pointer; font-size: 13px; font-weight: 550; }
.link:hover:not(:disabled) { background: color-mix(in srgb, var(--_accent) 12%, transparent); }
.link:disabled { color: var(--_muted); cursor: default; }
.note { margin: 0; padding: 8px 14px; font-size: 13px; color: var(--_muted); border-bottom: 1px solid var(--_border); }
.scroll { overflow-y: auto; overscroll-behavior: contain; }
ul { list-style: none; margin: 0; padding: 0; }
li + li { border-top: 1px solid var(--_border); }
.row { display: grid; grid-template-columns: 8px 1fr; column-gap: 10px; width: 100%; box-sizing: border-box; padding: 10px 14px; border: 0; background: none; text-align: start; text-decoration: none; cursor: pointer; }
.row::before { content: ""; grid-row: 1 / span 3; width: 8px; height: 8px; margin-top: 7px; border-radius: 50%; }
.row:hover { background: color-mix(in srgb, var(--_fg) 5%, transparent); }
.row:focus-visible { outline-offset: -2px; }
.unread .row { background: var(--_unread-bg); }
.unread .row::before { background: var(--_accent); }
.title, .body, time { grid-column: 2; min-width: 0; overflow-wrap: anywhere; }
.title { font-weight: 450; }
.unread .title { font-weight: 650; }
.body { color: var(--_muted); display: -webkit-box; -webkit-box-orient: vertical; -webkit-line-clamp: 3; overflow: hidden; }
time { color: var(--_muted); font-size: 12px; margin-top: 2px; }
.empty { margin: 0; padding: 28px 14px; text-align: center; color: var(--_muted); }
.more { margin: 6px auto 10px; display: block; }
.toasts { position: fixed; z-index: 1001; right: 16px; bottom: 16px; display: flex; flex-direction: column; gap: 8px; width: min(22rem, calc(100vw - 32px)); pointer-events: none; }
.toast { display: flex; align-items: flex-start; gap: 8px; padding: 12px 8px 12px 14px; background: var(--_bg); color: var(--_fg); border: 1px solid var(--_border); border-left: 4px solid var(--_accent); border-radius: var(--_radius); box-shadow: var(--_shadow); pointer-events: auto; animation: in 0.18s ease-out; }
.toast div { flex: 1; min-width: 0; overflow-wrap: anywhere; }
.toast strong { display: block; font-weight: 650; }
.toast span { color: var(--_muted); display: -webkit-box; -webkit-box-orient: vertical; -webkit-line-clamp: 2; overflow: hidden; }
.x { flex: none; width: 28px; height: 28px; border: 0; border-radius: 6px; background: none; color: var(--_muted); cursor: pointer; font-size: 18px; line-height: 1; }
.x:hover { background: color-mix(in srgb, var(--_fg) 8%, transparent); color: var(--_fg); }
@keyframes in { from { opacity: 0; transform: translateY(8px); } }
@media (prefers-reduced-motion: reduce) { .status, .toast { animation: none !important; } }
`;

const HTML = `
<button class="bell" part="button" data-testid="pgpush-bell-button" type="button" aria-expanded="false" aria-controls="panel">
  <svg viewBox="0 0 24 24" aria-hidden="true"><path d="M18 8a6 6 0 0 0-12 0c0 7-3 9-3 9h18s-3-2-3-9"/><path d="M13.7 21a2 2 0 0 1-3.4 0"/></svg>
  <span class="sr" id="label">Notifications</span>
  <span class="badge" part="badge" data-testid="pgpush-badge" aria-hidden="true" hidden></span>
</button>
<span class="sr">Connection:</span>
<span class="status" part="status" data-testid="pgpush-status"><span class="sr" id="status-text"></span></span>
<div class="panel" part="panel" data-testid="pgpush-panel" id="panel" role="region" aria-labelledby="heading" hidden>
  <div class="head">
    <h2 id="heading">Notifications</h2>
    <button class="link" part="mark-all" data-testid="pgpush-mark-all" type="button">Mark all read</button>
  </div>
  <p class="note" part="note" data-testid="pgpush-note" hidden></p>
  <div class="scroll">
    <ul part="list" data-testid="pgpush-list" role="list" aria-labelledby="heading"></ul>
    <p class="empty" part="empty" data-testid="pgpush-empty" hidden>You’re all caught up.</p>
    <button class="link more" part="load-more" data-testid="pgpush-load-more" type="button" hidden>Load more</button>
  </div>
</div>
<div class="toasts" part="toasts" data-testid="pgpush-toasts" aria-live="polite"></div>`;

const NOTES = {
  connecting: 'Connecting…',
  reconnecting: 'Connection lost. Reconnecting…',
  offline: 'You are offline. Updates resume when the network is back.',
  unauthorized: 'Not signed in: the server refused the token.',
};

/** Milliseconds since the epoch of a server timestamp (Safari parses at most 3 fraction digits). */
const parseTime = (iso) => Date.parse(String(iso).replace(/(\.\d{3})\d+/, '$1'));

/** "just now", "5 min ago", "3 hr ago", "yesterday", "4 days ago", then the date. @param {string|number} time */
export function relativeTime(time, now = Date.now()) {
  const t = typeof time === 'number' ? time : parseTime(time);
  const min = Math.round((now - t) / 60000);
  if (!(min >= 1)) return 'just now';
  if (min < 60) return `${min} min ago`;
  const hr = Math.round(min / 60);
  if (hr < 24) return `${hr} hr ago`;
  const days = Math.round(hr / 24);
  if (days < 7) return days === 1 ? 'yesterday' : `${days} days ago`;
  return new Date(t).toLocaleDateString();
}

/** The URL if it is http(s), else null: a row's `url` must not run script. */
function safeUrl(url) {
  try {
    const u = new URL(url, document.baseURI);
    return u.protocol === 'https:' || u.protocol === 'http:' ? u.href : null;
  } catch {
    return null;
  }
}

/** A new element with attributes (null ones skipped) and children (text is never parsed as HTML). */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v != null) e.setAttribute(k, v);
  e.append(...children);
  return e;
}

/** The `<pgpush-bell>` element. See the module comment and client.d.ts. */
// Outside a browser (a server render importing this module) there is no
// HTMLElement to extend and nothing to define: importing must not throw.
const Base = globalThis.HTMLElement ?? class {};

export class PgpushBellElement extends Base {
  static observedAttributes = ['server', 'token'];

  constructor() {
    super();
    const root = this.attachShadow({ mode: 'open' });
    root.innerHTML = `<style>${CSS}</style>${HTML}`;
    const $ = (s) => root.querySelector(s);
    this._root = root;
    this._btn = $('.bell');
    this._badge = $('.badge');
    this._label = $('#label');
    this._status = $('.status');
    this._panel = $('.panel');
    this._note = $('.note');
    this._list = $('ul');
    this._empty = $('.empty');
    this._more = $('[part=load-more]');
    this._markAll = $('[part=mark-all]');
    this._toasts = $('.toasts');
    this._items = new Map(); // id → <li>
    this._queue = []; // notifications waiting for a toast
    this._outside = (e) => !e.composedPath().includes(this) && this.toggle(false);

    this._btn.addEventListener('click', () => this.toggle());
    this._markAll.addEventListener('click', () => this.client.markAllRead().catch(() => {}));
    this._more.addEventListener('click', () => this._loadMore());
    this._list.addEventListener('click', (e) => this._activate(e));
    root.addEventListener('keydown', (e) => this._key(e));
  }

  /** The token callback; setting it (re)connects. */
  get getToken() {
    return this._getToken;
  }
  set getToken(fn) {
    this._getToken = fn;
    if (this._client) this._client.getToken = fn;
    this._start();
  }

  /** The PgpushClient behind the element, created on first use. */
  get client() {
    if (!this._client) {
      const c = new PgpushClient({
        url: this.getAttribute('server') || undefined,
        token: this.getAttribute('token') || '',
        getToken: this._getToken,
      });
      c.addEventListener('change', () => this._changed());
      c.addEventListener('notification', (e) => {
        if (c === this._client && !e.detail.notification.read_at) this._queue.push(e.detail.notification);
      });
      this._client = c;
      this._changed();
    }
    return this._client;
  }

  /** Whether the panel is open. */
  get open() {
    return !this._panel.hidden;
  }

  /** Open or close the panel; toggles without an argument. @param {boolean} [force] */
  toggle(force = !this.open) {
    if (force === this.open) return;
    this._panel.hidden = !force;
    this._btn.setAttribute('aria-expanded', String(force));
    document[force ? 'addEventListener' : 'removeEventListener']('pointerdown', this._outside, true);
    if (force) this._render(), this._place();
  }

  /** Keep the open panel inside the viewport (it hangs from the bell's right edge). */
  _place() {
    const p = this._panel;
    p.style.right = '';
    const r = p.getBoundingClientRect();
    const vw = document.documentElement.clientWidth;
    const shift = r.left < 8 ? r.left - 8 : r.right > vw - 8 ? r.right - vw + 8 : 0;
    if (shift) p.style.right = `${shift}px`;
  }

  connectedCallback() {
    // A property set before the element was upgraded shadows the accessor: re-set it.
    if (Object.hasOwn(this, 'getToken')) {
      const fn = this.getToken;
      delete this.getToken;
      this.getToken = fn;
    }
    clearInterval(this._tick);
    this._tick = setInterval(() => this._times(), 60000);
    this._start();
  }

  disconnectedCallback() {
    // Moving the element in the DOM disconnects and reconnects it at once: keep the socket then.
    queueMicrotask(() => {
      if (this.isConnected) return;
      clearInterval(this._tick);
      this.toggle(false);
      this._client?.close();
    });
  }

  attributeChangedCallback(name, old, value) {
    if (old === value || !this._client) return;
    if (name === 'server') {
      this._client.close();
      this._client = null;
      this._items.clear();
      this._list.replaceChildren();
    } else {
      this._client.setToken(value || '');
    }
    this._start();
  }

  /** Create the client (so `client` and data-status exist); connect once there is a token. */
  _start() {
    if (!this.isConnected) return;
    const c = this.client;
    if (this._getToken || this.getAttribute('token')) c.connect();
  }

  /**
   * The client's state changed: the host attributes, badge and status follow at
   * once (test hooks never disagree); the list and toasts render soon, once per burst.
   */
  _changed() {
    const c = this._client;
    if (!c) return;
    const { status, unread, notifications } = c;
    this.dataset.status = status;
    this.dataset.unread = String(unread);
    this._badge.hidden = unread <= 0;
    this._badge.textContent = unread > 99 ? '99+' : String(unread);
    this._label.textContent = unread > 0 ? `Notifications, ${unread} unread` : 'Notifications';
    this._status.dataset.status = status;
    this._status.firstChild.textContent = status;
    this._note.hidden = status === 'open';
    this._note.textContent = NOTES[status] || '';
    this._markAll.disabled = unread <= 0;
    this._empty.hidden = notifications.length > 0 || c.userId == null;
    this._more.hidden = !c.hasMore || notifications.length === 0;
    this._pending ??= setTimeout(() => this._render(), 16);
  }

  _render() {
    clearTimeout(this._pending);
    this._pending = null;
    if (this.open && this._client) this._renderList(this._client.notifications);
    this._renderToasts();
  }

  /** Keyed update of the list: existing rows are kept (and keep focus) unless their row changed. */
  _renderList(notifications) {
    const focused = this._root.activeElement?.closest?.('li');
    const wanted = new Set(notifications.map((n) => n.id));
    for (const [id, li] of this._items) {
      if (wanted.has(id)) continue;
      li.remove();
      this._items.delete(id);
    }
    let prev = null;
    for (const n of notifications) {
      let li = this._items.get(n.id);
      if (!li) this._items.set(n.id, (li = el('li')));
      if (li._n !== n) this._fill(li, n);
      const at = prev ? prev.nextSibling : this._list.firstChild;
      if (li !== at) this._list.insertBefore(li, at);
      prev = li;
    }
    // One row in the tab order: the focused one, else the first. A deleted focused row hands focus on.
    const first = this._list.querySelector('.row');
    // (A boolean: undefined would take _focusRow's default and steal the focus.)
    const lost = !!focused && !focused.isConnected;
    this._focusRow((focused?.isConnected && focused.firstChild) || first, lost && !!first);
  }

  _fill(li, n) {
    const hadFocus = this._root.activeElement === li.firstChild;
    const unread = !n.read_at;
    const href = n.url && safeUrl(n.url);
    const row = href ? el('a', { class: 'row', href }) : el('button', { class: 'row', type: 'button' });
    if (unread) row.append(el('span', { class: 'sr' }, 'Unread: '));
    row.append(el('span', { class: 'title', part: 'title' }, n.title));
    if (n.body) row.append(el('span', { class: 'body', part: 'body' }, n.body));
    const t = parseTime(n.created_at);
    row.append(el('time', { part: 'time', datetime: n.created_at, title: new Date(t).toLocaleString() }, relativeTime(t)));
    li._n = n;
    li.className = unread ? 'unread' : '';
    li.dataset.id = String(n.id);
    li.dataset.testid = 'pgpush-item';
    li.dataset.unread = String(unread);
    li.setAttribute('part', unread ? 'item item-unread' : 'item');
    li.replaceChildren(row);
    if (hadFocus) row.focus();
  }

  _renderToasts() {
    const q = this._queue.splice(0);
    if (!q.length) return;
    const items = q.length > TOASTS ? [{ title: `${q.length} new notifications`, body: '' }] : q;
    for (const n of items) this._toast(n);
    while (this._toasts.children.length > TOASTS) this._toasts.firstChild.remove();
  }

  _toast(n) {
    const close = el('button', { class: 'x', part: 'toast-dismiss', 'data-testid': 'pgpush-toast-dismiss', type: 'button', 'aria-label': 'Dismiss' }, '×');
    const body = el('div', {}, el('strong', {}, n.title));
    if (n.body) body.append(el('span', {}, n.body));
    const t = el('div', { class: 'toast', part: 'toast', 'data-testid': 'pgpush-toast', 'data-id': n.id }, body, close);
    // Auto-dismiss, paused while pointed at or focused so it can be read and reached.
    let timer;
    const hold = () => clearTimeout(timer);
    const arm = () => (hold(), (timer = setTimeout(() => t.remove(), TOAST_MS)));
    t.addEventListener('pointerenter', hold);
    t.addEventListener('focusin', hold);
    t.addEventListener('pointerleave', arm);
    t.addEventListener('focusout', arm);
    close.addEventListener('click', () => {
      hold();
      t.remove();
      this._btn.focus(); // the focused button is gone: land somewhere sensible
    });
    this._toasts.append(t);
    arm();
  }

  /** Refresh the relative times (every minute). */
  _times() {
    for (const t of this._list.querySelectorAll('time')) t.textContent = relativeTime(t.dateTime);
  }

  async _loadMore() {
    this._more.disabled = true;
    this._more.textContent = 'Loading…';
    try {
      await this.client.loadMore();
    } catch {
      // The button stays for another try.
    } finally {
      this._more.disabled = false;
      this._more.textContent = 'Load more';
    }
  }

  /** A row was clicked or activated with Enter: mark it read; a link row then navigates by itself. */
  _activate(e) {
    const li = e.target.closest('li');
    if (!li?._n) return;
    this._focusRow(li.firstChild, false);
    if (!li._n.read_at) this.client.markRead(li._n.id).catch(() => {});
  }

  _key(e) {
    if (e.key === 'Escape' && this.open) {
      e.preventDefault();
      this.toggle(false);
      this._btn.focus();
      return;
    }
    const rows = () => [...this._list.querySelectorAll('.row')];
    let i;
    if (e.target === this._btn && e.key === 'ArrowDown') {
      this.toggle(true); // renders the list synchronously
      i = 0;
    } else {
      const at = rows().indexOf(this._root.activeElement);
      if (at < 0) return;
      i = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: Infinity }[e.key];
    }
    if (i == null || !rows().length) return;
    e.preventDefault();
    this._focusRow(rows()[Math.max(0, Math.min(rows().length - 1, i))]);
  }

  /** Roving tabindex: only `row` is in the tab order. */
  _focusRow(row, focus = true) {
    for (const r of this._list.querySelectorAll('.row')) r.tabIndex = r === row ? 0 : -1;
    if (focus) row?.focus();
  }
}

if (globalThis.customElements && !customElements.get('pgpush-bell')) customElements.define('pgpush-bell', PgpushBellElement);
