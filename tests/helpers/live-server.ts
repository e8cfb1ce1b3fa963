// The server as a child process (tests/helpers/live-child.ts) for the live tests that kill and
// restart it: the environment it runs with, and starting it until it says which port it listens on.
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { TEST_JWT_SECRET } from "./api.ts";
import { type TestEnv, waitFor } from "./env.ts";

/** The test file's configuration as environment variables, plus `extra`. */
export function liveChildVars(env: TestEnv, extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...Object.fromEntries(Object.entries(env.config()).map(([k, v]) => [k, String(v)])),
    NODE_ENV: "test",
    DATABASE_URL: env.databaseUrl,
    REDIS_PREFIX: env.redisPrefix,
    LOG_LEVEL: "silent",
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
): Promise<{ child: ChildProcess; port: number }> {
  const { child, port } = spawnLiveChild(vars);
  return { child, port: await port };
}

/**
 * Spawns the server child; `port` resolves once it listens, which a standby
 * (LEDGER_STANDBY=true) does only after it took the ledger over.
 */
export function spawnLiveChild(
  vars: Record<string, string>,
  timeoutMs = 60_000,
): { child: ChildProcess; port: Promise<number> } {
  const child = spawn(process.execPath, ["--import", "tsx", "tests/helpers/live-child.ts"], {
    env: { ...process.env, ...vars },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let port = 0;
  createInterface({ input: child.stdout! }).on("line", (line) => {
    const m = /^PORT (\d+)$/.exec(line);
    if (m) port = Number(m[1]);
  });
  const listening = waitFor(() => port > 0, timeoutMs, "the server child to listen").then(() => port);
  listening.catch(() => {}); // awaited by the caller; a standby never killed may never listen
  return { child, port: listening };
}
