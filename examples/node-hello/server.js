// Node "hello world" for initless: listen, then print the ready phrase (see examples/README.md).
'use strict';
const http = require('http');

const READY = 'node-hello: ready';
const port = Number(process.env.PORT || 9000);
let requests = 0;

const server = http.createServer((req, res) => {
  requests++;
  const ok = req.method === 'GET' && req.url === '/';
  const body = ok ? `hello from node ${process.version} requests=${requests}\n` : 'not found\n';
  // Connection: close, so no keep-alive connection is still open when a snapshot is taken.
  res.writeHead(ok ? 200 : 404, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'Connection': 'close',
  });
  res.end(body);
});

server.listen(port, '0.0.0.0', () => {
  // process.stdout is synchronous for files and pipes on Linux, so the phrase is out when this returns.
  process.stdout.write(READY + '\n');
});
