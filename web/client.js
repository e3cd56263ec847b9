/**
 * pgpush browser client: mirrors one user's notifications over a WebSocket,
 * reconnecting with jittered backoff, resuming from its cursor, refreshing
 * tokens and pinging to find dead sockets. Types, example: client.d.ts.
 * @module
 */

const BASE = 500, CAP = 30000, STABLE = 10000, PAGE = 20, MAX = 500;

/** A JWT's payload, decoded without verifying; {} if unreadable. */
const claims = (t) => {
  try { return JSON.parse(atob(t.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))); } catch { return {}; }
};

/** Drop a socket silently; a CONNECTING one is closed once open (no console error). */
const kill = (ws) => {
  ws.onmessage = ws.onclose = ws.onerror = null;
  if (ws.readyState) ws.close(1000); else ws.onopen = () => ws.close(1000);
};

/**
 * One live connection for one user. State: `notifications` (newest first; a
 * new array on every change), `unread`, `status`, `userId`, `hasMore`.
 * Events (CustomEvent): `status`, `change`, `notification`, `error`.
 */
export class PgpushClient extends EventTarget {
  /** @param {import('./client').PgpushOptions} [options] */
  constructor({ url, token = '', getToken, pingInterval = 25000, pingTimeout = 10000 } = {}) {
    super();
    url = String(url || new URL(import.meta.url).origin).replace(/\/?$/, '/');
    Object.assign(this, { url, token, getToken, pingInterval, pingTimeout, status: 'connecting' });
    this._reset();
    // _t: timers by name; _n: failures since a stable connection; _gen: orphans async work
    Object.assign(this, { _t: {}, _n: 0, _gen: 0, _stopped: true });
    this._online = () => this.status !== 'unauthorized' && !this._ws && this._restart();
    this._offline = () => this.status !== 'unauthorized' && (this._halt(), this._set('offline'));
  }

  /** Start, or restart after close() or `unauthorized`. @returns {this} */
  connect() {
    if (this._stopped) this._listen('add'), (this._stopped = false);
    if (!this._ws) this._restart();
    return this;
  }

  /** Close the socket and stop; the state is kept. */
  close() {
    this._stopped = true;
    this._halt();
    this._listen('remove');
  }

  /** Use a new token: sent as `auth` when open; another user's token starts over. @param {string} token */
  setToken(token) {
    this.token = token;
    const sub = claims(token).sub;
    if (this.userId && sub && sub !== this.userId) this._reset(), this._emit('change');
    else if (this._send({ type: 'auth', token })) return;
    if (!this._stopped) this._restart();
  }

  /** Mark rows read: over the socket when open, else over HTTP. @param {number|number[]} ids */
  async markRead(ids) {
    ids = [].concat(ids);
    if (!this._send({ type: 'read', ids })) await this._post({ ids }, (n) => ids.includes(n.id));
  }

  /** Mark all rows read. */
  async markAllRead() {
    if (!this._send({ type: 'read_all' })) await this._post({ all: true }, () => true);
  }

  /** Append the next older page. @returns {Promise<boolean>} whether more remain */
  loadMore() {
    const last = this.notifications.at(-1);
    return (this._more ??= this._api(`v1/notifications?limit=${PAGE}` + (last ? `&before=${last.id}` : ''))
      .then((r) => {
        this._put(r.notifications, false);
        this.hasMore = r.next != null;
        this.unread = r.unread;
        this._emit('change');
        return this.hasMore;
      })
      .finally(() => (this._more = null)));
  }

  _listen(how) {
    for (const e of ['online', 'offline']) globalThis[how + 'EventListener']?.(e, this['_' + e]);
  }

  _reset() {
    Object.assign(this, { userId: null, cursor: null, notifications: [], unread: 0, hasMore: false });
  }

  _emit(type, detail = this) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _set(status) {
    if (status === this.status) return;
    this.status = status;
    this._emit('status', { status });
    this._emit('change');
  }

  _timer(name, ms, fn) {
    clearTimeout(this._t[name]);
    this._t[name] = fn && setTimeout(fn, Math.min(ms, 2 ** 31 - 1));
  }

  _send(msg) {
    const ok = this._ws?.readyState === 1 && this.status === 'open';
    if (ok) this._ws.send(JSON.stringify(msg));
    return ok;
  }

  /** Drop the socket and cancel every timer. */
  _halt() {
    this._gen++;
    for (const k in this._t) this._timer(k);
    if (this._ws) kill(this._ws);
    this._ws = null;
  }

  _restart() {
    this._halt();
    this._n = 0;
    this._authRetried = false;
    this._open();
  }

  _retry(ms = Math.random() * Math.min(CAP, BASE * 2 ** this._n++)) {
    this._set('reconnecting');
    this._timer('retry', ms, () => this._open());
  }

  /** The token: from getToken() if set, then refreshed before its exp (not within 5 s). */
  async _fresh() {
    if (!this.getToken) return this.token;
    const ms = claims((this.token = await this.getToken())).exp * 1000 - Date.now();
    if (ms > 0) this._refresh(Math.max(5000, ms - Math.min(30000, ms / 4)));
    return this.token;
  }

  /** In `ms`, send a fresh token on the open socket; on failure retry in 10 s. */
  _refresh(ms) {
    this._timer('refresh', ms, () =>
      this._fresh().then((token) => this._send({ type: 'auth', token }), () => this._refresh(10000)));
  }

  async _open() {
    const gen = ++this._gen;
    if (globalThis.navigator?.onLine === false) return this._set('offline');
    if (this.status !== 'reconnecting') this._set(this.userId || this._n ? 'reconnecting' : 'connecting');
    const token = await this._fresh().catch(() => null);
    if (gen !== this._gen) return;
    if (token == null) return this._retry();
    const u = new URL('v1/ws', this.url);
    u.protocol = u.protocol.replace('http', 'ws');
    u.searchParams.set('token', token);
    if (this.cursor) u.searchParams.set('cursor', this.cursor);
    const ws = (this._ws = new WebSocket(u));
    let opened = 0;
    const ping = () => this._timer('ping', this.pingInterval, () => {
      ws.send('{"type":"ping"}');
      this._timer('dead', this.pingTimeout, () => this._closed(ws, 4000, opened, token));
      ping();
    });
    ws.onopen = () => ((opened = Date.now()), ping());
    ws.onmessage = (e) => this._frame(e.data);
    ws.onclose = (e) => this._closed(ws, e.code, opened, token);
  }

  /** What follows a lost socket; `opened` is 0 if it never opened. */
  async _closed(ws, code, opened, token) {
    if (ws !== this._ws) return;
    this._halt();
    const gen = this._gen;
    if (globalThis.navigator?.onLine === false) return this._set('offline');
    if (opened && Date.now() - opened > STABLE) this._n = 0;
    if (code === 4001) return this.getToken ? this._retry() : this._set('unauthorized');
    if (code === 1008) return this._retry((CAP * (1 + Math.random())) / 2);
    if (code === 1013) return this._retry(Math.random() * BASE);
    if (!opened) {
      // A browser hides the handshake's status: ask HTTP if the token is refused.
      this._set('reconnecting');
      const auth = { headers: { Authorization: `Bearer ${token}` } };
      const s = await fetch(new URL('v1/notifications?limit=1', this.url), auth).then((r) => r.status, () => 0);
      if (gen !== this._gen) return;
      if (s === 401 && (!this.getToken || this._authRetried)) return this._set('unauthorized');
      if (s === 401) return (this._authRetried = true), this._retry(0);
    }
    this._retry();
  }

  /** Apply one server frame. */
  _frame(data) {
    this._timer('dead');
    let m;
    try { m = JSON.parse(data); } catch { return; }
    if (m.cursor) this.cursor = m.cursor;
    if (typeof m.unread === 'number') this.unread = m.unread;
    const { type, notification: n } = m;
    if (type === 'ready') {
      this.userId = m.user_id;
      this._authRetried = false;
      if (m.notifications || m.resync) {
        this.notifications = (m.notifications || []).sort((a, b) => b.id - a.id);
        this.hasMore = this.notifications.length >= PAGE;
      }
      return this.status === 'open' ? this._emit('change') : this._set('open');
    }
    if (type === 'created' || type === 'updated') {
      const fresh = type === 'created' && !this.notifications.some((x) => x.id === n.id);
      this._put([n], true);
      this._emit('change');
      if (fresh) this._emit('notification', { notification: n });
    } else if (type === 'deleted') {
      this.notifications = this.notifications.filter((x) => x.id !== m.id);
      this._emit('change');
    } else if (type === 'error') this._emit('error', m);
  }

  /** Upsert rows newest first; a live row below an incomplete window is skipped (no gaps). */
  _put(rows, live) {
    const a = this.notifications.slice();
    for (const n of rows) {
      const i = a.findIndex((x) => x.id <= n.id);
      if (i >= 0) a.splice(i, a[i].id === n.id ? 1 : 0, n);
      else if (!live || !this.hasMore) a.push(n);
    }
    if (live && a.length > MAX) (a.length = MAX), (this.hasMore = true);
    this.notifications = a;
  }

  /** HTTP API call; failures reject with an Error with `status` and `code`. */
  async _api(path, body) {
    const headers = { Authorization: `Bearer ${this.token || (await this._fresh())}`, 'Content-Type': 'application/json' };
    const r = await fetch(new URL(path, this.url), body ? { method: 'POST', headers, body: JSON.stringify(body) } : { headers });
    const j = await r.json().catch(() => ({}));
    if (r.ok) return j;
    throw Object.assign(new Error(j.message || `HTTP ${r.status}`), { status: r.status, code: j.error });
  }

  /** Mark read over HTTP, applied locally: no socket echoes it. */
  async _post(body, match) {
    const r = await this._api('v1/notifications/read', body);
    const now = new Date().toISOString();
    this.notifications = this.notifications.map((n) => (!n.read_at && match(n) ? { ...n, read_at: now } : n));
    this.unread = r.unread;
    this._emit('change');
  }
}

/** Create a client and connect it. @param {import('./client').PgpushOptions} [options] */
export const connect = (options) => new PgpushClient(options).connect();
