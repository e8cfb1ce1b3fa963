// Money out across real processes: the payout worker runs as `npm run worker`'s entry
// (src/workers/main.ts) in a child process, pointed at Wise and Airwallex stand-ins this test
// starts (WISE_API_URL / AIRWALLEX_API_URL and their keys), while the API (the ledger's owner, and
// the outcome channel's consumer) runs here. (a) The worker SIGKILLed in the window after the
// provider accepted the transfer and before anything reached the ledger (PAYOUT_TEST_PAUSE_AFTER_SEND
// stops it exactly there): a new worker takes the stalled job over and the payout is paid with one
// transfer and one post. (b) The API and the worker restarted mid-flight with payouts on every test
// account's path: every payout ends where its account says, to the cent, reconcile clean.
// (c) SIGTERM: the worker stops taking jobs, lets its active one finish and exits 0.
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { Queue } from "bullmq";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { reconcileLedger } from "../../src/persist/reconcile.ts";
import { PAYOUT_QUEUE, redisKeys } from "../../src/redis/keys.ts";
import { type AirwallexStandin, startAirwallexStandin } from "../../src/standins/airwallex-standin.ts";
import { startWiseStandin, type WiseStandin } from "../../src/standins/wise-standin.ts";
import { type Api, startApi } from "../helpers/api.ts";
import { creatorWithMethod, withdraw20 } from "../helpers/payout-creator.ts";
import { createTestEnv, REDIS_URL, type TestEnv, waitFor } from "../helpers/env.ts";
import { settle } from "../helpers/ledger.ts";

let env: TestEnv;
let api: Api;
let wise: WiseStandin;
let awx: AirwallexStandin;
const children = new Set<ChildProcess>();

const WISE_KEY = `wise_test_${randomUUID()}`;
const WISE_PROFILE = "4242";
const AWX_CLIENT = `awx_client_${randomUUID().slice(0, 8)}`;
const AWX_KEY = `awx_key_${randomUUID()}`;
const AWX_SECRET = `awx_whsec_${randomUUID()}`;

/** What the API and the worker both need to reach the stand-ins as if they were the providers. */
const providerEnv = () => ({
  WISE_API_KEY: WISE_KEY,
  WISE_PROFILE_ID: WISE_PROFILE,
  WISE_API_URL: wise.url,
  WISE_WEBHOOK_PUBLIC_KEY: wise.publicKeyPem,
  AIRWALLEX_CLIENT_ID: AWX_CLIENT,
  AIRWALLEX_API_KEY: AWX_KEY,
  AIRWALLEX_API_URL: awx.url,
  AIRWALLEX_WEBHOOK_SECRET: AWX_SECRET,
  PAYOUT_JOB_BACKOFF_MS: "50",
  PAYOUT_JOB_LOCK_MS: "1000",
});

const apiEnv = () => ({ ...providerEnv(), PAYOUT_OUTCOME_BLOCK_MS: "50" });

async function startTheApi(webhooks: boolean): Promise<Api> {
  const a = await startApi(env, apiEnv());
  wise.setWebhookUrl(webhooks ? `${a.base}/api/payments/webhooks/wise` : null);
  awx.setWebhookUrl(webhooks ? `${a.base}/api/payments/webhooks/airwallex` : null);
  return a;
}

interface WorkerProcess {
  child: ChildProcess;
  /** Payout ids it stopped at (PAYOUT_TEST_PAUSE_AFTER_SEND). */
  paused: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr: () => string;
}

/** `npm run worker`'s entry as a child process against this test's database, Redis and stand-ins. */
function startWorker(extra: Record<string, string> = {}): WorkerProcess {
  const child = spawn(process.execPath, ["--import", "tsx", "src/workers/main.ts"], {
    env: {
      PATH: process.env.PATH,
      NODE_ENV: "test",
      DATABASE_URL: env.databaseUrl,
      REDIS_URL,
      REDIS_PREFIX: env.redisPrefix,
      LOG_LEVEL: "silent",
      PAYOUT_STATUS_POLL_MS: "50",
      PAYOUT_SWEEP_MS: "200",
      PAYOUT_SWEEP_STALE_MS: "1000",
      ...providerEnv(),
      ...extra,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  const paused: string[] = [];
  let out = "";
  let err = "";
  child.stdout!.setEncoding("utf8").on("data", (s: string) => {
    out += s;
    for (const m of out.matchAll(/^PAUSED_AFTER_SEND (\S+)$/gm)) {
      if (!paused.includes(m[1]!)) paused.push(m[1]!);
    }
  });
  child.stderr!.setEncoding("utf8").on("data", (s: string) => {
    err += s;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  return { child, paused, exited, stderr: () => err };
}

async function kill(w: WorkerProcess): Promise<void> {
  w.child.kill("SIGKILL");
  await w.exited;
}

beforeAll(async () => {
  env = await createTestEnv("payout_process");
  wise = await startWiseStandin({
    apiKey: WISE_KEY,
    profileId: WISE_PROFILE,
    delayMs: 300,
    webhookRetryBaseMs: 20,
  });
  awx = await startAirwallexStandin({
    clientId: AWX_CLIENT,
    apiKey: AWX_KEY,
    webhookSecret: AWX_SECRET,
    delayMs: 300,
    webhookRetryBaseMs: 20,
  });
  api = await startTheApi(false);
});
afterEach(async () => {
  for (const c of [...children]) c.kill("SIGKILL");
});
afterAll(async () => {
  for (const c of [...children]) c.kill("SIGKILL");
  await api?.close();
  await wise?.close();
  await awx?.close();
  await env?.cleanup();
});

const statusOf = async (payoutId: string) =>
  (await env.pool.query("SELECT status FROM payouts WHERE id = $1", [payoutId])).rows[0]?.status as
    | string
    | undefined;

async function money(userId: string) {
  const r = await env.pool.query(
    "SELECT balance_cents::int AS bal, reserved_balance_cents::int AS res FROM ledger WHERE id = $1",
    [userId],
  );
  return r.rows[0];
}

/** Transfers the stand-in holds for a payout, over its test-only HTTP path. */
async function transfersAt(provider: "wise" | "airwallex", payoutId: string): Promise<number> {
  const r = await fetch(`${(provider === "wise" ? wise : awx).url}/__standin/payouts/${payoutId}`);
  return ((await r.json()) as { transfers: unknown[] }).transfers.length;
}

const postsFor = async (payoutId: string, userId: string) =>
  (
    await env.pool.query(
      "SELECT count(*)::int AS n FROM ledger_entries WHERE transaction_id = $1 AND account_id = $2",
      [payoutId, userId],
    )
  ).rows[0].n as number;

describe("the payout worker as a process", () => {
  it("SIGKILLed after the provider accepted the transfer and before the ledger heard: one transfer, one post, paid", async () => {
    // No webhooks: only the worker can carry the outcome, so its restart is what is tested.
    wise.setWebhookUrl(null);
    awx.setWebhookUrl(null);
    const w1 = startWorker({ PAYOUT_TEST_PAUSE_AFTER_SEND: "true" });
    const a = await creatorWithMethod(api, "wise", "000123456789");
    const b = await creatorWithMethod(api, "airwallex", "000123456789");
    const ids = { wise: await withdraw20(api, a), airwallex: await withdraw20(api, b) };
    await waitFor(() => w1.paused.length === 2, 30_000, `both transfers sent (${w1.stderr()})`);
    // In the window: the providers have the transfers, the ledger knows nothing of them.
    expect(w1.paused.sort()).toEqual([ids.wise, ids.airwallex].sort());
    expect(await transfersAt("wise", ids.wise)).toBe(1);
    expect(await transfersAt("airwallex", ids.airwallex)).toBe(1);
    await settle(api.core);
    expect(await statusOf(ids.wise)).toBe("pending");
    expect(await statusOf(ids.airwallex)).toBe("pending");
    await kill(w1);

    const w2 = startWorker();
    await waitFor(
      async () => (await statusOf(ids.wise)) === "paid" && (await statusOf(ids.airwallex)) === "paid",
      30_000,
      "both paid after the restart",
    );
    await settle(api.core);
    for (const [provider, id, creator] of [
      ["wise", ids.wise, a],
      ["airwallex", ids.airwallex, b],
    ] as const) {
      expect(await transfersAt(provider, id)).toBe(1);
      expect(await postsFor(id, creator.id)).toBe(1);
      expect(await money(creator.id)).toEqual({ bal: 2850, res: 0 });
    }
    // The restarted worker took the stalled job over and found the transfer by the payout id (on
    // a loaded machine a 1 s lock may lapse and the job run once more: still one transfer).
    expect(wise.transferCallsFor(ids.wise)).toBeGreaterThanOrEqual(2);
    expect(awx.transferCallsFor(ids.airwallex)).toBeGreaterThanOrEqual(2);
    expect(await reconcileLedger(env.pool, api.core.ledger.snapshot())).toMatchObject({ ok: true });
    await kill(w2);
  });

  it("the API and the worker restarted mid-flight: every payout reaches the state its account says, to the cent, reconcile clean", async () => {
    // Webhooks on (as in production): a delivery to the API while it is down is lost or retried.
    wise.setWebhookUrl(`${api.base}/api/payments/webhooks/wise`);
    awx.setWebhookUrl(`${api.base}/api/payments/webhooks/airwallex`);
    const clearing = async () =>
      Number(
        (
          await env.pool.query(
            "SELECT coalesce(sum(balance_cents), 0) AS s FROM ledger WHERE code LIKE 'payouts_clearing%'",
          )
        ).rows[0].s,
      );
    const clearingBefore = await clearing();
    const w1 = startWorker();
    const paths: Array<[string, string]> = [
      ["000123456789", "paid"],
      ["100000000002", "paid"],
      ["100000000003", "failed"],
      ["100000000004", "returned"],
      ["100000000005", "paid"],
      ["100000000006", "failed"],
      ["100000000007", "failed"],
    ];
    const cases: Array<{
      provider: "wise" | "airwallex";
      creator: { id: string; token: string };
      id: string;
      expected: string;
      account: string;
    }> = [];
    for (const provider of ["wise", "airwallex"] as const) {
      for (const [account, expected] of paths) {
        const creator = await creatorWithMethod(api, provider, account);
        cases.push({ provider, creator, id: await withdraw20(api, creator), expected, account });
      }
    }
    // Mid-flight: some payouts have moved, not all of them are final.
    const final = new Set(["paid", "failed", "returned"]);
    await waitFor(
      async () => {
        const s = await Promise.all(cases.map((c) => statusOf(c.id)));
        return s.some((x) => x !== "pending") && s.some((x) => !final.has(x ?? ""));
      },
      30_000,
      "payouts in flight",
    );
    await kill(w1);
    await api.close();
    // While both are down, nothing moves in our books (the stand-ins go on paying and bouncing).
    api = await startTheApi(true);
    // Two more withdrawals queued while no worker runs.
    for (const provider of ["wise", "airwallex"] as const) {
      const creator = await creatorWithMethod(api, provider, "000123456789");
      cases.push({
        provider,
        creator,
        id: await withdraw20(api, creator),
        expected: "paid",
        account: "000123456789",
      });
    }
    const w2 = startWorker();
    await waitFor(
      async () => {
        const s = await Promise.all(cases.map((c) => statusOf(c.id)));
        return s.every((x, i) => x === cases[i]!.expected);
      },
      60_000,
      "every payout final",
    );
    await settle(api.core);
    let paid = 0;
    for (const c of cases) {
      const label = `${c.provider} ${c.expected} ${c.id}`;
      // Refused (0003) and provider down (0006): nothing made; every other: exactly one transfer.
      const made = !c.account.endsWith("0003") && !c.account.endsWith("0006");
      expect(await transfersAt(c.provider, c.id), label).toBe(made ? 1 : 0);
      expect(await postsFor(c.id, c.creator.id), label).toBe(c.expected === "failed" ? 0 : 1);
      expect(await money(c.creator.id), label).toEqual({ bal: c.expected === "paid" ? 2850 : 4850, res: 0 });
      if (c.expected === "paid") paid++;
    }
    // What left the creators is exactly what the payouts clearing account holds: to the cent.
    expect(await clearing()).toBe(clearingBefore + paid * 2000);
    expect(await reconcileLedger(env.pool, api.core.ledger.snapshot())).toMatchObject({ ok: true });
    await kill(w2);
  });

  it("SIGTERM: the worker takes no new job, finishes the active one and exits 0", async () => {
    // No webhooks: only the worker's own follow-up of the transfer can pay it.
    wise.setWebhookUrl(null);
    awx.setWebhookUrl(null);
    // It asks the provider every 250 ms: its job stays active for about two polls after sending.
    const w = startWorker({ PAYOUT_STATUS_POLL_MS: "250" });
    const creator = await creatorWithMethod(api, "wise", "000123456789");
    const id = await withdraw20(api, creator);
    await waitFor(async () => (await statusOf(id)) === "processing", 30_000, "sent to the provider");
    const job = await api.http.payoutJobs.queue.getJob(id);
    const activeAtSignal = (await job?.getState()) === "active";
    w.child.kill("SIGTERM");
    // Queued after the signal: a stopping worker does not take it.
    const later = await creatorWithMethod(api, "airwallex", "000123456789");
    const laterId = await withdraw20(api, later);
    expect(await w.exited).toEqual({ code: 0, signal: null });
    await waitFor(async () => (await statusOf(id)) === "paid", 10_000, "the active job finished");
    expect(await (await api.http.payoutJobs.queue.getJob(id))?.getState()).toBe("completed");
    // The payouts table is the persister's: read it once what the ledger decided is written
    // (with PERSIST_LINGER_MS at 200 the row of a withdrawal just made was sometimes not there yet).
    await settle(api.core);
    expect(await statusOf(laterId)).toBe("pending");
    expect(await (await api.http.payoutJobs.queue.getJob(laterId))?.getState()).toBe("waiting");
    // The window was hit (the job was running when the signal came) in every run so far; say so
    // if a slow machine ever misses it rather than passing silently on an idle worker.
    expect(activeAtSignal, "the job was active when SIGTERM was sent").toBe(true);
    // A new worker takes the one left waiting.
    const w2 = startWorker();
    await waitFor(async () => (await statusOf(laterId)) === "paid", 30_000, "the waiting job paid");
    await kill(w2);
    expect(await reconcileLedger(env.pool, api.core.ledger.snapshot())).toMatchObject({ ok: true });
  });
});

describe("npm start", () => {
  it("runs the payout worker inside the API by default, and SIGTERM stops both and exits 0", async () => {
    const own = await createTestEnv("npm_start");
    const queue = new Queue(PAYOUT_QUEUE, {
      connection: { url: REDIS_URL },
      prefix: redisKeys(own.redisPrefix).bullPrefix,
    });
    try {
      const child = spawn(process.execPath, ["--import", "tsx", "src/main/main.ts"], {
        env: {
          PATH: process.env.PATH,
          NODE_ENV: "test",
          DATABASE_URL: own.databaseUrl,
          REDIS_URL,
          REDIS_PREFIX: own.redisPrefix,
          LOG_LEVEL: "info",
          PORT: "0",
          HOST: "127.0.0.1",
          SHARDS: "2",
          STRIPE_STANDIN_PORT: "0",
          WISE_STANDIN_PORT: "0",
          AIRWALLEX_STANDIN_PORT: "0",
          PASSWORD_HASH_THREADS: "1",
        },
        stdio: ["ignore", "pipe", "pipe"],
      });
      children.add(child);
      let out = "";
      child.stdout!.setEncoding("utf8").on("data", (x: string) => {
        out += x;
      });
      child.stderr!.setEncoding("utf8").on("data", (x: string) => {
        out += x;
      });
      const exited = new Promise<number | null>((resolve) =>
        child.once("exit", (code) => {
          children.delete(child);
          resolve(code);
        }),
      );
      await waitFor(() => out.includes("3AM backend listening"), 60_000, `the API up (${out.slice(-2000)})`);
      // A BullMQ worker on the payouts queue, in the API's process (RUN_WORKERS defaults to true).
      await waitFor(
        async () => (await queue.getWorkers()).length === 1,
        10_000,
        "the payout worker connected",
      );
      child.kill("SIGTERM");
      expect(await exited).toBe(0);
      expect(out).toMatch(/shutting down/);
      expect(await queue.getWorkers()).toHaveLength(0);
    } finally {
      await queue.close();
      await own.cleanup();
    }
  });
});
