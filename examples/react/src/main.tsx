// The browser entry: hydrates the server-rendered page with the props the
// server rendered it with.
import { hydrateRoot } from 'react-dom/client';
import { App, type AppProps } from './App';

declare global {
  interface Window {
    /** Hydration problems React recovered from; the example's test expects none. */
    __recoverableErrors: string[];
  }
}

window.__recoverableErrors = [];
const props = JSON.parse(document.getElementById('props')!.textContent!) as AppProps;
hydrateRoot(document.getElementById('root')!, <App {...props} />, {
  onRecoverableError: (err) => {
    window.__recoverableErrors.push(String(err));
    console.error(err);
  },
});
