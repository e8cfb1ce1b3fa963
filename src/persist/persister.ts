// Owns moving the WAL into Postgres: a consumer group over every shard's stream, each round's
// entries written in one Postgres transaction (tips and postings by COPY, the rest in batched
// statements), balances applied only on top of the version they follow, then XACK and trim. Postgres being down only makes the WAL grow.
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Redis } from "ioredis";
import type pg from "pg";
import { from as copyFrom } from "pg-copy-streams";
import type { Logger } from "pino";
import { withClient } from "../db/pool.ts";
import type { WalEvent } from "../ledger/events.ts";
import type { AccountState, FraudLogRecord, TransactionRecord } from "../ledger/types.ts";
import { compareStreamIds, decodeEntry, nextStreamId, streamIdMs, walStreamKey } from "../wal/wal-codec.ts";

export const PERSIST_GROUP = "persister";

export interface PersisterOptions {
  redis: Redis;
  pool: pg.Pool;
  logger: Logger;
  prefix: string;
  shards: number;
  readCount: number;
  blockMs: number;
  /** Least time between round starts unless the last round was full (PERSIST_LINGER_MS). */
  lingerMs?: number;
  retryMs: number;
  /**
   * Lowest entry id of a shard that must stay in the stream (tip credits not yet durable, or
   * entries the ledger has not yet seen confirmed). Asynchronous when the ledger is in another
   * thread.
   */
  trimFloor?: (shard: number) => string | null | Promise<string | null>;
  /** Parallel writers, each over its own subset of shards (PERSIST_LANES). */
  lanes?: number;
  consumer?: string;
}

/** Raised when Postgres holds an older version than a WAL entry follows: a gap or a 2nd writer. */
export class VersionGapError extends Error {
  constructor(
    readonly shard: number,
    readonly accountId: string,
    readonly pgVersion: number,
    readonly walFromVersion: number,
  ) {
    super(
      `account ${accountId} is at version ${pgVersion} in Postgres but shard ${shard}'s WAL continues from ${walFromVersion - 1}`,
    );
  }
}

export interface Entry {
  shard: number;
  id: string;
  events: WalEvent[];
}

export interface PersistStats {
  entries: number;
  events: number;
  rounds: number;
}

/**
 * The persister runs PERSIST_LANES lanes, each reading and writing its own subset of shards over
 * its own Postgres connection. Shards own disjoint accounts and transactions, so lanes never
 * write the same rows, and Postgres gets to use more than one core.
 */
export class Persister {
  /** Shards whose persistence stopped on a version conflict; their WAL is kept for an operator. */
  readonly halted = new Map<number, string>();
  readonly stats: PersistStats = { entries: 0, events: 0, rounds: 0 };
  private readonly lanes: PersistLane[];

  constructor(o: PersisterOptions) {
    const n = Math.max(1, Math.min(o.lanes ?? 1, o.shards));
    const base = o.consumer ?? "persister";
    this.lanes = Array.from({ length: n }, (_, i) => {
      const shards = [...Array(o.shards).keys()].filter((s) => s % n === i);
      return new PersistLane(o, shards, `${base}-${i}`, this.halted, this.stats);
    });
  }

  async init(): Promise<void> {
    for (const lane of this.lanes) await lane.init();
  }

  start(): void {
    for (const lane of this.lanes) lane.start();
  }

  async stop(): Promise<void> {
    await Promise.all(this.lanes.map((l) => l.stop()));
  }

  health(): { walLagMs: number; unpersistedEntries: number; halted: number[] } {
    let walLagMs = 0;
    let unpersistedEntries = 0;
    for (const l of this.lanes) {
      const h = l.health();
      walLagMs = Math.max(walLagMs, h.walLagMs);
      unpersistedEntries += h.unpersistedEntries;
    }
    return { walLagMs, unpersistedEntries, halted: [...this.halted.keys()] };
  }

  /** Persists everything currently in the WAL; for tests, benchmarks and shutdown. */
  async drain(): Promise<void> {
    await Promise.all(this.lanes.map((l) => l.drain()));
  }
}

class PersistLane {
  private running = false;
  private loop: Promise<void> | null = null;
  private oldestUnpersistedMs = 0;
  private backlog = 0;
  private pendingFirst = true;
  /** Some stream gave the last round all the entries it asked for: there may be more waiting. */
  private lastRoundFull = false;
  private blocker: Redis | null = null;
  private roundLock: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly o: PersisterOptions,
    private readonly shards: number[],
    private readonly consumer: string,
    private readonly halted: Map<number, string>,
    private readonly stats: PersistStats,
  ) {}

  private key(shard: number): string {
    return walStreamKey(this.o.prefix, shard);
  }

  async init(): Promise<void> {
    for (const s of this.shards) {
      try {
        await this.o.redis.xgroup("CREATE", this.key(s), PERSIST_GROUP, "0", "MKSTREAM");
      } catch (err) {
        if (!String((err as Error).message).includes("BUSYGROUP")) throw err;
      }
      // Entries another consumer name read but never acknowledged (the lane count changed since)
      // become ours, so the pending re-read below sees them.
      let cursor = "0-0";
      do {
        const r = (await this.o.redis.xautoclaim(
          this.key(s),
          PERSIST_GROUP,
          this.consumer,
          0,
          cursor,
          "COUNT",
          1000,
          "JUSTID",
        )) as [string, unknown];
        cursor = r[0];
      } while (cursor !== "0-0");
    }
    this.pendingFirst = true;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    // A blocking XREADGROUP holds its connection; keep it off the WAL writer's connection.
    this.blocker = this.o.redis.duplicate();
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.blocker?.disconnect();
    await this.loop?.catch(() => {});
    this.loop = null;
    this.blocker = null;
  }

  health(): { walLagMs: number; unpersistedEntries: number } {
    return {
      walLagMs: this.oldestUnpersistedMs === 0 ? 0 : Math.max(0, Date.now() - this.oldestUnpersistedMs),
      unpersistedEntries: this.backlog,
    };
  }

  async drain(): Promise<void> {
    while ((await this.serialized(false)) > 0) {}
  }

  /** Rounds never overlap: two readers of one consumer would each see the other's entries as done. */
  private serialized(block: boolean): Promise<number> {
    const next = this.roundLock.then(() => this.round(block));
    this.roundLock = next.catch(() => 0);
    return next;
  }

  private async run(): Promise<void> {
    while (this.running) {
      if (this.shards.every((s) => this.halted.has(s))) {
        // Every stream of this lane is stopped until an operator restarts the process. A round
        // would return at once without touching Redis, and a loop of those never yields the
        // thread: no health report, no timer, no HTTP if the persister runs on the main thread.
        await new Promise((r) => setTimeout(r, this.o.retryMs));
        continue;
      }
      try {
        const started = Date.now();
        const persisted = await this.serialized(true);
        // A round short of a full read means it keeps up: wait out the linger so the next round
        // carries more. A full one means a backlog: go again at once.
        const wait = (this.o.lingerMs ?? 0) - (Date.now() - started);
        if (persisted > 0 && !this.lastRoundFull && wait > 0) await new Promise((r) => setTimeout(r, wait));
      } catch (err) {
        if (!this.running) return;
        this.o.logger.error({ err }, "persisting the WAL failed; retrying");
        await new Promise((r) => setTimeout(r, this.o.retryMs));
      }
    }
  }

  /** One read + write round; returns how many entries it persisted. */
  private async round(block: boolean): Promise<number> {
    const shards = this.shards.filter((s) => !this.halted.has(s));
    if (shards.length === 0) return 0;
    // After a restart, entries delivered to us but never acknowledged come first ("0").
    const from = this.pendingFirst ? "0" : ">";
    const args: (string | number)[] = ["GROUP", PERSIST_GROUP, this.consumer, "COUNT", this.o.readCount];
    if (block && !this.pendingFirst) args.push("BLOCK", this.o.blockMs);
    args.push("STREAMS", ...shards.map((s) => this.key(s)), ...shards.map(() => from));
    const conn = block && this.blocker ? this.blocker : this.o.redis;
    // The typed command (not .call) keeps the [[key, entries], ...] shape under RESP3 too.
    const xreadgroup = conn.xreadgroup.bind(conn) as unknown as (
      ...a: (string | number)[]
    ) => Promise<unknown>;
    let reply: Array<[string, Array<[string, string[] | null]>]> | null;
    try {
      reply = (await xreadgroup(...args)) as typeof reply;
    } catch (err) {
      // A stream deleted by hand loses its group; recreate it rather than fail every round.
      if (!String((err as Error).message).includes("NOGROUP")) throw err;
      await this.init();
      return this.round(block);
    }
    const entries: Entry[] = [];
    this.lastRoundFull = false;
    for (const [key, list] of reply ?? []) {
      if (list.length >= this.o.readCount) this.lastRoundFull = true;
      const shard = Number(key.slice(key.lastIndexOf(":") + 1));
      for (const [id, fields] of list) {
        if (!fields) continue; // deleted while pending
        entries.push({ shard, id, events: decodeEntry(fields) });
      }
    }
    if (entries.length === 0) {
      if (this.pendingFirst) {
        this.pendingFirst = false;
        return this.round(block);
      }
      this.oldestUnpersistedMs = 0;
      this.backlog = 0;
      return 0;
    }
    this.oldestUnpersistedMs = Math.min(...entries.map((e) => streamIdMs(e.id)));
    let written: Entry[];
    try {
      written = await this.writeSkippingHalted(entries);
    } catch (err) {
      // These entries are now delivered to us but unacknowledged: re-read them from our pending
      // list ("0") next round, or ">" would skip them for good.
      this.pendingFirst = true;
      throw err;
    }
    await this.ackAndTrim(written);
    this.stats.rounds++;
    this.stats.entries += written.length;
    for (const e of written) this.stats.events += e.events.length;
    this.backlog = Math.max(0, entries.length - written.length);
    return written.length;
  }

  private async writeSkippingHalted(entries: Entry[]): Promise<Entry[]> {
    let todo = entries;
    for (;;) {
      try {
        await writeEntries(this.o.pool, todo);
        return todo;
      } catch (err) {
        if (!(err instanceof VersionGapError)) throw err;
        this.halted.set(err.shard, err.message);
        this.o.logger.fatal(
          { shard: err.shard, account: err.accountId, pgVersion: err.pgVersion },
          "ALARM: version conflict between the WAL and Postgres; persistence of this shard stopped, nothing overwritten",
        );
        todo = todo.filter((e) => e.shard !== err.shard);
        if (todo.length === 0) return [];
      }
    }
  }

  private async ackAndTrim(entries: Entry[]): Promise<void> {
    if (entries.length === 0) return;
    const byShard = new Map<number, string[]>();
    for (const e of entries) {
      const list = byShard.get(e.shard);
      if (list) list.push(e.id);
      else byShard.set(e.shard, [e.id]);
    }
    const shards = [...byShard.keys()];
    const floors = await Promise.all(shards.map((s) => this.o.trimFloor?.(s) ?? null));
    const pipe = this.o.redis.pipeline();
    for (const [i, shard] of shards.entries()) {
      const ids = byShard.get(shard)!;
      pipe.xack(this.key(shard), PERSIST_GROUP, ...ids);
      let last = ids[0]!;
      for (const id of ids) if (compareStreamIds(id, last) > 0) last = id;
      let minId = nextStreamId(last);
      const floor = floors[i] ?? null;
      if (floor && compareStreamIds(floor, minId) < 0) minId = floor;
      pipe.xtrim(this.key(shard), "MINID", minId);
    }
    await pipe.exec();
  }
}

interface AccountUpdate {
  shard: number;
  fromVersion: number;
  last: AccountState;
}

interface Leg {
  txId: string;
  accountId: string;
  amountCents: number;
  at: string;
}

interface StatusRow {
  id: string;
  accountId: string;
  status: string;
  reason: string | null;
  key: string;
  hash: string;
  version: number;
  at: string;
}

interface TxRow {
  tx: TransactionRecord;
  key: string | null;
  hash: string | null;
  after: AccountState | null;
}

/**
 * Writes a round's entries in one Postgres transaction. Re-writing entries already written is a
 * no-op (ids and versions make every statement idempotent), so a crash before XACK is harmless.
 */
export async function writeEntries(pool: pg.Pool, entries: Entry[]): Promise<void> {
  const accounts = new Map<string, AccountUpdate>();
  const txs = new Map<string, TxRow>();
  const legs = new Map<string, Leg>();
  const fraud: FraudLogRecord[] = [];
  const statusRows: StatusRow[] = [];
  const statusAccounts = new Set<string>();
  const setState = (shard: number, s: AccountState) => {
    const cur = accounts.get(s.id);
    if (!cur) accounts.set(s.id, { shard, fromVersion: s.version, last: s });
    else if (s.version > cur.last.version) cur.last = s;
  };
  const addLeg = (txId: string, accountId: string, amountCents: number, at: string) => {
    legs.set(`${txId}:${accountId}`, { txId, accountId, amountCents, at });
  };
  for (const e of entries) {
    for (const ev of e.events) {
      switch (ev.t) {
        case "tx": {
          for (const s of ev.states) setState(e.shard, s);
          const prev = txs.get(ev.tx.id);
          const after = ev.states.find((s) => s.id === ev.tx.accountId) ?? null;
          // A payout appears twice (reserved, then posted or voided): keep the first key and
          // balance-after, and the latest status.
          if (prev) prev.tx = ev.tx;
          else txs.set(ev.tx.id, { tx: ev.tx, key: ev.key, hash: ev.hash, after });
          for (const p of ev.postings) addLeg(ev.tx.id, p.accountId, p.amountCents, ev.tx.createdAt);
          fraud.push(...ev.fraud);
          break;
        }
        case "credit":
          setState(e.shard, ev.state);
          for (const it of ev.items) addLeg(it.txId, ev.accountId, it.amountCents, ev.at);
          break;
        case "status":
          setState(e.shard, ev.state);
          statusAccounts.add(ev.state.id);
          statusRows.push({
            id: ev.id,
            accountId: ev.state.id,
            status: ev.status,
            reason: ev.reason,
            key: ev.key,
            hash: ev.hash,
            version: ev.state.version,
            at: ev.at,
          });
          break;
        case "fraud":
          fraud.push(...ev.fraud);
          break;
      }
    }
  }
  const batch: Batch = {
    accounts,
    txs: [...txs.values()],
    legs: [...legs.values()],
    fraud,
    statusRows,
    statusAccounts,
  };
  await withClient(pool, async (client) => {
    try {
      await writeBatch(client, batch, true);
    } catch (err) {
      if ((err as { code?: string }).code !== UNIQUE_VIOLATION) throw err;
      // Some rows are in Postgres already: this round is a re-read of entries committed before a
      // crash took the XACK. COPY cannot skip rows, so write the batch again with the statements
      // that can (every one of them is idempotent).
      await writeBatch(client, batch, false);
    }
  });
}

const UNIQUE_VIOLATION = "23505";

interface Batch {
  accounts: Map<string, AccountUpdate>;
  txs: TxRow[];
  legs: Leg[];
  fraud: FraudLogRecord[];
  statusRows: StatusRow[];
  statusAccounts: Set<string>;
}

/**
 * One Postgres transaction for the batch. With `bulk`, tips and postings go in by COPY (measured
 * on this schema: 43 -> 26 us of Postgres CPU per tip against INSERT ... ON CONFLICT), which
 * fails on a row already there; the caller then retries without it.
 */
async function writeBatch(client: pg.PoolClient, b: Batch, bulk: boolean): Promise<void> {
  const T = process.env.PERSIST_TRACE ? performance.now() : 0;
  const lap = (what: string) => {
    if (T)
      console.log(what, (performance.now() - T).toFixed(1), b.accounts.size, b.txs.length, b.legs.length);
  };
  try {
    await client.query("BEGIN");
    await applyAccounts(client, b.accounts);
    lap("accounts");
    // Only a payout's row is written twice (reserved, then posted or voided): it needs the upsert.
    const copied = bulk ? b.txs.filter((r) => r.tx.type === "tip") : [];
    const upserted = bulk ? b.txs.filter((r) => r.tx.type !== "tip") : b.txs;
    if (copied.length > 0) await copyTransactions(client, copied);
    if (upserted.length > 0) await insertTransactions(client, upserted);
    lap("txs");
    if (b.legs.length > 0) {
      if (bulk) await copyLegs(client, b.legs);
      else await insertLegs(client, b.legs);
    }
    lap("legs");
    const { fraud, statusRows, statusAccounts } = b;
    if (fraud.length > 0) {
      await client.query(
        `INSERT INTO fraud_logs (id, user_id, rule, severity, amount_cents, action, context, created_at)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::jsonb[], $8::timestamptz[])
         ON CONFLICT (id) DO NOTHING`,
        [
          fraud.map((f) => f.id),
          fraud.map((f) => f.userId),
          fraud.map((f) => f.rule),
          fraud.map((f) => f.severity),
          fraud.map((f) => f.amountCents),
          fraud.map((f) => f.action),
          fraud.map((f) => JSON.stringify(f.context)),
          fraud.map((f) => f.createdAt),
        ],
      );
    }
    if (statusRows.length > 0) {
      await client.query(
        `INSERT INTO account_status_changes (id, account_id, status, reason, idempotency_key, request_hash, version, created_at)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::timestamptz[])
         ON CONFLICT (id) DO NOTHING`,
        [
          statusRows.map((r) => r.id),
          statusRows.map((r) => r.accountId),
          statusRows.map((r) => r.status),
          statusRows.map((r) => r.reason),
          statusRows.map((r) => r.key),
          statusRows.map((r) => r.hash),
          statusRows.map((r) => r.version),
          statusRows.map((r) => r.at),
        ],
      );
      // The users row mirrors the ledger's status; copying it (not the event's) keeps a replayed
      // older event from undoing a newer one.
      await client.query(
        `UPDATE users u SET status = l.status, updated_at = now() FROM ledger l
          WHERE l.id = u.id AND u.id = ANY($1::uuid[]) AND u.status <> l.status`,
        [[...statusAccounts]],
      );
    }
    await client.query("COMMIT");
    lap("commit");
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {});
    throw err;
  }
}

async function applyAccounts(client: pg.PoolClient, accounts: Map<string, AccountUpdate>): Promise<void> {
  if (accounts.size === 0) return;
  const list = [...accounts.values()];
  // Apply the batch's final state where Postgres is at, or inside, the versions this batch covers.
  const updated = await client.query<{ id: string }>(
    `UPDATE ledger l SET balance_cents = u.bal, reserved_balance_cents = u.res, debt_cents = u.debt,
            status = u.status, version = u.vto, updated_at = now()
       FROM json_to_recordset($1::json) AS u(id uuid, vfrom bigint, bal bigint, res bigint, debt bigint, status text, vto bigint)
      WHERE l.id = u.id AND l.version >= u.vfrom - 1 AND l.version < u.vto
      RETURNING l.id`,
    [
      JSON.stringify(
        list.map((a) => ({
          id: a.last.id,
          vfrom: a.fromVersion,
          bal: a.last.balanceCents,
          res: a.last.reservedCents,
          debt: a.last.debtCents,
          status: a.last.status,
          vto: a.last.version,
        })),
      ),
    ],
  );
  if (updated.rowCount === list.length) return;
  const done = new Set(updated.rows.map((r) => r.id));
  const rest = list.filter((a) => !done.has(a.last.id));
  const cur = await client.query<{ id: string; version: number }>(
    "SELECT id, version FROM ledger WHERE id = ANY($1::uuid[])",
    [rest.map((a) => a.last.id)],
  );
  const versions = new Map(cur.rows.map((r) => [r.id, r.version]));
  for (const a of rest) {
    const v = versions.get(a.last.id);
    if (v === undefined) throw new VersionGapError(a.shard, a.last.id, -1, a.fromVersion);
    // Already at or past this batch's last version: a replay, nothing to do. Behind: refuse.
    if (v < a.fromVersion - 1) throw new VersionGapError(a.shard, a.last.id, v, a.fromVersion);
  }
}

async function insertTransactions(client: pg.PoolClient, rows: TxRow[]): Promise<void> {
  const json = JSON.stringify(
    rows.map((r) => ({
      id: r.tx.id,
      ty: r.tx.type,
      st: r.tx.status,
      ac: r.tx.accountId,
      fr: r.tx.fromAccountId,
      to: r.tx.toAccountId,
      am: r.tx.amountCents,
      pf: r.tx.platformFeeCents,
      cf: r.tx.charityFeeCents,
      na: r.tx.netAmountCents,
      cu: r.tx.currency,
      sp: r.tx.stripePaymentId,
      ik: r.key,
      rh: r.hash,
      ba: r.after?.balanceCents ?? null,
      ra: r.after?.reservedCents ?? null,
      da: r.after?.debtCents ?? null,
      md: r.tx.metadata,
      at: r.tx.createdAt,
    })),
  );
  await client.query(
    `INSERT INTO transactions (id, type, status, account_id, from_user_id, to_user_id, amount_cents,
        platform_fee_cents, charity_fee_cents, net_amount_cents, currency, stripe_payment_id, idempotency_key,
        request_hash, balance_after_cents, reserved_after_cents, debt_after_cents, metadata, created_at)
     SELECT id, ty, st, ac, fr, "to", am, pf, cf, na, cu, sp, ik, rh, ba, ra, da, md, at
       FROM json_to_recordset($1::json) AS x(id uuid, ty text, st text, ac uuid, fr uuid, "to" uuid, am bigint,
            pf bigint, cf bigint, na bigint, cu text, sp text, ik text, rh text, ba bigint, ra bigint, da bigint,
            md jsonb, at timestamptz)
     ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, metadata = EXCLUDED.metadata, updated_at = now()
       WHERE transactions.status IS DISTINCT FROM EXCLUDED.status`,
    [json],
  );
}

async function insertLegs(client: pg.PoolClient, legs: Leg[]): Promise<void> {
  await client.query(
    // Rows travel as one JSON text: V8 serializes it natively, where pg's array literals are built
    // element by element in JavaScript (measured: the persister's top cost).
    `INSERT INTO ledger_entries (transaction_id, account_id, amount_cents, created_at)
     SELECT t, a, c, at FROM json_to_recordset($1::json) AS x(t uuid, a uuid, c bigint, at timestamptz)
     ON CONFLICT DO NOTHING`,
    [JSON.stringify(legs.map((x) => ({ t: x.txId, a: x.accountId, c: x.amountCents, at: x.at })))],
  );
}

async function copyLegs(client: pg.PoolClient, legs: Leg[]): Promise<void> {
  let text = "";
  for (const l of legs) text += `${l.txId}\t${l.accountId}\t${l.amountCents}\t${l.at}\n`;
  await copyIn(
    client,
    "COPY ledger_entries (transaction_id, account_id, amount_cents, created_at) FROM STDIN",
    text,
  );
}

async function copyTransactions(client: pg.PoolClient, rows: TxRow[]): Promise<void> {
  let text = "";
  for (const { tx, key, hash, after } of rows) {
    text += `${tx.id}\t${tx.type}\t${tx.status}\t${tx.accountId}\t${copyField(tx.fromAccountId)}\t${copyField(tx.toAccountId)}\t${tx.amountCents}\t${tx.platformFeeCents}\t${tx.charityFeeCents}\t${tx.netAmountCents}\t${tx.currency}\t${copyField(tx.stripePaymentId)}\t${copyField(key)}\t${copyField(hash)}\t${copyField(after?.balanceCents)}\t${copyField(after?.reservedCents)}\t${copyField(after?.debtCents)}\t${copyField(JSON.stringify(tx.metadata))}\t${tx.createdAt}\n`;
  }
  await copyIn(
    client,
    `COPY transactions (id, type, status, account_id, from_user_id, to_user_id, amount_cents, platform_fee_cents,
       charity_fee_cents, net_amount_cents, currency, stripe_payment_id, idempotency_key, request_hash,
       balance_after_cents, reserved_after_cents, debt_after_cents, metadata, created_at) FROM STDIN`,
    text,
  );
}

async function copyIn(client: pg.PoolClient, sql: string, text: string): Promise<void> {
  await pipeline(Readable.from([text]), client.query(copyFrom(sql)));
}

const COPY_ESCAPES: Record<string, string> = { "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r" };

/** A value in COPY's text format: \N for null, and backslash, tab and line breaks escaped. */
export function copyField(v: string | number | null | undefined): string {
  if (v === null || v === undefined) return "\\N";
  if (typeof v === "number") return String(v);
  return v.replace(/[\\\t\n\r]/g, (c) => COPY_ESCAPES[c]!);
}
