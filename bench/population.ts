// Owns the bench's people: viewers (funded) and creators, their access tokens, and writing them
// straight into Postgres (registration hashes passwords on purpose slowly). The ledger database
// gets exactly what the ledger itself would have written for one deposit per viewer, so the
// books balance before the first tip and reconcile can judge the run.
import { createHmac, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import pg from "pg";
import { SYSTEM_ACCOUNT_KINDS, shardOf, systemAccountCode, systemAccountId } from "../src/ledger/accounts.ts";

export interface Person {
  id: string;
  username: string;
  token: string;
}

export interface Population {
  viewers: Person[];
  creators: Person[];
  depositCents: number;
}

/** Rows per seeding statement: large enough to be quick, small enough for one parameter array. */
const SEED_CHUNK = 20_000;

const b64url = (s: string) => Buffer.from(s).toString("base64url");
const JWT_HEADER = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));

/**
 * The Supabase-shaped token TokenService.issue signs (sub, email, role and aud "authenticated",
 * iat, exp; HS256), made with node:crypto because jose takes seconds for 100k of them.
 */
export function mintToken(secret: string, sub: string, email: string, nowS: number, ttlS: number): string {
  const payload = b64url(
    JSON.stringify({ email, role: "authenticated", sub, aud: "authenticated", iat: nowS, exp: nowS + ttlS }),
  );
  const sig = createHmac("sha256", secret).update(`${JWT_HEADER}.${payload}`).digest("base64url");
  return `${JWT_HEADER}.${payload}.${sig}`;
}

export const emailOf = (username: string) => `${username}@bench.test`;

export function makePopulation(
  viewers: number,
  creators: number,
  depositCents: number,
  jwtSecret: string,
  tokenTtlS: number,
): Population {
  const nowS = Math.floor(Date.now() / 1000);
  const person = (username: string): Person => {
    const id = randomUUID();
    return { id, username, token: mintToken(jwtSecret, id, emailOf(username), nowS, tokenTtlS) };
  };
  return {
    viewers: Array.from({ length: viewers }, (_, i) => person(`viewer_${i}`)),
    creators: Array.from({ length: creators }, (_, i) => person(`creator_${String(i).padStart(4, "0")}`)),
    depositCents,
  };
}

export function adminUrl(): string {
  return process.env.BENCH_PG_ADMIN_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
}

export function databaseUrl(name: string): string {
  const u = new URL(adminUrl());
  u.pathname = `/${name}`;
  return u.toString();
}

export async function dropDatabase(name: string): Promise<void> {
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  } finally {
    await admin.end();
  }
}

/** Drops what a previous run (or a crashed one) left under this name and creates it empty. */
export async function recreateDatabase(name: string): Promise<void> {
  await dropDatabase(name);
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
}

/**
 * Seeds the ledger database (already migrated) with what `ledger.submit({ kind: "deposit" })` per
 * viewer would have left once persisted: a completed purchase transaction keyed and hashed as the
 * ledger keys it, its two postings (the viewer's shard's stripe_clearing debited, the viewer
 * credited), the viewer at version 1 and each shard's clearing account at one version per deposit.
 */
export async function seedLedger(pool: pg.Pool, pop: Population, shards: number): Promise<void> {
  const at = new Date().toISOString();
  const dep = pop.depositCents;
  const perShard = new Array<number>(shards).fill(0);
  for (let i = 0; i < pop.viewers.length; i += SEED_CHUNK) {
    const chunk = pop.viewers.slice(i, i + SEED_CHUNK);
    const clearing = chunk.map((v) => {
      const s = shardOf(v.id, shards);
      perShard[s]!++;
      return systemAccountId("stripe_clearing", s);
    });
    await pool.query(
      `WITH v AS (
         SELECT t.id, t.username, t.clearing, gen_random_uuid() AS tx
           FROM unnest($1::uuid[], $2::text[], $3::uuid[]) AS t(id, username, clearing)
       ), u AS (
         INSERT INTO users (id, email, username, display_name, role, created_at, updated_at)
         SELECT id, username || '@bench.test', username, 'Bench viewer', 'viewer', $5, $5 FROM v
       ), l AS (
         INSERT INTO ledger (id, user_id, kind, balance_cents, version, created_at, updated_at)
         SELECT id, id, 'user', $4, 1, $5, $5 FROM v
       ), t AS (
         INSERT INTO transactions (id, type, status, account_id, from_user_id, to_user_id, amount_cents,
             platform_fee_cents, charity_fee_cents, net_amount_cents, currency, idempotency_key, request_hash,
             balance_after_cents, reserved_after_cents, debt_after_cents, metadata, created_at)
         SELECT tx, 'purchase', 'completed', id, NULL, id, $4, 0, 0, $4, 'USD', 'bench-deposit-' || id,
                'deposit|' || id || '|' || $4::text || '||', $4, 0, 0, '{}'::jsonb, $5 FROM v
       )
       INSERT INTO ledger_postings (transaction_id, account_id, amount_cents, created_at)
       SELECT tx, id, $4, $5 FROM v UNION ALL SELECT tx, clearing, -$4::bigint, $5 FROM v`,
      [chunk.map((v) => v.id), chunk.map((v) => v.username), clearing, dep, at],
    );
  }
  await pool.query(
    `INSERT INTO users (id, email, username, display_name, role)
     SELECT id, username || '@bench.test', username, 'Bench creator', 'creator'
       FROM unnest($1::uuid[], $2::text[]) AS t(id, username)`,
    [pop.creators.map((c) => c.id), pop.creators.map((c) => c.username)],
  );
  await pool.query(
    "INSERT INTO ledger (id, user_id, kind) SELECT id, id, 'user' FROM unnest($1::uuid[]) AS t(id)",
    [pop.creators.map((c) => c.id)],
  );
  // The per-shard system accounts, as ensureSystemAccounts makes them, with the deposits applied.
  const ids: string[] = [];
  const codes: string[] = [];
  const balances: number[] = [];
  const versions: number[] = [];
  for (let s = 0; s < shards; s++) {
    for (const kind of SYSTEM_ACCOUNT_KINDS) {
      ids.push(systemAccountId(kind, s));
      codes.push(systemAccountCode(kind, s));
      const n = kind === "stripe_clearing" ? perShard[s]! : 0;
      balances.push(-n * dep);
      versions.push(n);
    }
  }
  await pool.query(
    `INSERT INTO ledger (id, kind, code, balance_cents, version)
     SELECT id, 'system', code, bal, v FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[]) AS t(id, code, bal, v)`,
    [ids, codes, balances, versions],
  );
  // Fresh tables have no statistics; a production database would.
  await pool.query("ANALYZE");
}

export const PEER_SCHEMA = readFileSync(new URL("./peers/peer-schema.sql", import.meta.url), "utf8");

/** Seeds the peer's database (the seed brief's schema): the same people, each with one purchase. */
export async function seedPeer(pool: pg.Pool, pop: Population): Promise<void> {
  await pool.query(PEER_SCHEMA);
  const dollars = (pop.depositCents / 100).toFixed(2);
  for (let i = 0; i < pop.viewers.length; i += SEED_CHUNK) {
    const chunk = pop.viewers.slice(i, i + SEED_CHUNK);
    await pool.query(
      `WITH v AS (SELECT * FROM unnest($1::uuid[], $2::text[]) AS t(id, username)),
       u AS (
         INSERT INTO users (id, email, username, display_name, role)
         SELECT id, username || '@bench.test', username, 'Bench viewer', 'viewer' FROM v
       ), l AS (
         INSERT INTO ledger (user_id, balance) SELECT id, $3::numeric FROM v
       )
       INSERT INTO transactions (to_user_id, amount, net_amount, type, status, stripe_payment_id)
       SELECT id, $3::numeric, $3::numeric, 'purchase', 'completed', 'pi_bench_' || id FROM v`,
      [chunk.map((v) => v.id), chunk.map((v) => v.username), dollars],
    );
  }
  await pool.query(
    `WITH c AS (SELECT * FROM unnest($1::uuid[], $2::text[]) AS t(id, username)),
     u AS (
       INSERT INTO users (id, email, username, display_name, role)
       SELECT id, username || '@bench.test', username, 'Bench creator', 'creator' FROM c
     )
     INSERT INTO ledger (user_id) SELECT id FROM c`,
    [pop.creators.map((c) => c.id), pop.creators.map((c) => c.username)],
  );
  await pool.query("ANALYZE");
}
