// A started core plus HTTP server on a random port, and small helpers to call it.
import { randomUUID } from "node:crypto";
import type { Core } from "../../src/main/core.ts";
import { createHttpServer, type HttpServer } from "../../src/main/http-app.ts";
import { type StripeSetup, setUpStripe } from "../../src/payments/stripe.ts";
import { type PayoutProvidersSetup, setUpPayoutProviders } from "../../src/payouts/setup.ts";
import type { TestEnv } from "./env.ts";
import { silentLogger, startTestCore } from "./ledger.ts";

export interface Api {
  core: Core;
  http: HttpServer;
  stripe: StripeSetup;
  /** Wise and Airwallex: their local stand-ins on free ports (no keys configured in tests). */
  payouts: PayoutProvidersSetup;
  base: string;
  call(
    method: string,
    path: string,
    opts?: CallOptions,
  ): Promise<{ status: number; body: any; headers: Headers }>;
  register(
    role?: "viewer" | "creator",
  ): Promise<{ id: string; token: string; username: string; email: string }>;
  fund(userId: string, cents: number): Promise<void>;
  close(): Promise<void>;
}

export interface CallOptions {
  token?: string;
  body?: unknown;
  raw?: string;
  headers?: Record<string, string>;
}

export const TEST_JWT_SECRET = "test-secret-test-secret-test-secret-0123456789";

export async function startApi(env: TestEnv, overrides: Record<string, string> = {}): Promise<Api> {
  const core = await startTestCore(env, {
    RATE_LIMIT_IP_PER_MIN: "0",
    RATE_LIMIT_USER_PER_MIN: "0",
    SUPABASE_JWT_SECRET: TEST_JWT_SECRET,
    STRIPE_STANDIN_PORT: "0",
    WISE_STANDIN_PORT: "0",
    AIRWALLEX_STANDIN_PORT: "0",
    PAYOUT_STANDIN_DELAY_MS: "100",
    PASSWORD_HASH_THREADS: "1",
    ...overrides,
  });
  // Without a STRIPE_SECRET_KEY override, the in-process Stripe stand-in on a free port.
  const stripe = await setUpStripe(core.config, silentLogger);
  const payouts = await setUpPayoutProviders(core.config, silentLogger);
  const http = createHttpServer({
    config: core.config,
    logger: silentLogger,
    core,
    stripe,
    payoutProviders: payouts.providers,
    payoutWebhooks: payouts.webhooks,
  });
  const port = await http.listen(0, "127.0.0.1");
  const base = `http://127.0.0.1:${port}`;
  stripe.setWebhookUrl(`${base}/api/payments/webhook`);
  for (const p of payouts.standins) payouts.setWebhookUrl(p, `${base}/api/payments/webhooks/${p}`);
  const call: Api["call"] = async (method, path, opts = {}) => {
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    let body: string | undefined;
    if (opts.raw !== undefined) body = opts.raw;
    else if (opts.body !== undefined) body = JSON.stringify(opts.body);
    if (body !== undefined && !headers["content-type"]) headers["content-type"] = "application/json";
    const r = await fetch(base + path, { method, headers, ...(body !== undefined ? { body } : {}) });
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) : null, headers: r.headers };
  };
  let n = 0;
  return {
    core,
    http,
    stripe,
    payouts,
    base,
    call,
    async register(role = "viewer") {
      const tag = `${randomUUID().slice(0, 8)}${n++}`;
      const username = `u_${tag}`;
      const email = `${username}@example.test`;
      const r = await call("POST", "/api/users/register", {
        body: { email, username, display_name: `User ${tag}`, password: "securepass123", role },
      });
      if (r.status !== 201) throw new Error(`register failed: ${r.status} ${JSON.stringify(r.body)}`);
      return { id: r.body.user.id, token: r.body.session.access_token, username, email };
    },
    async fund(userId, cents) {
      await core.ledger.submit({ kind: "deposit", key: randomUUID(), accountId: userId, amountCents: cents });
    },
    async close() {
      await http.close();
      await stripe.close();
      await payouts.close();
      await core.stop();
    },
  };
}
