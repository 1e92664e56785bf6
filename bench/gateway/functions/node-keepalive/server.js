// Bench function for the gateway: a Node HTTP server that keeps connections alive (unlike
// examples/node-hello), so a bench measures the gateway, not connection setup. GET / answers a
// short text with the count of requests served; GET /download?mb=N answers N MiB (its length
// declared, written as the client takes it); POST /upload reads the body and answers its length.
'use strict';
const http = require('http');

const port = Number(process.env.PORT || 9000);
let requests = 0;
const MiB = Buffer.alloc(1 << 20, 'd');

function download(res, mb) {
  res.writeHead(200, {'Content-Type': 'application/octet-stream', 'Content-Length': mb * MiB.length});
  let left = mb;
  const more = () => {
    while (left > 0) {
      left--;
      if (!res.write(MiB)) {
        res.once('drain', more);
        return;
      }
    }
    res.end();
  };
  more();
}

const server = http.createServer((req, res) => {
  requests++;
  // The overhead bench's GET / is answered without parsing its URL (as before these two routes).
  if (req.url.startsWith('/download')) {
    download(res, Number(new URL(req.url, 'http://x').searchParams.get('mb') || 1));
    return;
  }
  if (req.url === '/upload') {
    let received = 0;
    req.on('data', (chunk) => { received += chunk.length; });
    req.on('end', () => {
      const body = `received ${received}\n`;
      res.writeHead(200, {'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body)});
      res.end(body);
    });
    return;
  }
  const body = `hello requests=${requests}\n`;
  res.writeHead(200, {'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body)});
  res.end(body);
});
server.keepAliveTimeout = 120000;
server.headersTimeout = 125000;
server.maxConnections = 5000;

server.listen(port, '0.0.0.0', () => {
  process.stdout.write('node-keepalive: ready\n');
});
