// The `echo` scenario's server: bare uWebSockets.js that reads and parses the same JSON body a tip
// carries and answers a small JSON. No auth, no ledger, no Redis: what this machine and this load
// generator can do at all, the ceiling the real server's tip throughput is compared against.
import uws, { type us_listen_socket } from "uWebSockets.js";

const PORT = Number(process.env.PORT ?? 4200);

const app = uws.App();
app.get("/healthz", (res) => {
  res.cork(() => {
    res.writeHeader("Content-Type", "application/json").end('{"status":"ok"}');
  });
});
app.post("/*", (res) => {
  let aborted = false;
  res.onAborted(() => {
    aborted = true;
  });
  const chunks: Buffer[] = [];
  res.onData((chunk, isLast) => {
    // uWS reuses the chunk's memory after this callback returns: copy it, as the real server does.
    chunks.push(Buffer.from(new Uint8Array(chunk).slice()));
    if (!isLast || aborted) return;
    let answer: string;
    let status = "200 OK";
    try {
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { amount?: unknown };
      answer = JSON.stringify({ ok: true, amount: body.amount ?? null });
    } catch {
      status = "400 Bad Request";
      answer = '{"ok":false}';
    }
    res.cork(() => {
      res.writeStatus(status).writeHeader("Content-Type", "application/json").end(answer);
    });
  });
});

let listenSocket: us_listen_socket | null = null;
app.listen("127.0.0.1", PORT, (token) => {
  if (!token) {
    console.error(`echo: cannot listen on ${PORT}`);
    process.exit(1);
  }
  listenSocket = token;
  console.log(`echo listening on ${PORT}`);
});
const stop = () => {
  if (listenSocket) uws.us_listen_socket_close(listenSocket);
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
