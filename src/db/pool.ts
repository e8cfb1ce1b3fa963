// Owns the Postgres connection: a pool for the URL, and creating the database on first start so
// `npm start` works on a fresh machine.
import pg from "pg";

// bigint columns hold cents and versions; they stay far below 2^53, so read them as numbers.
pg.types.setTypeParser(20, (v) => Number(v));

/** Bounds on how long anything may wait for Postgres; unset, a wait is unbounded. */
export interface PoolLimits {
  /** Giving up on a new connection (a black-holed network never answers the handshake). */
  connectTimeoutMs?: number;
  /** Server-side statement_timeout, and a client-side wait a second longer for a lost answer. */
  statementTimeoutMs?: number;
  /** Server-side: a transaction left idle this long is ended, its locks released. */
  idleInTransactionTimeoutMs?: number;
}

export function createPool(url: string, max = 10, limits: PoolLimits = {}): pg.Pool {
  return new pg.Pool({
    connectionString: url,
    max,
    keepAlive: true,
    ...(limits.connectTimeoutMs ? { connectionTimeoutMillis: limits.connectTimeoutMs } : {}),
    ...(limits.statementTimeoutMs
      ? { statement_timeout: limits.statementTimeoutMs, query_timeout: limits.statementTimeoutMs + 1000 }
      : {}),
    ...(limits.idleInTransactionTimeoutMs
      ? { idle_in_transaction_session_timeout: limits.idleInTransactionTimeoutMs }
      : {}),
  });
}

/** Creates the database named in `url` if it does not exist (connects to `postgres` to do it). */
export async function ensureDatabase(url: string): Promise<void> {
  const target = new URL(url);
  const name = decodeURIComponent(target.pathname.slice(1));
  if (!name) return;
  const admin = new URL(url);
  admin.pathname = "/postgres";
  const client = new pg.Client({ connectionString: admin.toString() });
  await client.connect();
  try {
    const exists = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
    if (exists.rowCount === 0) {
      await client.query(`CREATE DATABASE "${name.replace(/"/g, '""')}"`).catch((err: { code?: string }) => {
        if (err.code !== "42P04") throw err; // created meanwhile by another process
      });
    }
  } finally {
    await client.end();
  }
}

/**
 * Runs `fn` with a checked-out client. A connection that dies while checked out emits 'error' on
 * the client, which the pool only listens to while the client is idle: without this listener a
 * Postgres restart would crash the process instead of failing the query in flight.
 */
export async function withClient<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  const onError = (err: Error) => {
    broken = err;
  };
  client.on("error", onError);
  try {
    return await fn(client);
  } finally {
    client.off("error", onError);
    client.release(broken);
  }
}
