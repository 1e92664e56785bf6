// Express on Node for initless: listen, then print the ready phrase (see examples/README.md).
// Express comes from Debian's node-express (/usr/share/nodejs, on NODE_PATH in function.toml).
'use strict';
const express = require('express');

const READY = 'express-hello: ready';
const port = Number(process.env.PORT || 9000);
let requests = 0;

const app = express();
// Connection: close on every answer, so no keep-alive connection is open when a snapshot is taken.
app.use((req, res, next) => {
  res.set('Connection', 'close');
  next();
});
app.get('/', (req, res) => {
  requests++;
  res.type('text/plain').send(`hello from express on node ${process.version} requests=${requests}\n`);
});
app.get('/items/:id', (req, res) => {
  res.json({ item_id: Number(req.params.id), q: req.query.q || '', requests });
});

app.listen(port, '0.0.0.0', () => {
  // process.stdout is synchronous for files and pipes on Linux, so the phrase is out when this returns.
  process.stdout.write(READY + '\n');
});
