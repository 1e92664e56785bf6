// Bench function for the gateway: a Node HTTP server that keeps connections alive (unlike
// examples/node-hello), so a bench measures the gateway, not connection setup. GET / answers a
// short text with the count of requests served.
'use strict';
const http = require('http');

const port = Number(process.env.PORT || 9000);
let requests = 0;

const server = http.createServer((req, res) => {
  requests++;
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
