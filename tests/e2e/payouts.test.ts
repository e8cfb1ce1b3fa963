// Money out over HTTP against a real server, Postgres, Redis and BullMQ: payout methods
// validated, withdrawals reserved (earned money only) and queued for the payout worker,
// idempotent, refusals that move nothing, the outcome channel applying provider results once, the
// admin's view and retry, and a withdrawal racing tips out of the same balance.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runAdminCli } from "../../src/admin/cli.ts";
import type { TxResult } from "../../src/ledger/types.ts";
import { publishPayoutOutcome } from "../../src/payouts/outcomes.ts";
import { payoutIdFor } from "../../src/payouts/routes.ts";
import { reconcileLedger } from "../../src/persist/reconcile.ts";
import { type Api, startApi } from "../helpers/api.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";
import { settle } from "../helpers/ledger.ts";

let env: TestEnv;
let api: Api;
let admin: { id: string; token: string };

beforeAll(async () => {
  env = await createTestEnv("payouts");
  api = await startApi(env, { PAYOUT_OUTCOME_BLOCK_MS: "50" });
  const a = await api.register();
  expect(await runAdminCli(["grant", a.email], env.databaseUrl)).toMatchObject({ code: 0 });
  admin = a;
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

const ISO = expect.stringMatching(/^\d{4}-\d{2}-\d{2}T/);

/** A creator who earned `cents` net from a funded fan's tips (through the ledger: the HTTP tip
 * amounts are $1 and $3 and the hourly count would stop a big sum). */
async function earningCreator(grossCents: number) {
  const creator = await api.register("creator");
  const fan = await api.register();
  await api.fund(fan.id, grossCents);
  await api.core.ledger.submit({
    kind: "tip",
    key: randomUUID(),
    fromAccountId: fan.id,
    toAccountId: creator.id,
    amountCents: grossCents,
  });
  await settle(api.core);
  return { creator, fan };
}

/** A payout method as a provider would have created it (the PUT path is tested on its own). */
async function withMethod(userId: string, provider: "wise" | "airwallex" = "wise") {
  await env.pool.query(
    `INSERT INTO payout_methods (user_id, provider, provider_recipient_id, account_holder_name, country, currency, account_last4)
     VALUES ($1, $2, $3, 'Test Holder', 'US', 'USD', '6789')`,
    [userId, provider, `rcp_${userId.slice(0, 8)}`],
  );
}

const withdraw = (token: string, userId: string, amount: unknown, key: string | null = randomUUID()) =>
  api.call("POST", "/api/payments/withdraw", {
    token,
    body: { user_id: userId, amount },
    ...(key === null ? {} : { headers: { "idempotency-key": key } }),
  });

async function moneyOf(userId: string) {
  await settle(api.core);
  const l = await env.pool.query(
    "SELECT balance_cents::int AS bal, reserved_balance_cents::int AS res, earned_cents::int AS earned FROM ledger WHERE id = $1",
    [userId],
  );
  const p = await env.pool.query("SELECT count(*)::int AS n FROM payouts WHERE user_id = $1", [userId]);
  return { ...l.rows[0], payouts: p.rows[0].n };
}

const job = (id: string) => api.http.payoutJobs.queue.getJob(id);

describe("withdrawals", () => {
  it("reserves earned money, answers 202 pending, and queues a job whose id is the payout id", async () => {
    const { creator } = await earningCreator(5000); // 48.50 earned
    await withMethod(creator.id);
    const key = randomUUID();
    const r = await withdraw(creator.token, creator.id, 20, key);
    expect(r.status).toBe(202);
    const id = payoutIdFor(creator.id, key);
    expect(r.body).toEqual({
      payout: { id, status: "pending", amount: "20.00", provider: "wise", created_at: ISO },
      balance: {
        user_id: creator.id,
        balance: "48.50",
        reserved_balance: "20.00",
        available_balance: "28.50",
        withdrawable_balance: "28.50",
        currency: "USD",
      },
    });
    expect(r.headers.get("idempotency-key")).toBe(key);
    const j = await job(id);
    expect(j?.id).toBe(id);
    expect(j?.data).toEqual({
      payoutId: id,
      userId: creator.id,
      round: 1,
      amountCents: 2000,
      currency: "USD",
      provider: "wise",
      providerRecipientId: `rcp_${creator.id.slice(0, 8)}`,
      createdAt: expect.any(String),
    });
    expect(Date.parse(j!.data.createdAt!)).toBeGreaterThan(Date.now() - 60_000);
    expect(j?.opts).toMatchObject({ attempts: 5, backoff: { type: "exponential", delay: 2000 } });

    // Readable at once (the owner's shard knows it before Postgres does), then from Postgres.
    const one = await api.call("GET", `/api/payments/payouts/${id}`, { token: creator.token });
    expect(one.status).toBe(200);
    expect(one.body.payout).toMatchObject({
      id,
      user_id: creator.id,
      status: "pending",
      amount: "20.00",
      provider: "wise",
      provider_reference: null,
      failure_reason: null,
      created_at: ISO,
      updated_at: ISO,
      paid_at: null,
    });
    expect(await moneyOf(creator.id)).toEqual({ bal: 4850, res: 2000, earned: 2850, payouts: 1 });
    const row = await env.pool.query(
      "SELECT status, amount_cents::int AS a, provider FROM payouts WHERE id = $1",
      [id],
    );
    expect(row.rows).toEqual([{ status: "pending", a: 2000, provider: "wise" }]);
    const list = await api.call("GET", `/api/payments/payouts?user_id=${creator.id}&limit=5`, {
      token: creator.token,
    });
    expect(list.body.payouts.map((p: { id: string }) => p.id)).toEqual([id]);
    // An admin reads it too; a stranger does not.
    expect((await api.call("GET", `/api/payments/payouts/${id}`, { token: admin.token })).status).toBe(200);
    const stranger = await api.register();
    expect((await api.call("GET", `/api/payments/payouts/${id}`, { token: stranger.token })).status).toBe(
      403,
    );
    expect(
      (await api.call("GET", `/api/payments/payouts?user_id=${creator.id}`, { token: stranger.token }))
        .status,
    ).toBe(403);
    expect(await reconcileLedger(env.pool, api.core.ledger.snapshot())).toMatchObject({ ok: true });
  });

  it("replays the same key (one reserve, one job, even for 20 concurrent copies); another body is 409", async () => {
    const { creator } = await earningCreator(10_000);
    await withMethod(creator.id);
    const key = randomUUID();
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => withdraw(creator.token, creator.id, 15, key)),
    );
    expect(answers.map((a) => a.status)).toEqual(Array(20).fill(202));
    for (const a of answers) expect(a.body).toEqual(answers[0]!.body);
    const again = await withdraw(creator.token, creator.id, "15.00", key);
    expect(again.status).toBe(202);
    expect(again.body).toEqual(answers[0]!.body);
    const other = await withdraw(creator.token, creator.id, 16, key);
    expect(other.status).toBe(409);
    expect(other.body.error.code).toBe("idempotency_conflict");
    expect(await moneyOf(creator.id)).toMatchObject({ res: 1500, payouts: 1 });
    expect(
      await api.http.payoutJobs.queue.getJobCountByTypes("waiting", "active", "delayed"),
    ).toBeGreaterThan(0);
  });

  it("refuses without moving anything: purchased credits, below minimum, no method, another's account, bad amounts, no key, suspended", async () => {
    const viewer = await api.register();
    await api.fund(viewer.id, 50_000);
    await withMethod(viewer.id);
    const { creator } = await earningCreator(5000);
    const bare = await earningCreator(5000);
    await withMethod(creator.id);
    const before = {
      viewer: await moneyOf(viewer.id),
      creator: await moneyOf(creator.id),
      bare: await moneyOf(bare.creator.id),
    };
    const jobsBefore = await api.http.payoutJobs.queue.getJobCounts();

    const purchased = await withdraw(viewer.token, viewer.id, 20);
    expect(purchased.status).toBe(422);
    expect(purchased.body.error).toMatchObject({
      code: "insufficient_funds",
      details: { withdrawable: "0.00" },
    });
    const tooMuch = await withdraw(creator.token, creator.id, "48.51");
    expect(tooMuch.status).toBe(422);
    expect(tooMuch.body.error).toMatchObject({
      code: "insufficient_funds",
      details: { withdrawable: "48.50" },
    });
    const small = await withdraw(creator.token, creator.id, 9.99);
    expect(small.status).toBe(422);
    expect(small.body.error).toMatchObject({ code: "below_minimum", details: { minimum: "10.00" } });
    const noMethod = await withdraw(bare.creator.token, bare.creator.id, 20);
    expect(noMethod.status).toBe(422);
    expect(noMethod.body.error.code).toBe("payout_method_required");
    const others = await withdraw(viewer.token, creator.id, 20);
    expect(others.status).toBe(403);
    for (const amount of [0, -10, 10.005, "1e3", "abc", null, true, 20_000]) {
      const bad = await withdraw(creator.token, creator.id, amount);
      expect(bad.status, `amount ${JSON.stringify(amount)}`).toBe(400);
    }
    const missing = await api.call("POST", "/api/payments/withdraw", {
      token: creator.token,
      body: { user_id: creator.id },
      headers: { "idempotency-key": randomUUID() },
    });
    expect(missing.status).toBe(400);
    expect((await withdraw(creator.token, creator.id, 20, null)).status).toBe(400);
    expect(
      (await api.call("POST", "/api/payments/withdraw", { body: { user_id: creator.id, amount: 20 } }))
        .status,
    ).toBe(401);
    const suspendKey = randomUUID();
    const s = await api.call("POST", `/api/admin/users/${creator.id}/suspend`, {
      token: admin.token,
      body: { reason: "test", idempotency_key: suspendKey },
    });
    expect(s.status).toBe(200);
    const suspended = await withdraw(creator.token, creator.id, 20);
    expect(suspended.status).toBe(422);
    expect(suspended.body.error).toMatchObject({
      code: "fraud_blocked",
      details: { rule: "suspended_account" },
    });
    await api.call("POST", `/api/admin/users/${creator.id}/unsuspend`, { token: admin.token, body: {} });

    expect({
      viewer: await moneyOf(viewer.id),
      creator: await moneyOf(creator.id),
      bare: await moneyOf(bare.creator.id),
    }).toEqual(before);
    expect(await api.http.payoutJobs.queue.getJobCounts()).toEqual(jobsBefore);
  });
});

describe("the outcome channel", () => {
  async function pendingPayout(amount = 20) {
    const { creator } = await earningCreator(5000);
    await withMethod(creator.id);
    const key = randomUUID();
    const r = await withdraw(creator.token, creator.id, amount, key);
    expect(r.status).toBe(202);
    return { creator, id: r.body.payout.id as string };
  }
  const read = async (token: string, id: string) =>
    (await api.call("GET", `/api/payments/payouts/${id}`, { token })).body.payout;
  const publish = (o: Parameters<typeof publishPayoutOutcome>[2]) =>
    publishPayoutOutcome(env.redis, env.redisPrefix, o);

  it("applies paid once however often and in whatever order outcomes arrive", async () => {
    const { creator, id } = await pendingPayout();
    const base = { payoutId: id, userId: creator.id, round: 1 };
    await publish({ ...base, state: "paid", providerTransferId: "tr_1" });
    await publish({ ...base, state: "processing", providerTransferId: "tr_1", attempts: 1 });
    await publish({ ...base, state: "paid", providerTransferId: "tr_1" });
    await publish({ ...base, state: "failed", failureReason: "late" });
    await waitFor(
      async () => (await env.redis.xlen(`${env.redisPrefix}payouts:outcomes`)) === 0,
      10_000,
      "outcomes consumed",
    );
    await waitFor(async () => (await read(creator.token, id)).status === "paid", 10_000, "paid");
    expect(await read(creator.token, id)).toMatchObject({
      status: "paid",
      provider_reference: "tr_1",
      failure_reason: null,
      paid_at: ISO,
    });
    expect(await moneyOf(creator.id)).toEqual({ bal: 2850, res: 0, earned: 2850, payouts: 1 });
    const posts = await env.pool.query(
      "SELECT count(*)::int AS n FROM ledger_entries WHERE transaction_id = $1 AND account_id = $2",
      [id, creator.id],
    );
    expect(posts.rows[0].n).toBe(1);
    expect(await reconcileLedger(env.pool, api.core.ledger.snapshot())).toMatchObject({ ok: true });
  });

  it("credits a returned payout back once; a failed one releases its reserve and an admin retry starts round 2", async () => {
    const { creator, id } = await pendingPayout(30);
    const base = { payoutId: id, userId: creator.id, round: 1 };
    await publish({ ...base, state: "paid" });
    await publish({ ...base, state: "returned", failureReason: "bounced_back" });
    await publish({ ...base, state: "returned", failureReason: "bounced_back" });
    await waitFor(async () => (await read(creator.token, id)).status === "returned", 10_000, "returned");
    expect(await moneyOf(creator.id)).toEqual({ bal: 4850, res: 0, earned: 4850, payouts: 1 });
    const returns = await env.pool.query(
      "SELECT amount_cents::int AS a FROM transactions WHERE type = 'payout_return' AND account_id = $1",
      [creator.id],
    );
    expect(returns.rows).toEqual([{ a: 3000 }]);

    const second = await pendingPayout(25);
    const b2 = { payoutId: second.id, userId: second.creator.id, round: 1 };
    await publish({ ...b2, state: "processing" });
    await publish({ ...b2, state: "failed", failureReason: "account closed" });
    await waitFor(
      async () => (await read(second.creator.token, second.id)).status === "failed",
      10_000,
      "failed",
    );
    expect(await moneyOf(second.creator.id)).toEqual({ bal: 4850, res: 0, earned: 4850, payouts: 1 });
    await settle(api.core);
    const failed = await api.call("GET", "/api/admin/payouts?status=failed", { token: admin.token });
    expect(failed.status).toBe(200);
    expect(failed.body.payouts.map((p: { id: string }) => p.id)).toContain(second.id);
    expect(
      (await api.call("GET", "/api/admin/payouts?status=failed", { token: second.creator.token })).status,
    ).toBe(403);
    // While round 1's job is still queued (no worker runs here), a retry cannot replace it: 503.
    const early = await api.call("POST", `/api/admin/payouts/${second.id}/retry`, {
      token: admin.token,
      body: {},
    });
    expect(early.status).toBe(503);
    // The worker ends a refused round's job as failed; here it is removed, as a finished one is.
    await (await job(second.id))!.remove();
    const retry = await api.call("POST", `/api/admin/payouts/${second.id}/retry`, {
      token: admin.token,
      body: {},
    });
    expect(retry.status, JSON.stringify(retry.body)).toBe(202);
    expect(retry.body.payout).toMatchObject({
      id: second.id,
      status: "pending",
      round: 2,
      failure_reason: null,
    });
    const again = await api.call("POST", `/api/admin/payouts/${second.id}/retry`, {
      token: admin.token,
      body: {},
    });
    expect(again.status).toBe(202);
    expect(await moneyOf(second.creator.id)).toMatchObject({ res: 2500, earned: 2350 });
    expect((await job(second.id))?.data.round).toBe(2);
    // Round 1's late paid changes nothing; round 2's is applied.
    await publish({ ...b2, state: "paid" });
    await publish({ ...b2, round: 2, state: "paid" });
    await waitFor(
      async () => (await read(second.creator.token, second.id)).status === "paid",
      10_000,
      "paid",
    );
    expect(await moneyOf(second.creator.id)).toEqual({ bal: 2350, res: 0, earned: 2350, payouts: 1 });
    expect(await reconcileLedger(env.pool, api.core.ledger.snapshot())).toMatchObject({ ok: true });
  });

  it("applies outcomes published while the consumer was down, and one it read but never acknowledged", async () => {
    const { creator, id } = await pendingPayout();
    await api.http.payoutOutcomes.stop();
    const base = { payoutId: id, userId: creator.id, round: 1 };
    await publish({ ...base, state: "processing" });
    // A consumer that read the outcome and died before acknowledging it.
    const key = `${env.redisPrefix}payouts:outcomes`;
    const got = await env.redis.xreadgroup(
      "GROUP",
      "ledger",
      "ledger-owner",
      "COUNT",
      10,
      "STREAMS",
      key,
      ">",
    );
    expect(got).not.toBeNull();
    await publish({ ...base, state: "paid" });
    await api.http.payoutOutcomes.start();
    await waitFor(
      async () => (await read(creator.token, id)).status === "paid",
      10_000,
      "paid after restart",
    );
    await waitFor(async () => (await env.redis.xlen(key)) === 0, 10_000, "acknowledged");
    expect(await moneyOf(creator.id)).toEqual({ bal: 2850, res: 0, earned: 2850, payouts: 1 });
  });
});

describe("a withdrawal racing tips out of the same balance", () => {
  it("never takes more than was earned, and reserved never exceeds the balance at any step", async () => {
    const { creator } = await earningCreator(20_000); // 194.00 earned
    await withMethod(creator.id);
    await api.fund(creator.id, 3000); // 30.00 bought: spendable on tips, not withdrawable
    const peers = await Promise.all([api.register("creator"), api.register("creator")]);
    const violations: string[] = [];
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        const a = await api.core.ledger.getAccount(creator.id);
        if (a.reservedCents > a.balanceCents)
          violations.push(`reserved ${a.reservedCents} > ${a.balanceCents}`);
        if (a.withdrawableCents > a.availableCents) violations.push(`withdrawable above available`);
        await new Promise((r) => setImmediate(r));
      }
    })();
    const tips = Array.from({ length: 9 }, (_, i) =>
      api.core.ledger
        .submit({
          kind: "tip",
          key: randomUUID(),
          fromAccountId: creator.id,
          toAccountId: peers[i % 2]!.id,
          amountCents: 3000,
        })
        .then(
          (r) => (r as TxResult).transaction.amountCents,
          () => 0,
        ),
    );
    const withdrawals = [withdraw(creator.token, creator.id, 150), withdraw(creator.token, creator.id, 150)];
    const [tipped, answers] = await Promise.all([Promise.all(tips), Promise.all(withdrawals)]);
    watching = false;
    await watcher;
    expect(violations).toEqual([]);
    const tippedCents = tipped.reduce((a, b) => a + b, 0);
    const reserved = answers.filter((a) => a.status === 202).length * 15_000;
    for (const a of answers) expect([202, 422]).toContain(a.status);
    // In: 194.00 earned + 30.00 bought. Out: tips and reserves, never more than in; the reserves
    // never more than what was earned and left after the tips.
    expect(tippedCents + reserved).toBeLessThanOrEqual(22_400);
    expect(reserved).toBeLessThanOrEqual(19_400);
    const m = await moneyOf(creator.id);
    expect(m.bal).toBe(22_400 - tippedCents);
    expect(m.res).toBe(reserved);
    expect(m.res).toBeLessThanOrEqual(m.bal);
    expect(await reconcileLedger(env.pool, api.core.ledger.snapshot())).toMatchObject({ ok: true });
  });
});

describe("payout methods", () => {
  it("validates bank details before any provider is asked, and never echoes the account number", async () => {
    const u = await api.register("creator");
    const body = {
      user_id: u.id,
      provider: "wise",
      account_holder_name: "Test Holder",
      country: "US",
      currency: "USD",
      account_number: "000123456789",
      routing_number: "021000021",
    };
    const put = (b: Record<string, unknown>, token = u.token) =>
      api.call("PUT", "/api/payments/payout-method", { token, body: b });
    for (const bad of [
      { routing_number: "021000022" }, // checksum
      { routing_number: "02100002" },
      { account_number: "123" },
      { account_number: "123456789012345678" },
      { account_number: "12-3456" },
      { country: "GB" },
      { currency: "EUR" },
      { provider: "paypal" },
      { account_holder_name: "" },
    ]) {
      const r = await put({ ...body, ...bad });
      expect(r.status, JSON.stringify(bad)).toBe(400);
      expect(JSON.stringify(r.body)).not.toContain("000123456789");
    }
    const other = await api.register("creator");
    expect((await put(body, other.token)).status).toBe(403);
    expect(
      (await env.pool.query("SELECT count(*)::int AS n FROM payout_methods WHERE user_id = $1", [u.id]))
        .rows[0].n,
    ).toBe(0);
  });

  it("creates the recipient at the provider (Wise, then Airwallex) and keeps its id and the last four digits only", async () => {
    const { creator } = await earningCreator(5000);
    const body = {
      user_id: creator.id,
      provider: "wise",
      account_holder_name: "Amazing Creator",
      country: "US",
      currency: "USD",
      account_number: "000123456789",
      routing_number: "021000021",
    };
    const wise = await api.call("PUT", "/api/payments/payout-method", { token: creator.token, body });
    expect(wise.status, JSON.stringify(wise.body)).toBe(200);
    expect(wise.body).toEqual({
      payout_method: {
        provider: "wise",
        account_holder_name: "Amazing Creator",
        country: "US",
        currency: "USD",
        account_last4: "6789",
        created_at: ISO,
      },
    });
    const row = async () =>
      (await env.pool.query("SELECT * FROM payout_methods WHERE user_id = $1", [creator.id])).rows[0];
    const first = await row();
    expect(first.provider_recipient_id).toMatch(/\S/);
    expect(JSON.stringify(first)).not.toContain("000123456789");
    const awx = await api.call("PUT", "/api/payments/payout-method", {
      token: creator.token,
      body: { ...body, provider: "airwallex", account_number: "5555" },
    });
    expect(awx.status, JSON.stringify(awx.body)).toBe(200);
    expect(awx.body.payout_method).toMatchObject({ provider: "airwallex", account_last4: "5555" });
    const second = await row();
    expect(second.provider_recipient_id).not.toBe(first.provider_recipient_id);
    const read = await api.call("GET", `/api/payments/payout-method/${creator.id}`, { token: creator.token });
    expect(read.body).toEqual(awx.body);
    // A withdrawal goes to the method's provider and recipient.
    const w = await withdraw(creator.token, creator.id, 10);
    expect(w.status).toBe(202);
    expect(w.body.payout.provider).toBe("airwallex");
    expect((await job(w.body.payout.id))?.data.providerRecipientId).toBe(second.provider_recipient_id);
  });
});
