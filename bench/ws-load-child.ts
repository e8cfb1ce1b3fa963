// Owns one load-generator child of runWsTips (bench/ws-load.ts): runs its share of the tipping
// sockets, asks the parent for each next viewer, and reports what was sent and every ack in
// batches (every 50 ms and at the end), so the parent keeps the exactly-once accounting.
import type { Person } from "./population.ts";
import { type FromChild, runLanes, type ToChild, type WsAck } from "./ws-load.ts";

const REPORT_MS = 50;

if (!process.send) throw new Error("ws-load-child runs as a child of bench/ws-load.ts (fork)");
const toParent = (m: FromChild) => process.send!(m);

let stopping = false;
let sent = 0;
let errors = 0;
let acks: WsAck[] = [];
const waiting: Array<(p: Person | null) => void> = [];

const flush = () => {
  if (sent === 0 && errors === 0 && acks.length === 0) return;
  toParent({ type: "report", sent, errors, acks });
  sent = 0;
  errors = 0;
  acks = [];
};

process.on("message", (m: ToChild) => {
  if (m.type === "viewer") waiting.shift()?.(m.person);
  else if (m.type === "stop") stopping = true;
  else if (m.type === "start") {
    const timer = setInterval(flush, REPORT_MS);
    runLanes({
      ...m.lanes,
      take: () =>
        new Promise<Person | null>((resolve) => {
          waiting.push(resolve);
          toParent({ type: "take" });
        }),
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
        toParent({ type: "done" });
        process.disconnect();
      },
      (err) => {
        console.error(err);
        process.exit(1);
      },
    );
  }
});
