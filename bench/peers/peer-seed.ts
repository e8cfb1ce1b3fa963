// The seed brief's architecture, as a peer to measure ours against: Express + pg, and one database
// transaction per tip with optimistic locking on the ledger row's version (read balance and version,
// update where the version still matches, start over on a conflict). Same API shape, same JWTs,
// same fraud rules, against the same Postgres. Run by `npm run bench` as a child process.
//
// Faithful to the seed on purpose, not tuned: pg's default pool (10; the seed lists "no database
// connection pooling tuning"), a fresh token verification per request (jose; the seed calls Supabase
// Auth over the network, so this is the generous side), fraud checks read from Postgres.
import express, { type NextFunction, type Request, type Response } from "express";
import { jwtVerify } from "jose";
import pg from "pg";
import { z } from "zod";

const PORT = Number(process.env.PORT ?? 4100);
const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/threeam_bench_peer";
const JWT_KEY = new TextEncoder().encode(process.env.SUPABASE_JWT_SECRET ?? "");
/** Attempts of one tip's transaction before answering 409; each conflict means another tip won. */
const MAX_ATTEMPTS = Number(process.env.PEER_MAX_ATTEMPTS ?? 10);
const FRAUD_MAX_TX_PER_HOUR = 10;
const FRAUD_MAX_VOLUME_PER_HOUR = 1000;

const pool = new pg.Pool({ connectionString: DATABASE_URL });
pool.on("error", (err) => console.error("idle pg client error", err));

/** Counters the bench reads after each scenario (GET /bench/stats). */
const stats = { tips: 0, conflicts: 0, gaveUp: 0, fraudBlocked: 0 };

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const tipBody = z.object({
  from_user_id: z.uuid(),
  to_creator_username: z.string().min(1).max(30),
  amount: z.union([z.literal(1), z.literal(3)]),
});

interface Authed extends Request {
  userId?: string;
}

async function auth(req: Authed, _res: Response, next: NextFunction): Promise<void> {
  try {
    const m = /^Bearer\s+(\S+)$/i.exec(req.get("authorization") ?? "");
    if (!m) throw new HttpError(401, "unauthorized", "an Authorization: Bearer <token> header is required");
    const { payload } = await jwtVerify(m[1]!, JWT_KEY, {
      algorithms: ["HS256"],
      audience: "authenticated",
    }).catch(() => {
      throw new HttpError(401, "unauthorized", "the access token is invalid or expired");
    });
    if (typeof payload.sub !== "string") throw new HttpError(401, "unauthorized", "not a user token");
    req.userId = payload.sub;
    next();
  } catch (err) {
    next(err);
  }
}

/** Whole cents of a DECIMAL(10, 2) string. */
const cents = (d: string): number => Math.round(Number(d) * 100);
const dollars = (c: number): string => (c / 100).toFixed(2);

async function tip(
  fromId: string,
  creatorUsername: string,
  amountCents: number,
  idempotencyKey: string | undefined,
) {
  const creator = await pool.query<{ id: string; status: string }>(
    "SELECT id, status FROM users WHERE username = $1 AND role = 'creator'",
    [creatorUsername],
  );
  const to = creator.rows[0];
  if (!to) throw new HttpError(404, "not_found", "creator not found");
  if (to.id === fromId) throw new HttpError(422, "fraud_blocked", "self-tip");
  // Fraud rules as the seed lists them: velocity and volume over the sender's last hour.
  const hour = await pool.query<{ n: number; volume: string }>(
    `SELECT count(*)::int AS n, coalesce(sum(amount), 0) AS volume FROM transactions
      WHERE from_user_id = $1 AND created_at > now() - interval '1 hour'`,
    [fromId],
  );
  const { n, volume } = hour.rows[0]!;
  if (n >= FRAUD_MAX_TX_PER_HOUR || cents(volume) + amountCents > FRAUD_MAX_VOLUME_PER_HOUR * 100) {
    await pool.query(
      "INSERT INTO fraud_logs (user_id, rule, severity, amount, action) VALUES ($1, $2, 'high', $3, 'blocked')",
      [fromId, n >= FRAUD_MAX_TX_PER_HOUR ? "velocity" : "volume", dollars(amountCents)],
    );
    stats.fraudBlocked++;
    throw new HttpError(422, "fraud_blocked", "fraud rule: too many tips in the last hour");
  }
  const platformFee = Math.floor((amountCents * 300 + 5000) / 10000);
  const charityFee = Math.floor((amountCents * 100 + 5000) / 10000);
  const net = amountCents - platformFee;
  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    const client = await pool.connect();
    let broken: Error | undefined;
    try {
      await client.query("BEGIN");
      const sender = await client.query<{ balance: string; reserved_balance: string; version: number }>(
        "SELECT balance, reserved_balance, version FROM ledger WHERE user_id = $1",
        [fromId],
      );
      const s = sender.rows[0];
      if (!s) throw new HttpError(404, "not_found", "account not found");
      if (cents(s.balance) - cents(s.reserved_balance) < amountCents) {
        throw new HttpError(422, "insufficient_funds", "not enough credits for this tip");
      }
      const debit = await client.query(
        "UPDATE ledger SET balance = balance - $2, version = version + 1, updated_at = now() WHERE user_id = $1 AND version = $3",
        [fromId, dollars(amountCents), s.version],
      );
      if (debit.rowCount === 0) {
        stats.conflicts++;
        await client.query("ROLLBACK");
        continue;
      }
      const recipient = await client.query<{ version: number }>(
        "SELECT version FROM ledger WHERE user_id = $1",
        [to.id],
      );
      const credit = await client.query(
        "UPDATE ledger SET balance = balance + $2, version = version + 1, updated_at = now() WHERE user_id = $1 AND version = $3",
        [to.id, dollars(net), recipient.rows[0]!.version],
      );
      if (credit.rowCount === 0) {
        stats.conflicts++;
        await client.query("ROLLBACK");
        continue;
      }
      const tx = await client.query<{ id: string; created_at: Date }>(
        `INSERT INTO transactions (from_user_id, to_user_id, amount, platform_fee, charity_fee, net_amount, type, status, metadata)
         VALUES ($1, $2, $3, $4, $5, $6, 'tip', 'completed', $7) RETURNING id, created_at`,
        [
          fromId,
          to.id,
          dollars(amountCents),
          dollars(platformFee),
          dollars(charityFee),
          dollars(net),
          idempotencyKey ? { idempotency_key: idempotencyKey } : {},
        ],
      );
      await client.query("COMMIT");
      stats.tips++;
      const balanceCents = cents(s.balance) - amountCents;
      return {
        transaction: {
          id: tx.rows[0]!.id,
          from_user_id: fromId,
          to_user_id: to.id,
          amount: dollars(amountCents),
          platform_fee: dollars(platformFee),
          charity_fee: dollars(charityFee),
          net_amount: dollars(net),
          type: "tip",
          status: "completed",
          created_at: tx.rows[0]!.created_at.toISOString(),
        },
        balance: {
          user_id: fromId,
          balance: dollars(balanceCents),
          reserved_balance: s.reserved_balance,
          available_balance: dollars(balanceCents - cents(s.reserved_balance)),
          currency: "USD",
        },
      };
    } catch (err) {
      await client.query("ROLLBACK").catch((e: Error) => {
        broken = e;
      });
      throw err;
    } finally {
      client.release(broken);
    }
  }
  stats.gaveUp++;
  throw new HttpError(409, "conflict", `gave up after ${MAX_ATTEMPTS} version conflicts; retry`);
}

/** Tips being handled (their client may be gone): shutdown waits for them before ending the pool. */
let inFlight = 0;

const app = express();
app.disable("x-powered-by");
app.use(express.json({ limit: "16kb" }));

app.get("/healthz", (_req, res) => {
  res.json({ status: "ok" });
});
app.get("/bench/stats", (_req, res) => {
  res.json(stats);
});

app.post("/api/payments/tip", auth, async (req: Authed, res, next) => {
  inFlight++;
  try {
    const parsed = tipBody.safeParse(req.body);
    if (!parsed.success) throw new HttpError(400, "validation_error", parsed.error.message);
    const b = parsed.data;
    if (b.from_user_id.toLowerCase() !== req.userId) {
      throw new HttpError(403, "forbidden", "you may only tip from your own account");
    }
    const key = req.get("idempotency-key");
    const out = await tip(req.userId, b.to_creator_username, b.amount * 100, key);
    if (key) res.set("Idempotency-Key", key);
    res.status(201).json(out);
  } catch (err) {
    next(err);
  } finally {
    inFlight--;
  }
});

app.get("/api/payments/balance/:userId", auth, async (req: Authed, res, next) => {
  try {
    if (req.params.userId !== req.userId) throw new HttpError(403, "forbidden", "not your account");
    const r = await pool.query<{ balance: string; reserved_balance: string; currency: string }>(
      "SELECT balance, reserved_balance, currency FROM ledger WHERE user_id = $1",
      [req.userId],
    );
    const row = r.rows[0];
    if (!row) throw new HttpError(404, "not_found", "account not found");
    res.json({
      user_id: req.userId,
      balance: row.balance,
      reserved_balance: row.reserved_balance,
      available_balance: dollars(cents(row.balance) - cents(row.reserved_balance)),
      currency: row.currency,
    });
  } catch (err) {
    next(err);
  }
});

app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
  if (err instanceof HttpError) {
    res.status(err.status).json({ error: { code: err.code, message: err.message } });
    return;
  }
  console.error("peer-seed: unexpected error", err);
  res.status(500).json({ error: { code: "internal", message: "internal error" } });
});

const server = app.listen(PORT, "127.0.0.1", () => {
  console.log(`peer-seed listening on ${PORT}`);
});
const shutdown = async () => {
  server.close();
  server.closeIdleConnections();
  const deadline = Date.now() + 30_000;
  while (inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  await pool.end();
  process.exit(0);
};
process.on("SIGTERM", () => void shutdown());
process.on("SIGINT", () => void shutdown());
