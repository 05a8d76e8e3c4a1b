// A fan-out source for comparing load generators: a ws server that, once N
// clients are connected, sends M frames shaped like the chat's `message`
// event to every one of them, R frames per second, then closes everyone.
// Usage: node source.js PORT N M R
"use strict";
const { WebSocketServer } = require("ws");
const [port, n, m, rate] = process.argv.slice(2).map(Number);
const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false, backlog: 4096 });
const clients = [];
wss.on("connection", (ws) => {
  clients.push(ws);
  ws.on("message", () => {});
  if (clients.length === n) setTimeout(run, 3000);
});
wss.on("listening", () => console.log("listening"));

function frame(i) {
  const body = JSON.stringify({ t: 0, k: `f.${i}`, s: 0 });
  return JSON.stringify({
    type: "message", id: 1000 + i, channel: "topic:fan", seq: i + 1, kind: "topic",
    from: { id: 7, username: "bench00007" }, body, client_id: null,
    created_at: new Date().toISOString(), edited_at: null, deleted: false,
  });
}

function run() {
  let i = 0;
  const timer = setInterval(() => {
    const text = frame(i);
    for (const ws of clients) ws.send(text);
    i += 1;
    if (i === m) {
      clearInterval(timer);
      setTimeout(() => { for (const ws of clients) ws.close(1000); setTimeout(() => process.exit(0), 2000); }, 3000);
    }
  }, 1000 / rate);
}
