// Owns the payout providers a process uses: the Wise and Airwallex clients with the configured
// keys, or, for a provider with no key, the same client pointed at its local stand-in started in
// this process (loaded dynamically, only then) with a loud log line that no real money moves.
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { Config } from "../config.ts";
import { AirwallexClient } from "./airwallex.ts";
import type { PayoutProvider, PayoutProviderName } from "./provider.ts";
import type { PayoutWebhookConfig } from "./webhooks.ts";
import { WiseClient } from "./wise.ts";

export interface PayoutProvidersSetup {
  providers: Record<PayoutProviderName, PayoutProvider>;
  /** What verifyWiseWebhook / verifyAirwallexWebhook need (the stand-ins' keys when they run). */
  webhooks: PayoutWebhookConfig;
  /** Providers served by a local stand-in in this process (no real money moves through them). */
  standins: PayoutProviderName[];
  /** The stand-ins' base URLs (their test-only GET /__standin/payouts/{payoutId} counts transfers). */
  standinUrls: Partial<Record<PayoutProviderName, string>>;
  /** The Wise stand-in's webhook signer (X-Signature-SHA256 for a body), for tests. */
  standinWiseSign: ((body: string) => string) | null;
  /** Where a stand-in delivers its webhooks (ignored for a real provider: set it in its dashboard). */
  setWebhookUrl(provider: PayoutProviderName, url: string | null): void;
  close(): Promise<void>;
}

const NO_MONEY = "NO REAL MONEY MOVES";

/** Starts on `port`, or on a free port when it is taken (two instances on one machine). */
async function onPort<T>(
  port: number,
  start: (port: number) => Promise<T>,
  logger: Logger,
  what: string,
): Promise<T> {
  try {
    return await start(port);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EADDRINUSE" || port === 0) throw err;
    logger.warn({ port }, `${what} port is taken: using a free port`);
    return start(0);
  }
}

export async function setUpPayoutProviders(config: Config, logger: Logger): Promise<PayoutProvidersSetup> {
  const timeoutMs = config.PAYOUT_PROVIDER_TIMEOUT_MS;
  const closers: (() => Promise<void>)[] = [];
  const urlSetters: Partial<Record<PayoutProviderName, (url: string | null) => void>> = {};
  const standins: PayoutProviderName[] = [];
  const standinUrls: Partial<Record<PayoutProviderName, string>> = {};
  let standinWiseSign: ((body: string) => string) | null = null;
  try {
    let wise: PayoutProvider;
    let wisePublicKeyPem: string;
    if (config.WISE_API_KEY) {
      wise = new WiseClient({
        apiKey: config.WISE_API_KEY,
        profileId: config.WISE_PROFILE_ID!,
        apiUrl: config.WISE_API_URL,
        timeoutMs,
      });
      wisePublicKeyPem = config.WISE_WEBHOOK_PUBLIC_KEY!;
      if (config.WISE_API_URL !== "https://api.wise.com") {
        logger.warn({ url: config.WISE_API_URL }, "Wise requests go to WISE_API_URL");
      }
    } else {
      // biome-ignore lint/style/noRestrictedImports: the one dynamic load of the stand-in, only without a key
      const { startWiseStandin } = await import("../standins/wise-standin.ts");
      const apiKey = `standin_${randomBytes(16).toString("hex")}`;
      const profileId = "1000001";
      const standin = await onPort(
        config.WISE_STANDIN_PORT,
        (port) =>
          startWiseStandin({
            port,
            host: "127.0.0.1",
            apiKey,
            profileId,
            delayMs: config.PAYOUT_STANDIN_DELAY_MS,
            log: logger.child({ component: "wise-standin" }),
          }),
        logger,
        "WISE_STANDIN_PORT",
      );
      closers.push(() => standin.close());
      urlSetters.wise = (url) => standin.setWebhookUrl(url);
      standins.push("wise");
      standinUrls.wise = standin.url;
      standinWiseSign = (body) => standin.signPayload(body);
      wise = new WiseClient({ apiKey, profileId, apiUrl: standin.url, timeoutMs });
      wisePublicKeyPem = standin.publicKeyPem;
      logger.warn(
        { url: standin.url },
        `WISE_API_KEY is not set: Wise payouts go to the LOCAL WISE STAND-IN; ${NO_MONEY}`,
      );
    }

    let airwallex: PayoutProvider;
    let airwallexSecret: string;
    if (config.AIRWALLEX_API_KEY) {
      airwallex = new AirwallexClient({
        clientId: config.AIRWALLEX_CLIENT_ID!,
        apiKey: config.AIRWALLEX_API_KEY,
        apiUrl: config.AIRWALLEX_API_URL,
        timeoutMs,
      });
      airwallexSecret = config.AIRWALLEX_WEBHOOK_SECRET!;
      if (config.AIRWALLEX_API_URL !== "https://api.airwallex.com") {
        logger.warn({ url: config.AIRWALLEX_API_URL }, "Airwallex requests go to AIRWALLEX_API_URL");
      }
    } else {
      // biome-ignore lint/style/noRestrictedImports: the one dynamic load of the stand-in, only without a key
      const { startAirwallexStandin } = await import("../standins/airwallex-standin.ts");
      const clientId = `standin_${randomBytes(8).toString("hex")}`;
      const apiKey = randomBytes(24).toString("hex");
      airwallexSecret = config.AIRWALLEX_WEBHOOK_SECRET ?? `awx_standin_${randomBytes(16).toString("hex")}`;
      const secret = airwallexSecret;
      const standin = await onPort(
        config.AIRWALLEX_STANDIN_PORT,
        (port) =>
          startAirwallexStandin({
            port,
            host: "127.0.0.1",
            clientId,
            apiKey,
            webhookSecret: secret,
            delayMs: config.PAYOUT_STANDIN_DELAY_MS,
            log: logger.child({ component: "airwallex-standin" }),
          }),
        logger,
        "AIRWALLEX_STANDIN_PORT",
      );
      closers.push(() => standin.close());
      urlSetters.airwallex = (url) => standin.setWebhookUrl(url);
      standins.push("airwallex");
      standinUrls.airwallex = standin.url;
      airwallex = new AirwallexClient({ clientId, apiKey, apiUrl: standin.url, timeoutMs });
      logger.warn(
        { url: standin.url },
        `AIRWALLEX_API_KEY is not set: Airwallex payouts go to the LOCAL AIRWALLEX STAND-IN; ${NO_MONEY}`,
      );
    }

    return {
      providers: { wise, airwallex },
      webhooks: { wisePublicKeyPem, airwallexSecret, toleranceMs: config.PAYOUT_WEBHOOK_TOLERANCE_MS },
      standins,
      standinUrls,
      standinWiseSign,
      setWebhookUrl: (provider, url) => urlSetters[provider]?.(url),
      close: async () => {
        await Promise.all(closers.map((c) => c()));
      },
    };
  } catch (err) {
    await Promise.allSettled(closers.map((c) => c()));
    throw err;
  }
}
