// Helpers for ledger tests: users created straight in Postgres (registration is not under test
// here) and a started core on the test's own database and Redis prefix.
import { randomUUID } from "node:crypto";
import pino from "pino";
import type pg from "pg";
import type { TxResult } from "../../src/ledger/types.ts";
import { type Core, startCore } from "../../src/main/core.ts";
import type { TestEnv } from "./env.ts";

export const silentLogger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

export async function createUsers(pool: pg.Pool, n: number, prefix = "u"): Promise<string[]> {
  const ids = Array.from({ length: n }, () => randomUUID());
  for (let i = 0; i < ids.length; i += 5000) {
    const chunk = ids.slice(i, i + 5000);
    const tag = randomUUID().slice(0, 8);
    await pool.query(
      `INSERT INTO users (id, email, username, display_name, role)
       SELECT id, $2 || '_' || n || '@example.test', $2 || '_' || n, 'User ' || n, 'viewer'
         FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, n)`,
      [chunk, `${prefix}${tag}`],
    );
    await pool.query(
      "INSERT INTO ledger (id, user_id, kind) SELECT id, id, 'user' FROM unnest($1::uuid[]) AS t(id)",
      [chunk],
    );
  }
  return ids;
}

export async function startTestCore(
  env: TestEnv,
  overrides: Record<string, string> = {},
  persist = true,
): Promise<Core> {
  return startCore(env.config(overrides), silentLogger, { persist });
}

/** The cores a restart test has running: stopAll (in afterAll) stops those a failed test left. */
export class TestCores {
  private readonly running: Core[] = [];

  async start(env: TestEnv, overrides: Record<string, string> = {}, persist = true): Promise<Core> {
    return this.add(await startTestCore(env, overrides, persist));
  }

  add(c: Core): Core {
    this.running.push(c);
    return c;
  }

  async stop(c: Core): Promise<void> {
    await c.stop();
    this.running.splice(this.running.indexOf(c), 1);
  }

  async stopAll(): Promise<void> {
    for (const c of this.running) await c.stop().catch(() => {});
  }
}

/** Waits until the ledger has nothing in flight and the persister has written all of the WAL. */
export async function settle(core: Core): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!core.ledger.probe().quiescent()) {
    if (Date.now() > deadline) throw new Error("ledger did not settle");
    await new Promise((r) => setTimeout(r, 5));
  }
  await core.persister.drain();
}

export const key = () => randomUUID();

/** A tip through the ledger, answered once durable (the key is fresh unless given). */
export const tip = (c: Core, from: string, to: string, amountCents: number, k: string = key()) =>
  c.ledger.submit({
    kind: "tip",
    key: k,
    fromAccountId: from,
    toAccountId: to,
    amountCents,
  }) as Promise<TxResult>;

/** A deposit through the ledger with a fresh key. */
export const deposit = (c: Core, accountId: string, amountCents: number) =>
  c.ledger.submit({ kind: "deposit", key: key(), accountId, amountCents }) as Promise<TxResult>;
