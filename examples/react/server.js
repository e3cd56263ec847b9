// The example's backend: serves the server-rendered page, the bundle, and
// the token endpoint. A real app takes the user from its session; this one
// takes ?user= so that a test (or you) can be anyone.
//
//   PGPUSH_URL=http://127.0.0.1:8080 PGPUSH_JWT_SECRET=… PORT=3000 node server.js
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { SignJWT } from 'jose';
import { render } from './dist/ssr.js';

const pgpushUrl = process.env.PGPUSH_URL || 'http://127.0.0.1:8080';
if (!process.env.PGPUSH_JWT_SECRET) throw new Error('set PGPUSH_JWT_SECRET to pgpush serve’s');
const secret = new TextEncoder().encode(process.env.PGPUSH_JWT_SECRET);
const bundle = await readFile(new URL('./dist/app.js', import.meta.url));
const USER = /^[A-Za-z0-9_.@-]{1,64}$/;

/** A JWT pgpush accepts: HS256 with its secret, sub = the user_id of the user's rows, 15 minutes. */
function pgpushToken(user) {
  return new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(user).setIssuedAt().setExpirationTime('15m').sign(secret);
}

const escape = (s) => s.replace(/</g, '\\u003c');

const server = createServer(async (req, res) => {
  const url = new URL(req.url, 'http://localhost');
  const user = url.searchParams.get('user') || 'alice';
  if (!USER.test(user)) return send(res, 400, 'text/plain', 'bad user');
  if (url.pathname === '/api/pgpush-token') {
    return send(res, 200, 'text/plain', await pgpushToken(user), { 'Cache-Control': 'no-store' });
  }
  if (url.pathname === '/app.js') return send(res, 200, 'text/javascript', bundle);
  if (url.pathname !== '/') return send(res, 404, 'text/plain', 'not found');
  const props = { pgpushUrl, user };
  send(res, 200, 'text/html; charset=utf-8', `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>pgpush + React</title>
<style>body{font:16px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:40rem}header{display:flex;justify-content:space-between;align-items:center}
li[data-read=false] strong::before{content:"● ";color:#2563eb}.badge{background:#dc2626;color:#fff;border-radius:9px;padding:0 6px;font-size:.8em}</style>
</head>
<body><div id="root">${render(props)}</div>
<script type="application/json" id="props">${escape(JSON.stringify(props))}</script>
<script type="module" src="/app.js"></script></body>
</html>`);
});

function send(res, status, type, body, headers = {}) {
  res.writeHead(status, { 'Content-Type': type, ...headers });
  res.end(body);
}

server.listen(Number(process.env.PORT || 3000), process.env.HOST || '127.0.0.1', () => {
  const { address, port } = server.address();
  console.log(`listening on http://${address}:${port}`);
});
