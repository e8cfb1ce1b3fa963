// The server as a child process (tests/helpers/live-child.ts) for the live tests that kill and
// restart it: the environment it runs with, and starting it until it says which port it listens on.
import { type ChildProcess, spawn } from "node:child_process";
import { appendFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { TokenService } from "../../src/auth/tokens.ts";
import { startCore } from "../../src/main/core.ts";
import { TEST_JWT_SECRET } from "./api.ts";
import { type TestEnv, waitFor } from "./env.ts";
import { createUsers, key, settle, silentLogger } from "./ledger.ts";

/** The test file's configuration as environment variables, plus `extra`. */
export function liveChildVars(env: TestEnv, extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...Object.fromEntries(Object.entries(env.config()).map(([k, v]) => [k, String(v)])),
    NODE_ENV: "test",
    DATABASE_URL: env.databaseUrl,
    REDIS_PREFIX: env.redisPrefix,
    // TEST_CHILD_LOG (a file) and TEST_CHILD_LOG_LEVEL: the children's logs, for a failing run.
    LOG_LEVEL: process.env.TEST_CHILD_LOG ? (process.env.TEST_CHILD_LOG_LEVEL ?? "info") : "silent",
    SHARDS: "8",
    LEDGER_LEASE_MS: "300",
    SUPABASE_JWT_SECRET: TEST_JWT_SECRET,
    RATE_LIMIT_IP_PER_MIN: "0",
    RATE_LIMIT_USER_PER_MIN: "0",
    STRIPE_STANDIN_PORT: "0",
    PASSWORD_HASH_THREADS: "1",
    ...extra,
  };
}

/** Starts the server child with `vars` and resolves once it prints the port it listens on. */
export async function startLiveChild(
  vars: Record<string, string>,
  stderr: "inherit" | "pipe" = "inherit",
): Promise<{ child: ChildProcess; port: number }> {
  const { child, port } = spawnLiveChild(vars, 60_000, stderr);
  return { child, port: await port };
}

/**
 * Spawns the server child; `port` resolves once it listens, which a standby
 * (LEDGER_STANDBY=true) does only after it took the ledger over.
 */
export function spawnLiveChild(
  vars: Record<string, string>,
  timeoutMs = 60_000,
  stderr: "inherit" | "pipe" = "inherit",
): { child: ChildProcess; port: Promise<number> } {
  const child = spawn(process.execPath, ["--import", "tsx", "tests/helpers/live-child.ts"], {
    env: { ...process.env, ...vars },
    stdio: ["ignore", "pipe", stderr],
  });
  let port = 0;
  const logFile = process.env.TEST_CHILD_LOG;
  createInterface({ input: child.stdout! }).on("line", (line) => {
    const m = /^PORT (\d+)$/.exec(line);
    if (m) port = Number(m[1]);
    // What else a child prints (its persister thread's log) joins its log file, when asked for.
    else if (logFile) appendFileSync(logFile, `${line}\n`);
  });
  const listening = waitFor(() => port > 0, timeoutMs, "the server child to listen").then(() => port);
  listening.catch(() => {}); // awaited by the caller; a standby never killed may never listen
  return { child, port: listening };
}

/**
 * `n` viewers with $100,000 each and one creator, made straight in Postgres and deposited through a
 * core started with `vars` (then stopped), with session tokens for the server children.
 */
export async function fundedViewersAndCreator(env: TestEnv, vars: Record<string, string>, n: number) {
  const viewers = await createUsers(env.pool, n);
  const [creator] = await createUsers(env.pool, 1, "cr");
  await env.pool.query("UPDATE users SET role = 'creator' WHERE id = $1", [creator]);
  const creatorName = (await env.pool.query("SELECT username FROM users WHERE id = $1", [creator])).rows[0]
    .username as string;
  const setup = await startCore(env.config(vars), silentLogger);
  for (const v of viewers) {
    await setup.ledger.submit({ kind: "deposit", key: key(), accountId: v, amountCents: 10_000_000 });
  }
  await settle(setup);
  await setup.stop();
  const tokens = new TokenService({ secret: TEST_JWT_SECRET, expiresInS: 3600 });
  const viewerTokens = await Promise.all(
    viewers.map(async (id) => (await tokens.issue({ id, email: `${id}@x.test` })).access_token),
  );
  const creatorToken = (await tokens.issue({ id: creator!, email: "c@x.test" })).access_token;
  return { viewers, creator: creator!, creatorName, viewerTokens, creatorToken };
}
