// The processes' internal endpoints (LEDGER_SPREAD): refused without the shared token (401, in
// constant time), malformed calls answered 400 without moving money, a shard the process does not
// own answered `not_owner` (409) and never sent on, and none of it takes the process down.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { shardOf } from "../../src/ledger/accounts.ts";
import { type Api, startApi } from "../helpers/api.ts";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";
import { createUsers } from "../helpers/ledger.ts";

let env: TestEnv;
const apis: Api[] = [];
const TOKEN = "internal-routes-test-token";
const SHARDS = 4;

beforeAll(async () => {
  env = await createTestEnv("internal_routes");
  const vars = {
    SHARDS: String(SHARDS),
    LEDGER_SPREAD: "true",
    INTERNAL_TOKEN: TOKEN,
    LEDGER_LEASE_MS: "1500",
  };
  apis.push(await startApi(env, vars));
  apis.push(await startApi(env, vars));
  await waitFor(
    () => apis.every((a) => a.core.ledger.ownedShards().length === SHARDS / 2),
    30_000,
    "two processes to share the shards",
  );
});
afterAll(async () => {
  for (const a of apis.reverse()) await a.close().catch(() => {});
  await env.cleanup();
});

const post = async (base: string, path: string, body: string, token?: string) => {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token !== undefined) headers["x-internal-token"] = token;
  const r = await fetch(base + path, { method: "POST", headers, body });
  return {
    status: r.status,
    body: (await r.json()) as {
      ok?: unknown;
      error?: { code: string };
      results?: Array<{ ok?: unknown; error?: { code: string } }>;
    },
  };
};

describe("internal endpoints", () => {
  it("refuses calls without the token, malformed calls and other processes' shards", async () => {
    const [a, b] = apis as [Api, Api];
    const [user] = await createUsers(env.pool, 4);
    const owner = a.core.ledger.owns(shardOf(user!, SHARDS)) ? a : b;
    const other = owner === a ? b : a;
    const account = JSON.stringify({ calls: [{ op: "account", accountId: user }] });

    for (const token of [undefined, "", "wrong-token-wrong-token", `${TOKEN}x`]) {
      for (const path of ["/internal/ledger", "/internal/credits"]) {
        const r = await post(owner.base, path, account, token);
        expect(r.status, `${path} with ${JSON.stringify(token)}`).toBe(401);
      }
    }
    for (const body of [
      "{",
      "[]",
      '{"op":"nope"}',
      '{"calls":[]}',
      '{"calls":{"op":"account"}}',
      '{"credits":[]}',
      '{"credits":[{"accountId":"x"}]}',
    ]) {
      const path = body.includes("credits") ? "/internal/credits" : "/internal/ledger";
      const r = await post(owner.base, path, body, TOKEN);
      expect(r.status, `${path} ${body}`).toBe(400);
    }
    // A credit is taken only by the owner of the recipient's shard: another process answers
    // not_owner and credits nothing.
    const credit = JSON.stringify({
      credits: [{ accountId: user, txId: randomUUID(), amountCents: 100, atMs: Date.now() }],
    });
    expect((await post(other.base, "/internal/credits", credit, TOKEN)).body.error?.code).toBe("not_owner");
    // In a batch each call is answered on its own: a malformed one, another's shard, and one the
    // process owns.
    const batch = JSON.stringify({
      calls: [{ op: "submit" }, { op: "account", accountId: user }, { op: "nope" }],
    });
    const read = await post(other.base, "/internal/ledger", batch, TOKEN);
    expect(read.status).toBe(200);
    expect(read.body.results?.map((r) => r.error?.code)).toEqual([
      "validation_error",
      "not_owner",
      "validation_error",
    ]);
    // The owner answers the same read.
    const mine = await post(owner.base, "/internal/ledger", account, TOKEN);
    expect(mine.status).toBe(200);
    expect(mine.body.results?.[0]?.ok).toMatchObject({ id: user, balanceCents: 0 });
    // A read through the other process is forwarded, and /metrics counts it.
    expect((await other.core.ledger.getAccount(user!)).balanceCents).toBe(0);
    const text = await (await fetch(`${other.base}/metrics`)).text();
    const forwarded = /^threeam_peer_calls_total\{kind="forwarded"\} (\d+)$/m.exec(text);
    expect(Number(forwarded?.[1])).toBeGreaterThanOrEqual(1);
    expect(text).toMatch(/^threeam_shards_owned 2$/m);
    // Still serving, both.
    for (const p of apis) expect((await fetch(`${p.base}/readyz`)).status).toBe(200);
  });
});
