// Shards spread over three server processes (LEDGER_SPREAD, issue 17), each a child process on the
// same database and Redis. Tips go to whichever process a client picks; a creator's feed is
// followed on a process that does NOT own the creator's shard (its entries come from another
// process). Mid-burst, the process owning the creator's shard is SIGKILLed: the two others take its
// shards within the lease plus recovery, re-deliver the credits it left owed, and clients retry
// what went unanswered with the same keys, on any process. In the end every key is one tip in
// Postgres with the answer the client got, the creator is credited for each once, and the books
// balance to the cent. Two followers of the creator's feed saw 1..N without a hole or a duplicate:
// one on a process that survives, one on the killed process, which reconnects to another and
// resumes with `since`.
import type { ChildProcess } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { shardOf } from "../../src/ledger/accounts.ts";
import { startCore } from "../../src/main/core.ts";
import { reconcileLedger } from "../../src/persist/reconcile.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";
import { settle, silentLogger } from "../helpers/ledger.ts";
import { type FeedFollower, followFeed } from "../helpers/live.ts";
import { fundedViewersAndCreator, liveChildVars, startLiveChild } from "../helpers/live-server.ts";

let env: TestEnv;
const children: ChildProcess[] = [];
let follower: FeedFollower | null = null;
let moving: FeedFollower | null = null;

const SHARDS = 12;
const LEASE_MS = 1500;

beforeAll(async () => {
  env = await createTestEnv("spread_failover");
});
afterAll(async () => {
  await follower?.stop();
  await moving?.stop();
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await env.cleanup();
});

const vars = (extra: Record<string, string> = {}) =>
  liveChildVars(env, {
    FRAUD_MAX_TX_PER_HOUR: "1000000",
    FRAUD_MAX_VOLUME_PER_HOUR_USD: "100000000",
    LEDGER_LEASE_MS: String(LEASE_MS),
    SHARDS: String(SHARDS),
    LEDGER_SPREAD: "true",
    INTERNAL_TOKEN: "spread-failover-internal-token",
    ...extra,
  });

interface Proc {
  child: ChildProcess;
  base: string;
  alive: boolean;
}

async function readyz(p: Proc): Promise<{ shards_owned: number[]; processes: number }> {
  return (await (await fetch(`${p.base}/readyz`)).json()).ledger;
}

/** Every shard owned by exactly one of `procs`, as their /readyz say. */
async function waitForBalance(procs: Proc[], timeoutMs: number): Promise<number[][]> {
  let owned: number[][] = [];
  await waitFor(
    async () => {
      owned = await Promise.all(procs.map(async (p) => (await readyz(p)).shards_owned));
      const all = owned.flat();
      return all.length === SHARDS && new Set(all).size === SHARDS && owned.every((o) => o.length > 0);
    },
    timeoutMs,
    `${procs.length} processes to divide ${SHARDS} shards`,
  );
  return owned;
}

describe("shards spread over three processes", () => {
  it("survives the SIGKILL of the creator's owner mid-burst: every key once, the feed whole", async () => {
    const { viewers, creator, creatorName, viewerTokens, creatorToken } = await fundedViewersAndCreator(
      env,
      vars(),
      24,
    );
    const procs: Proc[] = [];
    for (let i = 0; i < 3; i++) {
      const { child, port } = await startLiveChild(vars());
      children.push(child);
      procs.push({ child, base: `http://127.0.0.1:${port}`, alive: true });
    }
    const owned = await waitForBalance(procs, 30_000);
    const creatorShard = shardOf(creator, SHARDS);
    const ownerIndex = owned.findIndex((o) => o.includes(creatorShard));
    const victim = procs[ownerIndex]!;
    const watcher = procs[(ownerIndex + 1) % 3]!;
    // The follower sits on a process that does not write the creator's feed.
    follower = followFeed(() => watcher.base, creatorToken);
    const received = follower.received;
    // This one sits on the process that will be killed, then on any survivor.
    moving = followFeed(() => (victim.alive ? victim.base : watcher.base), creatorToken);
    await waitFor(
      () => follower!.connects() > 0 && moving!.connects() > 0,
      10_000,
      "the followers to connect",
    );

    const answers = new Map<string, string>();
    const firstAnswers = new Map<string, number>();
    const send = async (
      k: string,
      viewer: number,
      attempt: number,
    ): Promise<{ status: number; txId: string | null }> => {
      const live = procs.filter((p) => p.alive);
      const p = live[(viewer + attempt) % live.length]!;
      try {
        const r = await fetch(`${p.base}/api/payments/tip`, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            authorization: `Bearer ${viewerTokens[viewer]}`,
            "idempotency-key": k,
          },
          body: JSON.stringify({
            from_user_id: viewers[viewer],
            to_creator_username: creatorName,
            amount: 1,
          }),
          signal: AbortSignal.timeout(8000),
        });
        const body = (await r.json()) as { transaction?: { id: string } };
        return { status: r.status, txId: body.transaction?.id ?? null };
      } catch {
        return { status: 0, txId: null }; // its process died, or it hung
      }
    };
    let stop = false;
    let n = 0;
    const tippers = Array.from({ length: 8 }, async (_, t) => {
      while (!stop) {
        const i = n++;
        const k = `sf-${t}-${i}`;
        const viewer = i % viewers.length;
        for (let attempt = 0; ; attempt++) {
          const r = await send(k, viewer, attempt);
          if (!firstAnswers.has(k)) firstAnswers.set(k, r.status);
          if (r.status === 201) {
            answers.set(k, r.txId!);
            break;
          }
          if (attempt > 400) throw new Error(`key ${k} never answered: last ${r.status}`);
          await new Promise((res) => setTimeout(res, 25));
        }
      }
    });
    await waitFor(() => answers.size >= 300 && received.length >= 100, 60_000, "tips on three processes");
    const beforeKill = answers.size;

    const killedAt = Date.now();
    victim.alive = false;
    victim.child.kill("SIGKILL");
    const survivors = procs.filter((p) => p.alive);
    await waitForBalance(survivors, 30_000);
    const rebalancedMs = Date.now() - killedAt;
    await waitFor(() => answers.size >= beforeKill + 300, 60_000, "tips after the kill");
    stop = true;
    await Promise.all(tippers);

    // Keys answered before the kill, sent again to a survivor: the original answers.
    for (const [k, txId] of [...answers].slice(0, 30)) {
      const viewer = Number(k.split("-")[2]) % viewers.length;
      const again = await send(k, viewer, 0);
      expect(again, k).toEqual({ status: 201, txId });
    }

    const count = async () =>
      Number(
        (await env.pool.query("SELECT count(*) AS n FROM transactions WHERE to_user_id = $1", [creator]))
          .rows[0].n,
      );
    await waitFor(
      async () =>
        (await count()) === answers.size &&
        received.length === answers.size &&
        moving!.received.length === answers.size,
      60_000,
      "Postgres and the feed to hold every answered tip",
    ).catch(async (err) => {
      throw new Error(
        `${err.message}: postgres ${await count()}, answered ${answers.size}, received ${received.length} and ${moving!.received.length}`,
      );
    });
    await follower.stop();
    await moving.stop();
    expect(moving.connects()).toBeGreaterThan(1);
    expect(moving.received).toEqual(received);

    const rows = await env.pool.query<{ id: string; idempotency_key: string }>(
      "SELECT id, idempotency_key FROM transactions WHERE to_user_id = $1",
      [creator],
    );
    const byKey = new Map(rows.rows.map((r) => [r.idempotency_key, r.id]));
    expect(byKey.size).toBe(rows.rows.length);
    for (const [k, txId] of answers) expect(byKey.get(k), k).toBe(txId);
    expect(received.map((r) => r.seq)).toEqual(Array.from({ length: received.length }, (_, i) => i + 1));
    expect(new Set(received.map((r) => r.id))).toEqual(new Set(byKey.values()));
    const unanswered = [...firstAnswers.values()].filter((s) => s !== 201).length;
    console.log(
      `spread failover: survivors held all ${SHARDS} shards ${rebalancedMs} ms after the SIGKILL (lease ${LEASE_MS} ms); ${beforeKill} tips before, ${answers.size - beforeKill} after; ${unanswered} first tries unanswered and retried`,
    );

    // The survivors stop (SIGTERM drains their WAL); the books are checked from Postgres plus the
    // WAL by a core that then owns every shard.
    for (const p of survivors) {
      const exited = new Promise((r) => p.child.once("exit", r));
      p.child.kill("SIGTERM");
      await exited;
    }
    const final = await startCore(env.config({ ...vars(), LEDGER_SPREAD: "false" }), silentLogger);
    try {
      await settle(final);
      const balance = await final.ledger.getAccount(creator);
      expect(balance.balanceCents).toBe(answers.size * 97);
      const report = await reconcileLedger(env.pool, final.ledger.snapshot());
      expect(report.memoryMismatches).toEqual([]);
      expect(report).toMatchObject({ ok: true, totalBalanceCents: 0 });
    } finally {
      await final.stop();
    }
  }, 240_000);

  it("refuses a stalled process's late appends (SIGSTOP past its leases), then gives it a share again", async () => {
    const { viewers, creator, creatorName, viewerTokens } = await fundedViewersAndCreator(env, vars(), 24);
    const procs: Proc[] = [];
    for (let i = 0; i < 3; i++) {
      const { child, port } = await startLiveChild(vars());
      children.push(child);
      procs.push({ child, base: `http://127.0.0.1:${port}`, alive: true });
    }
    const owned = await waitForBalance(procs, 30_000);
    const stalled = procs[owned.findIndex((o) => o.includes(shardOf(creator, SHARDS)))]!;
    const tokensBefore = (await (await fetch(`${stalled.base}/readyz`)).json()).ledger.fencing_tokens;

    // Tips go to the stalled process too: what it acknowledged before the stop counts, what it
    // holds when stopped must never be acknowledged once others own its shards.
    const answers = new Map<string, string>();
    let stop = false;
    let n = 0;
    const tipper = async (t: number) => {
      while (!stop) {
        const i = n++;
        const k = `ss-${t}-${i}`;
        const viewer = i % viewers.length;
        for (let attempt = 0; ; attempt++) {
          // While it is stopped, new requests go to the others (those it holds wait for it).
          const live = procs.filter((p) => p.alive);
          const p = live[(viewer + attempt) % live.length]!;
          const r = await fetch(`${p.base}/api/payments/tip`, {
            method: "POST",
            headers: {
              "content-type": "application/json",
              authorization: `Bearer ${viewerTokens[viewer]}`,
              "idempotency-key": k,
            },
            body: JSON.stringify({
              from_user_id: viewers[viewer],
              to_creator_username: creatorName,
              amount: 1,
            }),
            signal: AbortSignal.timeout(3 * LEASE_MS),
          }).then(
            async (res) => ({
              status: res.status,
              body: (await res.json()) as { transaction?: { id: string } },
            }),
            () => ({ status: 0, body: {} as { transaction?: { id: string } } }),
          );
          if (r.status === 201) {
            const prev = answers.get(k);
            if (prev !== undefined) expect(r.body.transaction!.id).toBe(prev);
            answers.set(k, r.body.transaction!.id);
            break;
          }
          if (attempt > 400) throw new Error(`key ${k} never answered: last ${r.status}`);
          await new Promise((res) => setTimeout(res, 25));
        }
      }
    };
    const tippers = Array.from({ length: 6 }, (_, t) => tipper(t));
    await waitFor(() => answers.size >= 200, 60_000, "tips on three processes");
    stalled.child.kill("SIGSTOP");
    stalled.alive = false;
    const stoppedAt = Date.now();
    const others = procs.filter((p) => p !== stalled);
    await waitForBalance(others, 30_000);
    const takenMs = Date.now() - stoppedAt;
    const countAtThaw = answers.size;
    await waitFor(() => answers.size >= countAtThaw + 150, 60_000, "tips while it is stopped");
    stalled.child.kill("SIGCONT");
    stalled.alive = true;
    // Back: its shards are others' now; it takes a share again (with new fencing tokens).
    const thawedAt = Date.now();
    await waitForBalance(procs, 30_000);
    const backMs = Date.now() - thawedAt;
    const after = (await (await fetch(`${stalled.base}/readyz`)).json()).ledger;
    for (const s of after.shards_owned as number[]) {
      if (tokensBefore[s] !== undefined) expect(after.fencing_tokens[s]).toBeGreaterThan(tokensBefore[s]);
    }
    await waitFor(() => answers.size >= countAtThaw + 300, 60_000, "tips after the thaw");
    stop = true;
    await Promise.all(tippers);
    expect(stalled.child.exitCode).toBeNull();

    const count = async () =>
      Number(
        (await env.pool.query("SELECT count(*) AS n FROM transactions WHERE to_user_id = $1", [creator]))
          .rows[0].n,
      );
    await waitFor(
      async () => (await count()) === answers.size,
      60_000,
      "Postgres to hold every answered tip",
    ).catch(async (err) => {
      throw new Error(`${err.message}: postgres ${await count()}, answered ${answers.size}`);
    });
    const rows = await env.pool.query<{ id: string; idempotency_key: string }>(
      "SELECT id, idempotency_key FROM transactions WHERE to_user_id = $1",
      [creator],
    );
    const byKey = new Map(rows.rows.map((r) => [r.idempotency_key, r.id]));
    expect(byKey.size).toBe(rows.rows.length);
    for (const [k, txId] of answers) expect(byKey.get(k), k).toBe(txId);
    console.log(
      `spread stall: the others held every shard ${takenMs} ms after the SIGSTOP (lease ${LEASE_MS} ms), and gave it a share again ${backMs} ms after the SIGCONT; ${answers.size} tips, each once`,
    );

    for (const p of procs) {
      const exited = new Promise((r) => p.child.once("exit", r));
      p.child.kill("SIGTERM");
      await exited;
    }
    const final = await startCore(env.config({ ...vars(), LEDGER_SPREAD: "false" }), silentLogger);
    try {
      await settle(final);
      expect((await final.ledger.getAccount(creator)).balanceCents).toBe(answers.size * 97);
      const report = await reconcileLedger(env.pool, final.ledger.snapshot());
      expect(report.memoryMismatches).toEqual([]);
      expect(report).toMatchObject({ ok: true, totalBalanceCents: 0 });
    } finally {
      await final.stop();
    }
  }, 240_000);
});
