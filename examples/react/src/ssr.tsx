// The server entry: renders the app to HTML in Node, where there is no
// browser. useNotifications() returns its server snapshot (no rows,
// "Connecting…") and nothing connects.
import { renderToString } from 'react-dom/server';
import { App, type AppProps } from './App';

export function render(props: AppProps): string {
  return renderToString(<App {...props} />);
}
