// The app's UI: a list built with useNotifications() and the ready-made
// <pgpush-bell> in the header. Both are rendered on the server (showing
// "Connecting…") and come alive in the browser.
import { useNotifications, PgpushBell, type PgpushStatus } from '@pgpush/client/react';

export interface AppProps {
  /** Where pgpush serves, e.g. https://push.example.com. */
  pgpushUrl: string;
  /** The signed-in user (in this example, from ?user=). */
  user: string;
}

const NOTES: Record<Exclude<PgpushStatus, 'open'>, string> = {
  connecting: 'Connecting…',
  reconnecting: 'Reconnecting…',
  offline: 'You are offline.',
  unauthorized: 'Please sign in again.',
};

// The app's own backend signs a short-lived token for its signed-in user
// (server.js here; a route handler in Next.js).
const tokenGetters = new Map<string, () => Promise<string>>();
function tokenFor(user: string): () => Promise<string> {
  let get = tokenGetters.get(user);
  if (!get) {
    get = async () => {
      const r = await fetch(`/api/pgpush-token?user=${encodeURIComponent(user)}`);
      if (!r.ok) throw new Error(`pgpush token: HTTP ${r.status}`);
      return r.text();
    };
    tokenGetters.set(user, get);
  }
  return get;
}

export function App({ pgpushUrl, user }: AppProps) {
  const getToken = tokenFor(user);
  const { notifications, unread, status, hasMore, markRead, markAllRead, loadMore } =
    useNotifications({ url: pgpushUrl, getToken });
  return (
    <main>
      <header>
        <h1>Acme, signed in as {user}</h1>
        <PgpushBell server={pgpushUrl} getToken={getToken} />
      </header>
      <section data-testid="hook" data-status={status} data-unread={unread} aria-labelledby="notif-heading">
        <h2 id="notif-heading">
          Notifications {unread > 0 && <span className="badge" data-testid="hook-badge">{unread}</span>}
        </h2>
        <button onClick={() => markAllRead()} disabled={unread === 0}>Mark all read</button>
        {status !== 'open' && <p role="status" data-testid="hook-note">{NOTES[status]}</p>}
        <ul>
          {notifications.map((n) => (
            <li key={n.id} data-id={n.id} data-read={n.read_at ? 'true' : 'false'}>
              <button onClick={() => markRead(n.id)}>
                <strong>{n.title}</strong> {n.body && <span>{n.body}</span>}
              </button>
            </li>
          ))}
        </ul>
        {hasMore && <button onClick={() => loadMore()}>Load more</button>}
      </section>
    </main>
  );
}
