import { generateKeyPairSync } from "node:crypto";
import { describe, expect, it } from "vitest";
import { ConfigError, fraudLimits, loadConfig } from "../../src/config.ts";

describe("configuration", () => {
  it("runs on local defaults with an empty environment", () => {
    const c = loadConfig({});
    expect(c).toMatchObject({ PORT: 4000, SHARDS: 16, REDIS_URL: "redis://127.0.0.1:6379" });
    expect(fraudLimits(c)).toEqual({
      largeTxCents: 50_000,
      maxTxPerHour: 10,
      maxVolumePerHourCents: 100_000,
    });
  });

  it("spreads shards over processes only with a shared internal token, and never with a standby", () => {
    expect(() => loadConfig({ LEDGER_SPREAD: "true" })).toThrow(
      /INTERNAL_TOKEN .* is required with LEDGER_SPREAD/,
    );
    expect(() => loadConfig({ LEDGER_SPREAD: "true", INTERNAL_TOKEN: "short" })).toThrow(/INTERNAL_TOKEN/);
    const token = "a-shared-internal-token";
    expect(() =>
      loadConfig({ LEDGER_SPREAD: "true", INTERNAL_TOKEN: token, LEDGER_STANDBY: "true" }),
    ).toThrow(/exclude each other/);
    expect(() =>
      loadConfig({ LEDGER_SPREAD: "true", INTERNAL_TOKEN: token, INTERNAL_URL: "not a url" }),
    ).toThrow(/INTERNAL_URL/);
    expect(loadConfig({ LEDGER_SPREAD: "true", INTERNAL_TOKEN: token })).toMatchObject({
      LEDGER_SPREAD: true,
      INTERNAL_TOKEN: token,
    });
    expect(loadConfig({}).LEDGER_SPREAD).toBe(false);
  });

  it("names the variable in one error when a value is bad", () => {
    expect(() => loadConfig({ SHARDS: "zero" })).toThrow(ConfigError);
    expect(() => loadConfig({ SHARDS: "zero" })).toThrow(/SHARDS/);
    expect(() => loadConfig({ DATABASE_URL: "not a url" })).toThrow(/DATABASE_URL/);
    expect(() => loadConfig({ TIP_AMOUNTS_USD: "1,abc" })).toThrow(/TIP_AMOUNTS_USD/);
  });

  it("treats NAME= as unset, and refuses what production or Stripe cannot run without", () => {
    expect(
      loadConfig({ SUPABASE_JWT_SECRET: "", STRIPE_SECRET_KEY: "" }).SUPABASE_JWT_SECRET,
    ).toBeUndefined();
    const secret = "x".repeat(32);
    const wisePem = generateKeyPairSync("ec", { namedCurve: "P-256" })
      .publicKey.export({ type: "spki", format: "pem" })
      .toString();
    expect(() => loadConfig({ NODE_ENV: "production" })).toThrow(/SUPABASE_JWT_SECRET is required/);
    expect(() => loadConfig({ NODE_ENV: "production", SUPABASE_JWT_SECRET: secret })).toThrow(
      /STRIPE_SECRET_KEY is required/,
    );
    expect(() => loadConfig({ STRIPE_SECRET_KEY: "sk_test_abc" })).toThrow(
      /STRIPE_WEBHOOK_SECRET is required/,
    );
    expect(() => loadConfig({ STRIPE_SECRET_KEY: "pk_test_abc" })).toThrow(/STRIPE_SECRET_KEY/);
    expect(() => loadConfig({ PURCHASE_MIN_USD: "600" })).toThrow(/PURCHASE_MIN_USD/);
    expect(
      loadConfig({
        NODE_ENV: "production",
        SUPABASE_JWT_SECRET: secret,
        STRIPE_SECRET_KEY: "sk_live_abc",
        STRIPE_WEBHOOK_SECRET: "whsec_abcdefgh",
        WISE_API_KEY: "wise_live_key",
        WISE_PROFILE_ID: "12345",
        WISE_WEBHOOK_PUBLIC_KEY: wisePem,
        AIRWALLEX_CLIENT_ID: "client_1",
        AIRWALLEX_API_KEY: "awx_live_key",
        AIRWALLEX_WEBHOOK_SECRET: "awx_secret_1",
      }).STRIPE_SECRET_KEY,
    ).toBe("sk_live_abc");
    const production = {
      NODE_ENV: "production",
      SUPABASE_JWT_SECRET: secret,
      STRIPE_SECRET_KEY: "sk_live_abc",
      STRIPE_WEBHOOK_SECRET: "whsec_abcdefgh",
    };
    expect(() => loadConfig(production)).toThrow(/WISE_API_KEY and AIRWALLEX_API_KEY are required/);
    expect(() => loadConfig({ WISE_API_KEY: "wise_key_1" })).toThrow(
      /WISE_PROFILE_ID and WISE_WEBHOOK_PUBLIC_KEY/,
    );
    expect(() => loadConfig({ AIRWALLEX_API_KEY: "awx_key_1" })).toThrow(/required together/);
    expect(() =>
      loadConfig({
        WISE_API_KEY: "wise_key_1",
        WISE_PROFILE_ID: "1",
        WISE_WEBHOOK_PUBLIC_KEY: "-----BEGIN PUBLIC KEY-----\\nnot a key\\n-----END PUBLIC KEY-----",
      }),
    ).toThrow(/not a readable PEM/);
    expect(() => loadConfig({ PAYOUT_PROVIDER_TIMEOUT_MS: "999999" })).toThrow(/PAYOUT_PROVIDER_TIMEOUT_MS/);
  });

  it("keeps .env.example in step with the schema", async () => {
    const { readFileSync } = await import("node:fs");
    const { configSchema } = await import("../../src/config.ts");
    const example = readFileSync(new URL("../../.env.example", import.meta.url), "utf8");
    const listed = new Set([...example.matchAll(/^([A-Z_]+)=/gm)].map((m) => m[1]));
    expect([...Object.keys(configSchema.shape)].filter((k) => !listed.has(k))).toEqual([]);
  });
});
