// Child process for the crash test: runs the ledger (with its persister) against the given
// database and Redis, fires tips without pause, and prints "ACK <key> <txId>" for each one the
// ledger acknowledged. The parent kills it with SIGKILL at a random moment.
import { readFileSync } from "node:fs";
import pino from "pino";
import { startCore } from "../../src/main/core.ts";
import { loadConfig } from "../../src/config.ts";

const { viewers, creators, run } = JSON.parse(readFileSync(process.env.CRASH_PLAN!, "utf8")) as {
  viewers: string[];
  creators: string[];
  run: number;
};
const core = await startCore(loadConfig(process.env), pino({ level: "silent" }));
process.stdout.write("READY\n");
let i = 0;
let inFlight = 0;
const MAX_IN_FLIGHT = 256;

function fire(): void {
  while (inFlight < MAX_IN_FLIGHT) {
    const n = i++;
    const key = `crash-${run}-${n}`;
    const from = viewers[n % viewers.length]!;
    const to = creators[n % creators.length]!;
    inFlight++;
    core.ledger
      .submit({ kind: "tip", key, fromAccountId: from, toAccountId: to, amountCents: 100 + (n % 3) * 100 })
      .then(
        (r) => {
          if ("transaction" in r) process.stdout.write(`ACK ${key} ${r.transaction.id}\n`);
        },
        () => {},
      )
      .finally(() => {
        inFlight--;
        setImmediate(fire);
      });
  }
}
fire();
