/**
 * Types for the pgpush browser client (`/v1/client.js`, npm `@pgpush/client`)
 * and the `<pgpush-bell>` element (`/v1/bell.js`, `@pgpush/client/bell`).
 *
 * @example
 * ```js
 * import { connect } from 'https://push.example.com/v1/client.js';
 *
 * const client = connect({
 *   getToken: () => fetch('/api/pgpush-token').then((r) => r.text()),
 * });
 * client.addEventListener('change', () => render(client.notifications, client.unread));
 * client.addEventListener('notification', (e) => toast(e.detail.notification.title));
 * ```
 *
 * React: `useNotifications()` from `@pgpush/client/react` (react.d.ts).
 */

/** One row of the `notifications` table, as the server sends it. */
export interface Notification {
  id: number;
  user_id: string;
  kind: string;
  title: string;
  body: string;
  url: string | null;
  data: Record<string, unknown>;
  /** RFC 3339 with microseconds, UTC, e.g. `2026-11-25T18:49:07.123456Z`. */
  created_at: string;
  /** `null` while unread. */
  read_at: string | null;
}

/**
 * - `connecting`: first connection attempt.
 * - `open`: the server's `ready` arrived; the state is live.
 * - `reconnecting`: the socket was lost (or an attempt failed); waiting or retrying.
 * - `offline`: `navigator.onLine` is false; paused until the `online` event.
 * - `unauthorized`: the token is refused; stopped until `setToken()` or `connect()`.
 */
export type PgpushStatus = 'connecting' | 'open' | 'reconnecting' | 'offline' | 'unauthorized';

export interface PgpushOptions {
  /**
   * Base URL of the pgpush server, e.g. `https://push.example.com` (a path
   * prefix is kept). Default: the origin that served client.js.
   */
  url?: string | URL;
  /** A JWT. Used as is; when it expires the status becomes `unauthorized`. */
  token?: string;
  /**
   * Returns a JWT. Called on every (re)connect and again shortly before the
   * current token's `exp` (read without verifying), after which the fresh token
   * is sent on the open socket. Throwing counts as a failed attempt (backoff).
   */
  getToken?: () => string | Promise<string>;
  /** Milliseconds between pings. Default 25000. */
  pingInterval?: number;
  /** Milliseconds to wait for any frame after a ping before the socket is taken as dead. Default 10000. */
  pingTimeout?: number;
}

/** A server `error` frame: a client message was malformed or refused. The connection stays open. */
export interface PgpushErrorFrame {
  type: 'error';
  error: string;
  message: string;
}

export interface PgpushEventMap {
  /** The status changed. */
  status: CustomEvent<{ status: PgpushStatus }>;
  /** Anything in the state changed (list, unread, status, userId, hasMore). `detail` is the client. */
  change: CustomEvent<PgpushClient>;
  /**
   * A notification was created whose id the client had not seen: a live insert,
   * or one replayed after a resume. Not fired for the initial list, pages or resyncs.
   */
  notification: CustomEvent<{ notification: Notification }>;
  /** The server sent an `error` frame. */
  error: CustomEvent<PgpushErrorFrame>;
}

/** An error from the HTTP API (`loadMore`, and `markRead`/`markAllRead` while the socket is down). */
export interface PgpushHttpError extends Error {
  /** HTTP status. */
  status: number;
  /** The server's error code, e.g. `unauthorized`. */
  code?: string;
}

/**
 * Keeps one WebSocket to pgpush open for one user and mirrors that user's
 * notifications. Reconnects with full-jitter exponential backoff (500 ms base,
 * 30 s cap, reset after 10 s of a healthy connection), resumes with the last
 * cursor, de-duplicates by id. Not connected until `connect()`.
 */
export class PgpushClient extends EventTarget {
  constructor(options?: PgpushOptions);

  /** The base URL, always ending in `/`. */
  readonly url: string;
  /** The current token. */
  readonly token: string;
  /** The token callback; may be replaced before the next (re)connect. */
  getToken?: () => string | Promise<string>;
  pingInterval: number;
  pingTimeout: number;

  /**
   * The loaded notifications, newest first by id, without duplicates. Replaced
   * by a new array on every change; do not mutate.
   */
  readonly notifications: readonly Notification[];
  /** The user's unread count, as last reported by the server. */
  readonly unread: number;
  readonly status: PgpushStatus;
  /** The JWT `sub` the server reported in `ready`; `null` before. */
  readonly userId: string | null;
  /** Whether older notifications exist beyond the loaded list (`loadMore()`). */
  readonly hasMore: boolean;
  /** The last cursor the server sent; reconnects resume from it. */
  readonly cursor: string | null;

  /** Start, or restart after `close()` or `unauthorized`. No-op while a socket is up. */
  connect(): this;
  /** Close the socket and stop reconnecting. The state is kept; `connect()` resumes. */
  close(): void;
  /**
   * Use a new token. On an open socket it is sent as `{"type":"auth"}`; a token
   * whose `sub` is another user clears the state and reconnects; otherwise reconnects.
   */
  setToken(token: string): void;
  /**
   * Mark notifications read. Over the socket when open (the result arrives as
   * `updated` frames), else `POST /v1/notifications/read` (applied locally).
   */
  markRead(ids: number | readonly number[]): Promise<void>;
  /** Mark all the user's notifications read; same transport rules as `markRead`. */
  markAllRead(): Promise<void>;
  /**
   * Fetch the 20 notifications older than the oldest loaded one and append
   * them. Resolves to whether more remain. Concurrent calls share one request.
   * @throws {PgpushHttpError}
   */
  loadMore(): Promise<boolean>;

  addEventListener<K extends keyof PgpushEventMap>(
    type: K,
    listener: (this: PgpushClient, ev: PgpushEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof PgpushEventMap>(
    type: K,
    listener: (this: PgpushClient, ev: PgpushEventMap[K]) => unknown,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}

/** `new PgpushClient(options).connect()`. */
export function connect(options?: PgpushOptions): PgpushClient;

/**
 * `<pgpush-bell>` (defined by `/v1/bell.js`): bell button with unread badge,
 * connection status dot, dropdown list, toasts, mark-read.
 *
 * Attributes: `server` (base URL; default: the origin that served bell.js),
 * `token`, `theme` (`light` | `dark`; default follows `prefers-color-scheme`).
 * Reflected on the host: `data-status` (a {@link PgpushStatus}), `data-unread`.
 * Theming: `--pgpush-accent`, `--pgpush-bg`, `--pgpush-fg`, `--pgpush-muted`,
 * `--pgpush-border`, `--pgpush-unread-bg`, `--pgpush-font`, `--pgpush-radius`,
 * `--pgpush-shadow`, `--pgpush-badge-bg`, `--pgpush-ok`, `--pgpush-warn`, `--pgpush-bad`,
 * `--pgpush-panel-width`. Parts: `button`, `badge`, `status`, `panel`,
 * `mark-all`, `note`, `list`, `item`, `item-unread`, `title`, `body`, `time`,
 * `load-more`, `empty`, `toasts`, `toast`, `toast-dismiss`.
 */
export class PgpushBellElement extends HTMLElement {
  static readonly observedAttributes: string[];
  /** Token callback handed to the client (see {@link PgpushOptions.getToken}); setting it (re)connects. */
  getToken: (() => string | Promise<string>) | undefined;
  /** The element's client, created on first use. Replaced when `server` changes. */
  readonly client: PgpushClient;
  /** Whether the dropdown panel is open. */
  readonly open: boolean;
  /** Open or close the panel (or toggle when `force` is omitted). */
  toggle(force?: boolean): void;
}

declare global {
  interface HTMLElementTagNameMap {
    'pgpush-bell': PgpushBellElement;
  }
}
