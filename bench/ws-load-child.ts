// Owns one load-generator child of runWsTips (bench/ws-load.ts): runs its share of the tipping
// sockets, gets its viewers from the parent (about one ahead per socket, asked for in batches),
// and reports what was sent and every ack in batches (every 50 ms and at the end), so the parent
// keeps the exactly-once accounting. A report's acks go packed (a few strings and number arrays,
// see PackedAcks), not as objects.
import type { Allowance } from "./load.ts";
import { AckPacker, type FromChild, runLanes, type ToChild } from "./ws-load.ts";

const REPORT_MS = 50;

if (!process.send) throw new Error("ws-load-child runs as a child of bench/ws-load.ts (fork)");
const toParent = (m: FromChild) => process.send!(m);

let stopping = false;
let sent = 0;
let errors = 0;
const acks = new AckPacker();
/** Viewers handed out ahead (about one per socket), and lanes waiting for one. */
const ahead: Allowance[] = [];
const waiting: Array<(p: Allowance | null) => void> = [];
let exhausted = false;
/** Viewers asked for and not yet answered. */
let asked = 0;
const ask = (n: number) => {
  if (n <= 0 || exhausted || stopping) return;
  asked += n;
  toParent({ type: "take", n });
};

/** Sockets of this child. */
let sockets = 0;
/** Places ahead (one viewer per socket, as many as the bench can spare: viewers held ahead at
 * the end are not used) neither filled nor asked for. Refills mostly ride on the reports (every
 * 50 ms): a message of its own costs the child ~100 us of CPU, once per socket ~10 us a tip. */
const free = () => sockets - ahead.length - asked;

const flush = () => {
  if (sent === 0 && errors === 0 && acks.size === 0) return;
  // The refill rides on the report when it can.
  const take = exhausted || stopping ? 0 : Math.max(0, free());
  asked += take;
  toParent({ type: "report", sent, errors, acks: acks.take(), take });
  sent = 0;
  errors = 0;
};

process.on("message", (m: ToChild) => {
  if (m.type === "viewers") {
    if (m.people.length === 0) {
      exhausted = true;
    }
    asked -= m.asked;
    ahead.push(...m.people);
    while (waiting.length > 0 && ahead.length > 0) waiting.shift()!(ahead.shift()!);
    if (exhausted) for (const w of waiting.splice(0)) w(null);
  } else if (m.type === "stop") stopping = true;
  else if (m.type === "start") {
    // The child's CPU from here: its start-up (loading, compiling) is outside the measured window.
    const cpuAtStart = process.cpuUsage();
    const timer = setInterval(flush, REPORT_MS);
    sockets = m.lanes.sockets;
    ask(free());
    runLanes({
      ...m.lanes,
      take: () => {
        // Reports refill what the lanes used; a `take` of its own only when the viewers ahead
        // (and asked for) are down to half a socket each.
        const p = ahead.shift();
        if (ahead.length + asked < sockets / 2 || p === undefined) ask(free());
        if (p) return Promise.resolve(p);
        if (exhausted) return Promise.resolve(null);
        return new Promise<Allowance | null>((resolve) => waiting.push(resolve));
      },
      stopping: () => stopping,
      onSent: (n) => {
        sent += n;
      },
      onAck: acks.add,
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
