// Child process for the fencing test: runs a core on the given database and Redis and takes
// commands on stdin, one per line, answering on stdout:
//   DEP <key> <account> <cents>        -> ACK <key> <txId> | ERR <key> <code>
//   TIP <key> <from> <to> <cents>      -> ACK <key> <txId> | ERR <key> <code>
//   DRAIN                              -> DRAINED (everything decided is in Postgres)
// It prints READY <fencing token> once it owns the ledger and LOST <why> each time it learns it
// no longer does (its lease renewal failed, or the WAL refused an append: "...WAL_refused...");
// it never exits on its own (the parent stops it).
import { redisKeys } from "../../src/redis/keys.ts";
import { createInterface } from "node:readline";
import pino from "pino";
import { loadConfig } from "../../src/config.ts";
import { startCore } from "../../src/main/core.ts";

const out = (line: string) => process.stdout.write(`${line}\n`);
const logger = pino({ level: "silent" });
const core = await startCore(loadConfig(process.env), logger, {
  onOwnershipLost: (why) => out(`LOST ${why.replace(/\s+/g, "_")}`),
});
const token = await core.redis.get(redisKeys(process.env.REDIS_PREFIX ?? "").shardLease(0));
out(`READY ${token?.split(":")[0]}`);

const answer = (key: string, p: Promise<unknown>) =>
  p.then(
    (r) => out(`ACK ${key} ${(r as { transaction: { id: string } }).transaction.id}`),
    (err: { code?: string }) => out(`ERR ${key} ${err.code ?? "internal"}`),
  );

for await (const line of createInterface({ input: process.stdin })) {
  const [op, k, a, b, c] = line.trim().split(" ");
  if (op === "DEP") {
    answer(k!, core.ledger.submit({ kind: "deposit", key: k!, accountId: a!, amountCents: Number(b) }));
  } else if (op === "TIP") {
    answer(
      k!,
      core.ledger.submit({
        kind: "tip",
        key: k!,
        fromAccountId: a!,
        toAccountId: b!,
        amountCents: Number(c),
      }),
    );
  } else if (op === "DRAIN") {
    const probe = core.ledger.probe();
    while (!probe.quiescent()) await new Promise((r) => setTimeout(r, 5));
    await core.persister.drain();
    out("DRAINED");
  }
}
