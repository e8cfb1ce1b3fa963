// Owns one load-generator child of runWsTips (bench/ws-load.ts): runs its share of the tipping
// sockets, asks the parent for each next viewer, and reports what was sent and every ack in
// batches (every 50 ms and at the end), so the parent keeps the exactly-once accounting.
import type { Allowance } from "./load.ts";
import { type FromChild, runLanes, type ToChild, type WsAck } from "./ws-load.ts";

const REPORT_MS = 50;

if (!process.send) throw new Error("ws-load-child runs as a child of bench/ws-load.ts (fork)");
const toParent = (m: FromChild) => process.send!(m);

let stopping = false;
let sent = 0;
let errors = 0;
let acks: WsAck[] = [];
/** Viewers handed out ahead (one per socket), and lanes waiting for one. */
const ahead: Allowance[] = [];
const waiting: Array<(p: Allowance | null) => void> = [];
let exhausted = false;
const ask = (n: number) => {
  if (n <= 0 || exhausted || stopping) return;
  toParent({ type: "take", n });
};

const flush = () => {
  if (sent === 0 && errors === 0 && acks.length === 0) return;
  toParent({ type: "report", sent, errors, acks });
  sent = 0;
  errors = 0;
  acks = [];
};

process.on("message", (m: ToChild) => {
  if (m.type === "viewers") {
    if (m.people.length === 0) {
      exhausted = true;
    }
    ahead.push(...m.people);
    while (waiting.length > 0 && ahead.length > 0) waiting.shift()!(ahead.shift()!);
    if (exhausted) for (const w of waiting.splice(0)) w(null);
  } else if (m.type === "stop") stopping = true;
  else if (m.type === "start") {
    // The child's CPU from here: its start-up (loading, compiling) is outside the measured window.
    const cpuAtStart = process.cpuUsage();
    const timer = setInterval(flush, REPORT_MS);
    ask(m.lanes.sockets);
    runLanes({
      ...m.lanes,
      take: () => {
        // Keep one viewer ahead per socket: refill what this one uses.
        ask(1);
        const p = ahead.shift();
        if (p) return Promise.resolve(p);
        if (exhausted) return Promise.resolve(null);
        return new Promise<Allowance | null>((resolve) => waiting.push(resolve));
      },
      stopping: () => stopping,
      onSent: () => {
        sent++;
      },
      onAck: (a) => {
        acks.push(a);
      },
      onErrors: (n) => {
        errors += n;
      },
    }).then(
      () => {
        clearInterval(timer);
        flush();
        const cpu = process.cpuUsage(cpuAtStart);
        // The bench disconnects once it has this (disconnecting here could drop queued reports).
        toParent({ type: "done", cpuMicros: cpu.user + cpu.system });
      },
      (err) => {
        console.error(err);
        process.exit(1);
      },
    );
  }
});
toParent({ type: "ready" });
