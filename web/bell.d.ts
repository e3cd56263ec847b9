/**
 * Types for `@pgpush/client/bell` (served as `/v1/bell.js`): importing it
 * defines the `<pgpush-bell>` element. The element's type lives with the
 * client's in client.d.ts.
 */
export { PgpushBellElement } from './client.js';

/** "just now", "5 min ago", "3 hr ago", "yesterday", "4 days ago", then the date. */
export function relativeTime(time: string | number, now?: number): string;
