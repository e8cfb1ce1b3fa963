// Email end to end: the API enqueues (welcome on registration, a receipt once a deposit is
// durable, from the purchase route and from Stripe's webhook), the email worker runs in-process
// (createEmailWorker) and sends over SMTP to a real SMTP server started here (smtp-server), whose
// messages are parsed (mailparser) and checked: recipient, From, subject, amounts, text and HTML
// parts. SMTP down then back, 4xx then accepted, 5xx to failed, duplicate webhooks, the catcher.
import { randomUUID } from "node:crypto";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Queue } from "bullmq";
import { type ParsedMail, simpleParser } from "mailparser";
import { SMTPServer } from "smtp-server";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEmailQueue, enqueueEmail } from "../../src/email/queue.ts";
import { createEmailWorker, type EmailWorker } from "../../src/email/worker.ts";
import { stripeClient } from "../../src/payments/stripe.ts";
import { type StripeStandin, startStripeStandin } from "../../src/standins/stripe-standin.ts";
import { type Api, startApi } from "../helpers/api.ts";
import { testPayoutWorker } from "../helpers/payout-worker.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";
import { silentLogger } from "../helpers/ledger.ts";

interface Received {
  rcpt: string[];
  mail: ParsedMail;
}

interface TestSmtp {
  port: number;
  received: Received[];
  /** address -> SMTP answer to RCPT TO (code and times; times undefined: always). */
  rejects: Map<string, { code: number; times?: number }>;
  close(): Promise<void>;
}

async function startSmtp(port = 0, received: Received[] = [], rejects = new Map()): Promise<TestSmtp> {
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ["STARTTLS", "AUTH"],
    logger: false,
    onRcptTo(address, _session, cb) {
      const rule = rejects.get(address.address);
      if (rule && (rule.times === undefined || rule.times > 0)) {
        if (rule.times !== undefined) rule.times--;
        const err = new Error(rule.code >= 500 ? "mailbox unavailable" : "try again later") as Error & {
          responseCode: number;
        };
        err.responseCode = rule.code;
        return cb(err);
      }
      cb();
    },
    onData(stream, session, cb) {
      simpleParser(stream)
        .then((mail) => {
          received.push({ rcpt: session.envelope.rcptTo.map((r) => r.address), mail });
          cb();
        })
        .catch(cb);
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
  const bound = (server.server.address() as { port: number }).port;
  return {
    port: bound,
    received,
    rejects,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

const WEBHOOK_SECRET = `whsec_test_${randomUUID().replaceAll("-", "")}`;
const SECRET_KEY = "sk_test_3am_email";
const FROM = "3AM Receipts <receipts@3am.test>";

let env: TestEnv;
let smtp: TestSmtp;
let standin: StripeStandin;
let api: Api;
let emails: EmailWorker;

beforeAll(async () => {
  env = await createTestEnv("email");
  smtp = await startSmtp();
  standin = await startStripeStandin({ port: 0, host: "127.0.0.1", webhookSecret: WEBHOOK_SECRET });
  api = await startApi(env, {
    STRIPE_SECRET_KEY: SECRET_KEY,
    STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
    STRIPE_API_URL: standin.url,
    SMTP_URL: `smtp://127.0.0.1:${smtp.port}`,
    EMAIL_FROM: FROM,
    EMAIL_BACKOFF_MS: "50",
    SMTP_TIMEOUT_MS: "2000",
    PAYOUT_OUTCOME_BLOCK_MS: "50",
    PAYOUT_STANDIN_DELAY_MS: "100",
  });
  standin.setWebhookUrl(`${api.base}/api/payments/webhook`);
  emails = createEmailWorker({ config: api.core.config, logger: silentLogger, pool: env.pool });
});
afterAll(async () => {
  await emails?.close();
  await api?.close();
  await standin?.close();
  await smtp?.close();
  await env?.cleanup();
});

const queue = (): Queue => api.http.emailQueue;
const to = (address: string) => smtp.received.filter((r) => r.rcpt.includes(address));
const bySubject = (address: string, re: RegExp) => to(address).filter((r) => re.test(r.mail.subject ?? ""));

/** Every job enqueued so far has finished (sent or failed): nothing waiting, running or delayed. */
async function settled(): Promise<void> {
  await waitFor(
    async () => {
      const c = await queue().getJobCounts("waiting", "active", "delayed", "prioritized");
      return Object.values(c).every((n) => n === 0);
    },
    15_000,
    "the email queue to settle",
  );
}

async function purchase(user: { id: string; token: string }, amount: number) {
  const r = await api.call("POST", "/api/payments/credits/purchase", {
    token: user.token,
    headers: { "idempotency-key": randomUUID() },
    body: { user_id: user.id, amount, payment_method_id: "pm_card_visa" },
  });
  expect(r.status).toBe(201);
  return r.body.payment_intent_id as string;
}

describe("messages", () => {
  it("welcomes a new user once, with the display name escaped in HTML and kept in text", async () => {
    const name = `Ann <b>"Bold"</b> & Co`;
    const tag = randomUUID().slice(0, 8);
    const email = `ann_${tag}@example.test`;
    const r = await api.call("POST", "/api/users/register", {
      body: { email, username: `ann_${tag}`, display_name: name, password: "securepass123" },
    });
    expect(r.status).toBe(201);
    await waitFor(() => to(email).length === 1, 10_000, "the welcome email");
    const { mail } = to(email)[0]!;
    expect(mail.from?.value).toEqual([{ address: "receipts@3am.test", name: "3AM Receipts" }]);
    expect(mail.to && !Array.isArray(mail.to) ? mail.to.value[0] : null).toEqual({ address: email, name });
    expect(mail.subject).toBe(`Welcome to 3AM, ${name}`);
    expect(mail.text).toContain(`Hi ${name},`);
    expect(mail.html).toContain("Hi Ann &lt;b&gt;&quot;Bold&quot;&lt;/b&gt; &amp; Co,");
    expect(mail.html).not.toContain("<b>");
    expect(mail.messageId).toBe(`<welcome-${r.body.user.id}@3am.test>`);
    await settled();
    expect(to(email)).toHaveLength(1);
  });

  it("sends one receipt per purchase, amounts as 25.00, with the PaymentIntent and the new balance", async () => {
    const user = await api.register();
    const pi = await purchase(user, 25);
    await waitFor(() => bySubject(user.email, /receipt/).length === 1, 10_000, "the receipt");
    const { mail } = bySubject(user.email, /receipt/)[0]!;
    expect(mail.subject).toBe("Your 3AM receipt: 25.00 USD of credits");
    expect(mail.from?.text).toBe('"3AM Receipts" <receipts@3am.test>');
    for (const part of [mail.text!, mail.html as string]) {
      expect(part).toContain("Credits bought: 25.00 USD");
      expect(part).toContain(`Payment: ${pi}`);
      expect(part).toContain("New balance: 25.00 USD");
    }
    const pi2 = await purchase(user, 10);
    await waitFor(() => bySubject(user.email, /receipt/).length === 2, 10_000, "the second receipt");
    const second = bySubject(user.email, /receipt/).find((r) => r.mail.text?.includes(pi2))!;
    expect(second.mail.subject).toBe("Your 3AM receipt: 10.00 USD of credits");
    expect(second.mail.text).toContain("New balance: 35.00 USD");
    // Stripe's webhooks for both PaymentIntents arrive too (the deposits replay): no more receipts.
    await standin.flushWebhooks();
    await settled();
    expect(bySubject(user.email, /receipt/)).toHaveLength(2);
    // The welcome, and the two receipts: nothing else.
    expect(to(user.email)).toHaveLength(3);
  });

  it("sends the receipt of a deposit made by the webhook, and no second one for duplicate webhooks", async () => {
    const user = await api.register();
    standin.configure({ duplicate: 4 });
    try {
      const pi = await stripeClient(SECRET_KEY, standin.url).paymentIntents.create({
        amount: 1234,
        currency: "usd",
        metadata: { user_id: user.id },
        payment_method: "pm_card_visa",
        confirm: true,
        automatic_payment_methods: { enabled: true, allow_redirects: "never" },
      });
      await standin.flushWebhooks();
      await waitFor(() => bySubject(user.email, /receipt/).length === 1, 10_000, "the receipt");
      expect(bySubject(user.email, /receipt/)[0]!.mail.text).toContain("Credits bought: 12.34 USD");
      // The same event delivered again, later (a redelivery after our answer was lost).
      const event = standin
        .events()
        .find((e) => e.type === "payment_intent.succeeded" && JSON.stringify(e).includes(pi.id))!;
      standin.resendEvent(event.id);
      await standin.flushWebhooks();
      await settled();
      expect(bySubject(user.email, /receipt/)).toHaveLength(1);
    } finally {
      standin.configure({ duplicate: 1 });
    }
  });

  it("tells a creator of each payout step once, with the failure reason, and of chargeback debt", async () => {
    const user = await api.register("creator");
    const payoutId = randomUUID();
    const events = [
      { kind: "payout_requested", userId: user.id, payoutId, amountCents: 5000 },
      { kind: "payout_paid", userId: user.id, payoutId, amountCents: 5000 },
      { kind: "payout_failed", userId: user.id, payoutId, amountCents: 700, reason: "account closed" },
      { kind: "payout_returned", userId: user.id, payoutId, amountCents: 800 },
      { kind: "chargeback_debt", userId: user.id, disputeId: "dp_123", amountCents: 2500, debtCents: 1999 },
    ] as const;
    for (const e of events) await enqueueEmail(queue(), e);
    // The same events again (a re-run job, a redelivered webhook): nothing more is sent.
    for (const e of events) await enqueueEmail(queue(), e);
    await waitFor(() => to(user.email).length >= 6, 10_000, "the payout emails");
    await settled();
    const subjects = to(user.email)
      .map((r) => r.mail.subject)
      .sort();
    expect(subjects).toEqual(
      [
        "A chargeback left your 3AM account owing 19.99 USD",
        `Welcome to 3AM, ${"User"} ${user.username.slice(2)}`,
        "Your 3AM payout of 50.00 USD is on its way",
        "Your 3AM payout of 50.00 USD was paid",
        "Your 3AM payout of 7.00 USD failed",
        "Your 3AM payout of 8.00 USD was returned",
      ].sort(),
    );
    const failed = bySubject(user.email, /failed/)[0]!.mail;
    expect(failed.text).toContain("Reason: account closed");
    expect(failed.html).toContain("Reason: account closed");
    expect(failed.text).toContain(`Payout: ${payoutId}`);
  });

  it("emails chargeback debt when a dispute takes back credits already spent", async () => {
    const viewer = await api.register();
    const creator = await api.register("creator");
    const pi = await purchase(viewer, 25);
    for (let i = 0; i < 6; i++) {
      const t = await api.call("POST", "/api/payments/tip", {
        token: viewer.token,
        headers: { "idempotency-key": randomUUID() },
        body: { from_user_id: viewer.id, to_creator_username: creator.username, amount: 3 },
      });
      expect(t.status).toBe(201);
    }
    standin.createDispute(pi);
    await standin.flushWebhooks();
    await waitFor(() => bySubject(viewer.email, /chargeback/).length === 1, 10_000, "the chargeback notice");
    const mail = bySubject(viewer.email, /chargeback/)[0]!.mail;
    expect(mail.subject).toBe("A chargeback left your 3AM account owing 18.00 USD");
    expect(mail.text).toContain("disputed a payment of 25.00 USD");
  });
});

describe("payout emails", () => {
  it("tells a creator a payout is on its way, then paid, failed with the reason, or returned: once each", async () => {
    const worker = testPayoutWorker(api, env);
    try {
      const payout = async (accountNumber: string) => {
        const creator = await api.register("creator");
        const fan = await api.register();
        await api.fund(fan.id, 5000);
        await api.core.ledger.submit({
          kind: "tip",
          key: randomUUID(),
          fromAccountId: fan.id,
          toAccountId: creator.id,
          amountCents: 5000,
        });
        const m = await api.call("PUT", "/api/payments/payout-method", {
          token: creator.token,
          body: {
            user_id: creator.id,
            provider: "wise",
            account_holder_name: "Test Creator",
            country: "US",
            currency: "USD",
            account_number: accountNumber,
            routing_number: "021000021",
          },
        });
        expect(m.status, JSON.stringify(m.body)).toBe(200);
        const key = randomUUID();
        const withdraw = () =>
          api.call("POST", "/api/payments/withdraw", {
            token: creator.token,
            body: { user_id: creator.id, amount: 20 },
            headers: { "idempotency-key": key },
          });
        const r = await withdraw();
        expect(r.status, JSON.stringify(r.body)).toBe(202);
        // The client retries the same withdrawal: no second "on its way".
        expect((await withdraw()).status).toBe(202);
        return { creator, id: r.body.payout.id as string };
      };
      const paid = await payout("000123456789");
      const failed = await payout("100000000003");
      const returned = await payout("100000000004");
      await waitFor(() => bySubject(paid.creator.email, /was paid/).length === 1, 20_000, "the paid email");
      await waitFor(() => bySubject(failed.creator.email, /failed/).length === 1, 20_000, "the failed email");
      await waitFor(
        () => bySubject(returned.creator.email, /was returned/).length === 1,
        20_000,
        "the returned email",
      );
      await settled();
      const subjects = (u: { email: string }) =>
        to(u.email)
          .map((r) => r.mail.subject)
          .filter((x) => !x?.startsWith("Welcome"))
          .sort();
      expect(subjects(paid.creator)).toEqual([
        "Your 3AM payout of 20.00 USD is on its way",
        "Your 3AM payout of 20.00 USD was paid",
      ]);
      expect(subjects(failed.creator)).toEqual([
        "Your 3AM payout of 20.00 USD failed",
        "Your 3AM payout of 20.00 USD is on its way",
      ]);
      expect(subjects(returned.creator)).toEqual([
        "Your 3AM payout of 20.00 USD is on its way",
        "Your 3AM payout of 20.00 USD was paid",
        "Your 3AM payout of 20.00 USD was returned",
      ]);
      const f = bySubject(failed.creator.email, /failed/)[0]!.mail;
      expect(f.text).toMatch(/Reason: \S/);
      expect(f.text).toContain(`Payout: ${failed.id}`);
    } finally {
      await worker.close();
    }
  });
});

describe("delivery", () => {
  it("retries while the SMTP server is down, and the email arrives once when it is back", async () => {
    const user = await api.register();
    await waitFor(() => to(user.email).length === 1, 10_000, "the welcome email");
    const port = smtp.port;
    const received = smtp.received;
    await smtp.close();
    const payoutId = randomUUID();
    const jobId = await enqueueEmail(queue(), {
      kind: "payout_paid",
      userId: user.id,
      payoutId,
      amountCents: 100,
    });
    await waitFor(
      async () => ((await queue().getJob(jobId))?.attemptsMade ?? 0) >= 2,
      10_000,
      "two failed attempts",
    );
    expect(bySubject(user.email, /paid/)).toHaveLength(0);
    smtp = await startSmtp(port, received);
    await waitFor(() => bySubject(user.email, /paid/).length === 1, 15_000, "the email after SMTP is back");
    await settled();
    expect(bySubject(user.email, /paid/)).toHaveLength(1);
    expect(await (await queue().getJob(jobId))?.getState()).toBe("completed");
  });

  it("retries a 4xx answer and sends once; a 5xx fails the job at once, unsent", async () => {
    const soft = await api.register();
    const hard = await api.register();
    await waitFor(() => to(soft.email).length + to(hard.email).length === 2, 10_000, "the welcome emails");
    smtp.rejects.set(soft.email, { code: 451, times: 2 });
    smtp.rejects.set(hard.email, { code: 550 });
    const softJob = await enqueueEmail(queue(), {
      kind: "payout_paid",
      userId: soft.id,
      payoutId: randomUUID(),
      amountCents: 100,
    });
    const hardJob = await enqueueEmail(queue(), {
      kind: "payout_paid",
      userId: hard.id,
      payoutId: randomUUID(),
      amountCents: 100,
    });
    await settled();
    expect(bySubject(soft.email, /paid/)).toHaveLength(1);
    const s = (await queue().getJob(softJob))!;
    expect(await s.getState()).toBe("completed");
    expect(s.attemptsMade).toBe(3);
    expect(bySubject(hard.email, /paid/)).toHaveLength(0);
    const h = (await queue().getJob(hardJob))!;
    expect(await h.getState()).toBe("failed");
    expect(h.attemptsMade).toBe(1);
    expect(h.failedReason).toMatch(/550/);
    expect((await queue().getJobCounts("failed")).failed).toBeGreaterThanOrEqual(1);
  });
});

describe("the queue unreachable", () => {
  it("does not fail a purchase; the webhook answers 503 until the receipt is enqueued, then it is sent once", async () => {
    const env2 = await createTestEnv("email_noqueue");
    const overrides = {
      STRIPE_SECRET_KEY: SECRET_KEY,
      STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
      STRIPE_API_URL: standin.url,
    };
    let a = await startApi(env2, overrides);
    const worker = createEmailWorker({
      config: env2.config({ SMTP_URL: `smtp://127.0.0.1:${smtp.port}` }),
      logger: silentLogger,
      pool: env2.pool,
    });
    try {
      const user = await a.register();
      await waitFor(() => to(user.email).length === 1, 10_000, "the welcome email");
      // The server's queue connection is gone (its Redis unreachable to it).
      standin.pauseWebhooks();
      standin.setWebhookUrl(`${a.base}/api/payments/webhook`);
      await a.http.emailQueue.disconnect();
      const r = await a.call("POST", "/api/payments/credits/purchase", {
        token: user.token,
        headers: { "idempotency-key": randomUUID() },
        body: { user_id: user.id, amount: 7, payment_method_id: "pm_card_visa" },
      });
      expect(r.status).toBe(201);
      expect(r.body.balance.balance).toBe("7.00");
      const pi = r.body.payment_intent_id as string;
      standin.resumeWebhooks();
      const eventOf = () =>
        standin.events().find((e) => e.type === "payment_intent.succeeded" && JSON.stringify(e).includes(pi));
      await waitFor(() => eventOf() !== undefined, 10_000, "Stripe's payment_intent.succeeded");
      const event = eventOf()!;
      await standin.flushWebhooks();
      const attempts = standin
        .deliveries()
        .filter((d) => d.eventId === event.id)
        .flatMap((d) => d.attempts.map((t) => t.status));
      expect(attempts.length).toBeGreaterThan(0);
      expect(attempts).toEqual(attempts.map(() => 503));
      const row = await env2.pool.query("SELECT processed_at FROM stripe_events WHERE id = $1", [event.id]);
      expect(row.rows).toEqual([{ processed_at: null }]);
      expect(bySubject(user.email, /receipt/)).toHaveLength(0);
      // A server with a working queue: Stripe's redelivery enqueues the receipt.
      standin.setWebhookUrl(null);
      await a.close();
      a = await startApi(env2, overrides);
      standin.setWebhookUrl(`${a.base}/api/payments/webhook`);
      standin.resendEvent(event.id);
      await standin.flushWebhooks();
      await waitFor(() => bySubject(user.email, /receipt/).length === 1, 10_000, "the receipt");
      expect(bySubject(user.email, /receipt/)[0]!.mail.text).toContain("Credits bought: 7.00 USD");
    } finally {
      standin.setWebhookUrl(`${api.base}/api/payments/webhook`);
      await worker.close();
      await a.close();
      await env2.cleanup();
    }
  });
});

describe("without SMTP_URL", () => {
  it("writes each email as an .eml file under MAIL_CATCHER_DIR", async () => {
    const dir = await mkdtemp(join(tmpdir(), "3am-mail-"));
    const config = env.config({ REDIS_PREFIX: `${env.redisPrefix}catcher:`, MAIL_CATCHER_DIR: dir });
    const q = createEmailQueue(config);
    const worker = createEmailWorker({ config, logger: silentLogger, pool: env.pool });
    try {
      const user = await api.register();
      await enqueueEmail(q.queue, {
        kind: "purchase_receipt",
        userId: user.id,
        paymentIntentId: "pi_catcher",
        amountCents: 2500,
        balanceCents: 2500,
      });
      await waitFor(async () => (await readdir(dir)).length === 1, 10_000, "the .eml file");
      const [file] = await readdir(dir);
      expect(file).toMatch(/^[0-9T-]+Z-receipt-pi_catcher\.eml$/);
      const mail = await simpleParser(await readFile(join(dir, file!)));
      expect(mail.subject).toBe("Your 3AM receipt: 25.00 USD of credits");
      expect(mail.text).toContain("Payment: pi_catcher");
      expect(mail.html).toContain("New balance: 25.00 USD");
    } finally {
      await worker.close();
      await q.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
