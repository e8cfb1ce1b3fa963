// A tip's sender as its creator's feed names it: learned when the sender's account was loaded (its
// first command), so the feed asks Postgres nothing more for it; and renamed at once when the user
// changes their display name (a remembered name is forgotten by the rename, never served stale).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Api, startApi } from "../helpers/api.ts";
import { createTestEnv, type TestEnv } from "../helpers/env.ts";
import { tipsToFollowedCreator } from "../helpers/live.ts";

let env: TestEnv;
let api: Api;

beforeAll(async () => {
  env = await createTestEnv("feed_names");
  api = await startApi(env);
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

/** Counts the lookups of users' names by id on the core's pool (the feed's and the loads'). */
function countNameLookups() {
  const pool = api.core.pool;
  const query = pool.query.bind(pool);
  const counter = { n: 0 };
  pool.query = ((...args: Parameters<typeof pool.query>) => {
    const text = typeof args[0] === "string" ? args[0] : (args[0] as { text?: string }).text;
    if (text?.includes("display_name FROM users WHERE id = ANY")) counter.n++;
    return (query as (...a: unknown[]) => unknown)(...args);
  }) as typeof pool.query;
  return { counter, restore: () => (pool.query = query) };
}

describe("senders' names in the live feed", () => {
  it("names a loaded sender without asking Postgres, and shows a rename at once", async () => {
    const scene = await tipsToFollowedCreator(api);
    const { viewer, creator, sub } = scene;
    // Both accounts in memory (their loads read their names), as any command before a tip does.
    for (const u of [viewer, creator]) {
      expect((await api.call("GET", `/api/payments/balance/${u.id}`, { token: u.token })).status).toBe(200);
    }
    const tip = async () => {
      await scene.tip();
      return (await sub.next((f) => f.op === "tip")).tip;
    };

    const spy = countNameLookups();
    try {
      const first = await tip();
      expect(first).toMatchObject({
        from_username: viewer.username,
        from_display_name: expect.stringMatching(/^User /),
      });
      expect(spy.counter.n).toBe(0);

      const renamed = await api.call("PUT", `/api/users/${viewer.id}`, {
        token: viewer.token,
        body: { display_name: "Renamed Viewer" },
      });
      expect(renamed.status).toBe(200);
      expect(await tip()).toMatchObject({
        from_username: viewer.username,
        from_display_name: "Renamed Viewer",
      });
      expect(spy.counter.n).toBe(1); // read once after the rename, then remembered again
      expect(await tip()).toMatchObject({ from_display_name: "Renamed Viewer" });
      expect(spy.counter.n).toBe(1);
    } finally {
      spy.restore();
      await sub.close();
    }
  });
});
