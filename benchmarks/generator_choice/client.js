// The Node.js candidate: N ws connections in one process, parsing every frame
// (and the body inside it) as the generator would. Prints its own CPU and RSS.
// Usage: node client.js PORT N M
"use strict";
const WebSocket = require("ws");
const [port, n, m] = process.argv.slice(2).map(Number);
const rssKiB = () => Math.round(process.memoryUsage().rss / 1024);
const cpuS = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
const rss0 = rssKiB();
const t0 = Date.now();
let open = 0, received = 0, cpu1 = 0, rss1 = 0, t1 = 0, failed = 0;
function connectOne(i) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false });
  ws.on("open", () => {
    open += 1;
    if (open === n) { t1 = Date.now(); cpu1 = cpuS(); setTimeout(() => { rss1 = rssKiB(); }, 1500); }
  });
  ws.on("message", (data) => {
    const frame = JSON.parse(data);
    const body = JSON.parse(frame.body);
    if (body.k) received += 1;
    if (received === n * m) finish();
  });
  ws.on("error", () => { failed += 1; });
}
let next = 0;
(function batch() {  // 100 connects in flight at most
  const end = Math.min(n, next + 100);
  for (; next < end; next++) connectOne(next);
  if (next < n) setTimeout(batch, 0);
})();
function finish() {
  const cpu2 = cpuS();
  console.log(JSON.stringify({
    client: "node ws " + require("ws/package.json").version, node: process.version, sessions: n, failed,
    connect_s: (t1 - t0) / 1000, cpu_connect_ms_per_session: (cpu1 * 1000) / n,
    kib_per_session: (rss1 - rss0) / n, received,
    cpu_us_per_frame: ((cpu2 - cpu1) * 1e6) / received,
  }));
  process.exit(0);
}
setTimeout(() => { console.log(JSON.stringify({ error: "timeout", open, received })); process.exit(1); }, 300000);
