// The WebSocket upgrade's two paths, against the server as a child process (its stderr read):
// a token seen for the first time is verified asynchronously and upgraded outside res.cork (uWS.js
// warns on stderr for such an upgrade); a token verified before upgrades at once in uWS's own
// handler, with no warning, and its address's budget is charged once the socket is open: past it
// the socket is closed with 4029, and an address known to be past it is refused with 429.
import type { ChildProcess } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestEnv, type TestEnv, waitFor } from "../helpers/env.ts";
import { connectLive } from "../helpers/live.ts";
import { fundedViewersAndCreator, liveChildVars, startLiveChild } from "../helpers/live-server.ts";

const UNCORKED_WARNING = "writes must be made from within a corked callback";
const IP_BUDGET = 6;
/** The first test's connections: each spends one request of the address's budget. */
const FIRST_TEST_CONNECTIONS = 4;

let env: TestEnv;
let child: ChildProcess;
let base: string;
let stderr = "";
let viewerTokens: string[];

const warnings = () => stderr.split(UNCORKED_WARNING).length - 1;

beforeAll(async () => {
  env = await createTestEnv("liveupgrade");
  const vars = liveChildVars(env, {
    RATE_LIMIT_IP_PER_MIN: String(IP_BUDGET),
    RATE_LIMIT_USER_PER_MIN: "1000",
  });
  ({ viewerTokens } = await fundedViewersAndCreator(env, vars, 2));
  const started = await startLiveChild(vars, "pipe");
  child = started.child;
  child.stderr!.on("data", (d) => {
    stderr += d.toString();
  });
  base = `http://127.0.0.1:${started.port}`;
});
afterAll(async () => {
  child?.kill("SIGKILL");
  await env?.cleanup();
});

describe("upgrade paths", () => {
  it("upgrades a token verified before in uWS's handler, with no uncorked write", async () => {
    const t = viewerTokens[0]!;
    const a = await connectLive(base, `access_token=${t}`);
    // The first connection verified the token asynchronously: one uncorked upgrade.
    await waitFor(() => warnings() === 1, 10_000, "the uncorked upgrade's warning");
    await a.close();
    for (let i = 0; i < 3; i++) {
      const b = await connectLive(base, `access_token=${t}`);
      expect(b.frames[0]).toMatchObject({ op: "welcome", read_only: false });
      await b.close();
    }
    expect(warnings()).toBe(1);
  });

  it("charges the address's budget after the open: 4029 past it, then 429 at the upgrade", async () => {
    // The budget counts every request of the address in its minute (the connections above too).
    // Sockets are kept open; one opened past the budget is closed once its charge is refused,
    // and once the server knows the address is past it, the upgrade itself answers 429.
    const t = viewerTokens[1]!;
    const open: Awaited<ReturnType<typeof connectLive>>[] = [];
    let refused: { status?: number } | null = null;
    for (let i = 0; i < 3 * IP_BUDGET && refused === null; i++) {
      try {
        open.push(await connectLive(base, `access_token=${t}`));
      } catch (err) {
        refused = err as { status?: number };
      }
    }
    expect(refused).toMatchObject({ status: 429 });
    const within = open.slice(0, IP_BUDGET - FIRST_TEST_CONNECTIONS);
    const past = open.slice(IP_BUDGET - FIRST_TEST_CONNECTIONS);
    await waitFor(() => past.every((c) => c.closed !== null), 10_000, "the sockets past the budget to close");
    expect(within.every((c) => c.closed === null)).toBe(true);
    for (const c of past) expect(c.closed).toEqual({ code: 4029, reason: "too many requests; slow down" });
    expect(past.length).toBeGreaterThanOrEqual(1);
    for (const c of within) await c.close();
  });
});
