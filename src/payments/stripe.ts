// Owns the Stripe client: the official SDK with the configured key, or, when no key is
// configured, the same SDK pointed at the local Stripe stand-in started in this process (and a
// loud log line that no real money moves). The stand-in is imported only then, dynamically, so a
// configured deployment never loads it.
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import Stripe from "stripe";
import type { Config } from "../config.ts";

export interface StripeSetup {
  stripe: Stripe;
  webhookSecret: string;
  /** Set when the in-process stand-in is used: where it should deliver webhook events. */
  setWebhookUrl(url: string): void;
  close(): Promise<void>;
}

/** The SDK pointed at `apiUrl` through its normal host/port/protocol options. */
export function stripeClient(secretKey: string, apiUrl?: string): Stripe {
  const u = apiUrl ? new URL(apiUrl) : null;
  return new Stripe(secretKey, {
    maxNetworkRetries: 2,
    timeout: 20_000,
    ...(u
      ? {
          host: u.hostname,
          port: Number(u.port || (u.protocol === "https:" ? 443 : 80)),
          protocol: u.protocol === "https:" ? "https" : "http",
        }
      : {}),
  });
}

export async function setUpStripe(config: Config, logger: Logger): Promise<StripeSetup> {
  if (config.STRIPE_SECRET_KEY) {
    if (config.STRIPE_API_URL)
      logger.warn({ url: config.STRIPE_API_URL }, "Stripe requests go to STRIPE_API_URL");
    return {
      stripe: stripeClient(config.STRIPE_SECRET_KEY, config.STRIPE_API_URL),
      webhookSecret: config.STRIPE_WEBHOOK_SECRET!,
      setWebhookUrl: () => {},
      close: async () => {},
    };
  }
  const webhookSecret = config.STRIPE_WEBHOOK_SECRET ?? `whsec_standin_${randomBytes(16).toString("hex")}`;
  // biome-ignore lint/style/noRestrictedImports: the one dynamic load of the stand-in, only without a key
  const { startStripeStandin } = await import("../standins/stripe-standin.ts");
  const standin = await startStripeStandin({
    port: config.STRIPE_STANDIN_PORT,
    host: "127.0.0.1",
    webhookSecret,
    log: logger.child({ component: "stripe-standin" }),
  });
  logger.warn(
    { url: standin.url },
    "STRIPE_SECRET_KEY is not set: payments go to the LOCAL STRIPE STAND-IN; NO REAL MONEY MOVES",
  );
  return {
    stripe: stripeClient("sk_test_local_standin", standin.url),
    webhookSecret,
    setWebhookUrl: (url) => standin.setWebhookUrl(url),
    close: () => standin.close(),
  };
}
