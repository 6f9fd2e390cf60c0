// A Socket.IO v2 client (npm socket.io-client@2, Engine.IO v3) for the realtime tests.
//
//   node v2_client.js <url> <store> <changes> <timeout-ms> [cookie]
//
// Connects over the websocket transport only, sending `cookie` (e.g. "sid=...") as the Cookie
// header, and subscribes to <store> once connected. Prints one JSON object per line for each
// thing that happens: connect, ack, change, error, connect_error, disconnect, timeout. Exits 0
// after <changes> change events (0 = right after the ack), 1 on timeout, 2 on a disconnect
// before that.
'use strict';

const io = require('socket.io-client');

const [url, store, wanted, timeoutMs, cookie] = process.argv.slice(2);
const changesWanted = Number(wanted);
let changes = 0;
let finished = false;

function say(record) {
  process.stdout.write(JSON.stringify(record) + '\n');
}

function finish(code) {
  if (finished) return;
  finished = true;
  clearTimeout(timer);
  socket.close();
  // Exit once stdout is flushed, so the test sees every line.
  process.stdout.write('', () => process.exit(code));
}

const options = { transports: ['websocket'], reconnection: false, forceNew: true };
if (cookie) options.extraHeaders = { Cookie: cookie };
const socket = io(url, options);

const timer = setTimeout(() => {
  say({ type: 'timeout', changes });
  finish(1);
}, Number(timeoutMs));

socket.on('connect', () => {
  say({ type: 'connect' });
  socket.emit('subscribe', { store }, (ack) => {
    say({ type: 'ack', data: ack });
    if (changesWanted === 0) finish(0);
  });
});
socket.on('change', (data) => {
  say({ type: 'change', data });
  changes += 1;
  if (changes >= changesWanted) finish(0);
});
socket.on('error', (data) => say({ type: 'error', data }));
socket.on('connect_error', (error) => say({ type: 'connect_error', data: String(error) }));
socket.on('disconnect', (reason) => {
  say({ type: 'disconnect', reason });
  finish(2);
});
