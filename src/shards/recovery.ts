// Owns rebuilding memory from the account source plus the WAL, after a start or a flush the WAL
// did not confirm. The WAL is read in bounded pages, all shards advancing together in time, so
// memory holds a page per shard however long the WAL grew (say, through hours of Postgres
// outage). Replay goes through applyEvent like the live path; versions make it idempotent. Tip
// credits whose debit is durable but whose credit is neither in the WAL nor in the source are
// owed, and are delivered again.
import { SYSTEM_ACCOUNT_KINDS, systemAccountId } from "../ledger/accounts.ts";
import type { CreditItem } from "../ledger/types.ts";
import type { WalEvent } from "../ledger/events.ts";
import type { AccountLoader } from "./account-loader.ts";
import type { AccountSource, WalEntry, WalLog } from "./ports.ts";
import type { CreditHold, ShardActor } from "./shard-actor.ts";

export interface RecoveryDeps {
  /** The shards to rebuild: this process's (spread over processes, not all of them). */
  shards: ShardActor[];
  /**
   * Puts an owed credit, under its hold, where it goes: the recipient's shard inbox when this
   * process owns it, otherwise out to its owner (which recognises a credit it already has).
   */
  deliver(accountId: string, item: CreditItem, hold: CreditHold): void;
  wal: WalLog;
  source: AccountSource;
  loader: AccountLoader;
  pageEntries: number;
  idempotencyTtlMs: number;
  now: () => number;
  /** Applies a replayed event to its shard's memory (false: an account is missing). */
  apply(shard: ShardActor, ev: WalEvent): boolean;
}

export interface RecoveryReport {
  entries: number;
  accounts: number;
  redelivered: number;
}

/**
 * A credit entry is appended only after its tip's append returned, so by the log's clock it is
 * no older than the tip; a credit seen this long before the replay front reached its tip never
 * will see it (the tip was persisted and trimmed), and is forgotten.
 */
const EARLY_CREDIT_SLACK_MS = 5_000;

interface Cursor {
  shard: ShardActor;
  after: string | null;
  page: WalEntry[];
  done: boolean;
}

interface Owed extends CreditItem {
  shard: ShardActor;
  entryId: string;
  accountId: string;
}

export async function replayWal(d: RecoveryDeps): Promise<RecoveryReport> {
  const systemIds: string[] = [];
  for (const s of d.shards)
    for (const kind of SYSTEM_ACCOUNT_KINDS) systemIds.push(systemAccountId(kind, s.id));
  d.loader.install(await d.source.load(systemIds, d.now(), d.idempotencyTtlMs));
  const cursors: Cursor[] = d.shards.map((shard) => ({ shard, after: null, page: [], done: false }));
  const owed = new Map<string, Owed>();
  const early = new Map<string, number>();
  let entries = 0;
  for (;;) {
    await Promise.all(
      cursors
        .filter((c) => c.page.length === 0 && !c.done)
        .map(async (c) => {
          c.page = await d.wal.readPage(c.shard.id, c.after, d.pageEntries);
          if (c.page.length < d.pageEntries) c.done = true;
        }),
    );
    if (cursors.every((c) => c.page.length === 0)) break;
    // Every shard replays up to the oldest last entry among pages that may continue: the shard
    // that set it empties its page, so each round moves the front.
    let bound: string | null = null;
    for (const c of cursors) {
      if (c.done || c.page.length === 0) continue;
      const last = c.page[c.page.length - 1]!.id;
      if (bound === null || d.wal.compareIds(last, bound) < 0) bound = last;
    }
    const taken = cursors.map((c) => {
      let n = 0;
      while (n < c.page.length && (bound === null || d.wal.compareIds(c.page[n]!.id, bound) <= 0)) n++;
      const mine = c.page.slice(0, n);
      c.page = c.page.slice(n);
      if (mine.length > 0) c.after = mine[mine.length - 1]!.id;
      return { c, mine };
    });
    const ids = new Set<string>();
    for (const { mine } of taken) for (const e of mine) for (const ev of e.events) namedAccounts(ev, ids);
    await d.loader.ensureLoaded([...ids]);
    for (const { c, mine } of taken) {
      for (const e of mine) {
        for (const ev of e.events) {
          if (!d.apply(c.shard, ev)) {
            throw new Error(
              `WAL entry ${e.id} of shard ${c.shard.id} names an account missing from Postgres`,
            );
          }
          if (ev.t === "tx") {
            for (const cr of ev.credits) {
              const k = `${cr.txId}:${cr.accountId}`;
              if (!early.delete(k)) owed.set(k, { ...cr, shard: c.shard, entryId: e.id });
            }
          } else if (ev.t === "credit") {
            for (const it of ev.items) {
              const k = `${it.txId}:${ev.accountId}`;
              if (!owed.delete(k)) early.set(k, d.wal.idTimeMs(e.id));
            }
          }
        }
        entries++;
      }
      if (mine.length > 0) c.shard.lastEntryId = mine[mine.length - 1]!.id;
    }
    if (bound !== null) {
      const front = d.wal.idTimeMs(bound) - EARLY_CREDIT_SLACK_MS;
      for (const [k, atMs] of early) if (atMs < front) early.delete(k);
    }
  }
  const redelivered = await redeliver(d, [...owed.values()]);
  let accounts = 0;
  for (const s of d.shards) accounts += s.accounts.size;
  return { entries, accounts, redelivered };
}

function namedAccounts(ev: WalEvent, out: Set<string>): void {
  if (ev.t === "tx") {
    out.add(ev.tx.accountId);
    for (const st of ev.states) out.add(st.id);
  } else if (ev.t === "credit" || ev.t === "status") out.add(ev.state.id);
  else if (ev.t === "payout") out.add(ev.payout.userId);
}

/** Puts owed credits not already in the source into their recipients' inboxes, under holds. */
async function redeliver(d: RecoveryDeps, owed: Owed[]): Promise<number> {
  if (owed.length === 0) return 0;
  const posted = await d.source.postedLegs(owed.map((o) => ({ txId: o.txId, accountId: o.accountId })));
  const holds = new Map<string, CreditHold>();
  let n = 0;
  for (const o of owed) {
    if (posted.has(`${o.txId}:${o.accountId}`)) continue;
    const hk = `${o.shard.id}:${o.entryId}`;
    let hold = holds.get(hk);
    if (!hold) {
      hold = { shard: o.shard.id, entryId: o.entryId, outstanding: 0, remote: 0 };
      holds.set(hk, hold);
      o.shard.holds.push(hold);
    }
    n++;
    d.deliver(o.accountId, { txId: o.txId, amountCents: o.amountCents }, hold);
  }
  for (const s of d.shards) s.holds.sort((a, b) => d.wal.compareIds(a.entryId, b.entryId));
  return n;
}
