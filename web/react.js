/**
 * React bindings for pgpush (`@pgpush/client/react`): `useNotifications()`,
 * a hook over one shared PgpushClient per pgpush server, and `<PgpushBell>`,
 * the `<pgpush-bell>` element with `getToken` passed as a property. Types:
 * react.d.ts.
 *
 * Safe to render on a server: nothing connects until a component is mounted
 * in a browser, and a server render (and the hydration that follows it) shows
 * `initialState`.
 * @module
 */
import { createElement, forwardRef, useCallback, useEffect, useRef, useSyncExternalStore } from 'react';
import { PgpushClient } from './client.js';
import './bell.js';

/** What the hook returns before the first frame, and on the server. */
export const initialState = Object.freeze({
  notifications: Object.freeze([]),
  unread: 0,
  status: 'connecting',
  hasMore: false,
});

/** One store per server URL: its client, created on first use in a browser, and the last snapshot. */
const stores = new Map();

function storeFor(url) {
  const key = url == null ? '' : String(url);
  let s = stores.get(key);
  if (s) return s;
  s = { client: null, snapshot: initialState, getToken: undefined };
  s.connect = () => {
    // getToken goes through the store, so a component's newer callback is the one called.
    s.client ??= new PgpushClient({
      url: key || undefined,
      getToken: async () => {
        if (!s.getToken) throw new Error('pgpush: pass getToken to useNotifications() or pgpushClient()');
        return s.getToken();
      },
    }).connect();
    return s.client;
  };
  // useSyncExternalStore needs the same object back until something changes.
  s.getSnapshot = () => {
    const c = s.client;
    if (!c) return initialState;
    const { notifications, unread, status, hasMore } = c;
    const p = s.snapshot;
    if (notifications !== p.notifications || unread !== p.unread || status !== p.status || hasMore !== p.hasMore) {
      s.snapshot = { notifications, unread, status, hasMore };
    }
    return s.snapshot;
  };
  s.subscribe = (onChange) => {
    const c = s.connect();
    c.addEventListener('change', onChange);
    return () => c.removeEventListener('change', onChange);
  };
  s.actions = {
    markRead: (ids) => s.connect().markRead(ids),
    markAllRead: () => s.connect().markAllRead(),
    loadMore: () => s.connect().loadMore(),
  };
  stores.set(key, s);
  return s;
}

const serverSnapshot = () => initialState;

/**
 * The page's client for `url` (default: the origin that served client.js),
 * created and connected on first use. For events (`notification` for toasts),
 * `close()` on sign-out and `setToken()` on a change of user. Browser only.
 */
export function pgpushClient({ url, getToken } = {}) {
  const s = storeFor(url);
  if (getToken) s.getToken = getToken;
  return s.connect();
}

/**
 * The signed-in user's notifications, live: `{ notifications, unread, status,
 * hasMore, markRead, markAllRead, loadMore }`. Every component that calls it
 * with the same `url` shares one WebSocket, which stays open for the page (see
 * pgpushClient for closing it). `getToken` returns a JWT for the user; the
 * latest one passed is called on every (re)connect and before expiry.
 */
export function useNotifications({ url, getToken } = {}) {
  const s = storeFor(url);
  if (getToken) s.getToken = getToken;
  const state = useSyncExternalStore(s.subscribe, s.getSnapshot, serverSnapshot);
  return { ...state, ...s.actions };
}

/**
 * `<pgpush-bell>` for React 18 and 19: `getToken` is set as the element's
 * property (React 18 would pass a function as a string attribute); `server`,
 * `token`, `theme` and any other props go to the element as usual. The ref is
 * the element.
 */
export const PgpushBell = forwardRef(function PgpushBell({ getToken, ...props }, ref) {
  const el = useRef(null);
  const setRef = useCallback(
    (node) => {
      el.current = node;
      if (typeof ref === 'function') ref(node);
      else if (ref) ref.current = node;
    },
    [ref],
  );
  useEffect(() => {
    if (el.current && getToken && el.current.getToken !== getToken) el.current.getToken = getToken;
  }, [getToken]);
  return createElement('pgpush-bell', { ...props, ref: setRef });
});
