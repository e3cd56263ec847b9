/**
 * Types for `@pgpush/client/react`: the `useNotifications()` hook and the
 * `<PgpushBell>` component. React (18 or 19) is a peer dependency.
 *
 * @example
 * ```tsx
 * import { useNotifications, PgpushBell } from '@pgpush/client/react';
 *
 * const getToken = () => fetch('/api/pgpush-token').then((r) => r.text());
 *
 * export function Notifications() {
 *   const { notifications, unread, status, markRead } = useNotifications({ url: 'https://push.example.com', getToken });
 *   return <>
 *     <PgpushBell server="https://push.example.com" getToken={getToken} />
 *     <ul>{notifications.map((n) => <li key={n.id} onClick={() => markRead(n.id)}>{n.title}</li>)}</ul>
 *   </>;
 * }
 * ```
 */
import type { ForwardRefExoticComponent, HTMLAttributes, RefAttributes } from 'react';
import type { Notification, PgpushBellElement, PgpushClient, PgpushStatus } from './client.js';

export type { Notification, PgpushBellElement, PgpushClient, PgpushStatus } from './client.js';

/** The state the hook returns; a new object only when something in it changed. */
export interface NotificationsState {
  /** Newest first; replaced, never mutated. */
  readonly notifications: readonly Notification[];
  readonly unread: number;
  readonly status: PgpushStatus;
  /** Whether `loadMore()` would find older rows. */
  readonly hasMore: boolean;
}

/** The client's actions, bound to the shared client. */
export interface NotificationsActions {
  markRead(ids: number | readonly number[]): Promise<void>;
  markAllRead(): Promise<void>;
  loadMore(): Promise<boolean>;
}

export interface PgpushReactOptions {
  /** Base URL of the pgpush server. Default: the origin that served client.js (in a bundle: the page's). */
  url?: string | URL;
  /** Returns a JWT for the signed-in user; the latest one passed is the one called. */
  getToken?: () => string | Promise<string>;
}

/**
 * What `useNotifications` returns on the server and before the first frame:
 * no rows, `status: 'connecting'`.
 */
export const initialState: NotificationsState;

/**
 * The signed-in user's notifications, live. Components that pass the same
 * `url` share one WebSocket. Safe in server rendering (returns `initialState`).
 */
export function useNotifications(options?: PgpushReactOptions): NotificationsState & NotificationsActions;

/**
 * The page's shared client for `options.url`, created and connected on first
 * use: for its `notification` event (toasts), `close()` on sign-out and
 * `setToken()` when the user changes. Browser only.
 */
export function pgpushClient(options?: PgpushReactOptions): PgpushClient;

export interface PgpushBellProps extends HTMLAttributes<PgpushBellElement> {
  /** Set as the element's `getToken` property. */
  getToken?: () => string | Promise<string>;
  /** Base URL of the pgpush server. */
  server?: string;
  /** A fixed token, instead of `getToken`. */
  token?: string;
  /** Forces a theme; by default the bell follows `prefers-color-scheme`. */
  theme?: 'light' | 'dark';
}

/** `<pgpush-bell>` with `getToken` passed as a property. Its ref is the element. */
export const PgpushBell: ForwardRefExoticComponent<PgpushBellProps & RefAttributes<PgpushBellElement>>;
